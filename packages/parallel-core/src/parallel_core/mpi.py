"""The distributed context: MPI ranks when launched under MPI, a local stand-in otherwise.

``get_context()`` is the single entry point. Under ``mpiexec``/``srun`` with more than
one rank it wraps ``mpi4py``; otherwise it returns :class:`LocalContext`, which has the
same interface and never imports or calls MPI, so serial users pay nothing.

Simulation mode (:func:`relaunch_simulated`) runs the *real* MPI code path on one
machine by re-executing the program under ``mpiexec -n K`` with the cores split
between the K ranks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .budget import MAX_WORKERS_ENV, available_cores
from .sitempi import SiteMPIError, bundled_bindir, check_world_size, configure_mpi4py

#: Set in the ranks of a simulated multi-node run; also read by the package CLIs as a default.
SIMULATE_ENV = "PARALLEL_CORE_SIMULATE_NODES"
#: "0" forces the local context even under a launcher; "1" forces an mpi4py import.
MPI_ENV = "PARALLEL_CORE_MPI"

# Variables that MPI launchers (MPICH/Hydra, Open MPI, PMIx, Slurm's PMI) set in every rank.
_LAUNCHER_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def partition(n: int, parts: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into ``parts`` contiguous ``[start, stop)`` blocks whose sizes differ by at most one."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def launched_under_mpi() -> bool:
    """True when an MPI launcher started this process (without importing MPI)."""
    forced = os.environ.get(MPI_ENV)
    if forced is not None:
        return forced == "1"
    return any(name in os.environ for name in _LAUNCHER_ENV)


# Under a launcher, choose the MPI library as soon as parallel_core is imported, so that code
# importing mpi4py itself afterwards gets the library that matches the launcher too.
if launched_under_mpi():
    try:
        configure_mpi4py()
    except SiteMPIError:
        pass  # get_context() raises it again, where a CLI reports it as one line


class LocalContext:
    """One process, no MPI: every collective is the identity. Same interface as :class:`MPIContext`."""

    rank = 0
    size = 1
    is_root = True
    is_distributed = False
    local_rank = 0
    local_size = 1
    node_count = 1

    def __init__(self) -> None:
        self.local_workers = available_cores()

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather(self, obj: Any) -> list:
        return [obj]

    def gather(self, obj: Any, root: int = 0) -> list | None:
        return [obj]

    def barrier(self) -> None:
        pass

    def work_range(self, n: int) -> tuple[int, int]:
        return partition(n, self.size)[self.rank]

    def scatter_work(self, items: Sequence) -> list:
        start, stop = self.work_range(len(items))
        return list(items[start:stop])

    def allgatherv(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def allreduce_sum(self, value):
        return value

    def abort(self, code: int = 1) -> None:
        sys.exit(code)

    @contextmanager
    def abort_on_error(self, code: int = 1) -> Iterator[None]:
        """On one rank an uncaught error must stop every rank; locally it just propagates."""
        yield

    def __repr__(self) -> str:
        return f"LocalContext(local_workers={self.local_workers})"


class MPIContext(LocalContext):
    """A communicator (default ``COMM_WORLD``) with node-aware worker counts and buffer collectives."""

    is_distributed = True

    def __init__(self, comm) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        # Ranks sharing memory share a node: count them instead of assuming one rank per node.
        self.node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = self.node_comm.Get_rank()
        self.local_size = self.node_comm.Get_size()
        self.node_count = comm.allreduce(1 if self.local_rank == 0 else 0, op=MPI.SUM)
        self.local_workers = self._node_cores() // self.local_size or 1
        if os.environ.get(MAX_WORKERS_ENV):
            self.local_workers = min(self.local_workers, available_cores())
        # Every WorkerBudget made on this rank now sees the rank's share of the node.
        os.environ[MAX_WORKERS_ENV] = str(self.local_workers)

    def _node_cores(self) -> int:
        # Launchers may bind each rank to a core; the node's cores are the union of the masks.
        try:
            mine = set(os.sched_getaffinity(0))
        except AttributeError:
            return os.cpu_count() or 1
        union = set().union(*self.node_comm.allgather(mine))
        return len(union)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj: Any) -> list:
        return self.comm.allgather(obj)

    def gather(self, obj: Any, root: int = 0) -> list | None:
        return self.comm.gather(obj, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()

    def allgatherv(self, array: np.ndarray) -> np.ndarray:
        """Concatenate every rank's rows (axis 0), in rank order, with one ``Allgatherv``.

        The payload travels as raw bytes of a contiguous buffer (no pickling); ranks must
        agree on dtype and trailing shape, and any rank may contribute zero rows.
        """
        MPI = self._MPI
        local = np.ascontiguousarray(array)
        layouts = self.comm.allgather((local.shape[0], local.shape[1:], local.dtype.str))
        rows = [n for n, _, _ in layouts]
        if len({(shape, dtype) for _, shape, dtype in layouts}) != 1:
            raise ValueError(f"allgatherv: ranks disagree on trailing shape/dtype: {layouts}")
        row_bytes = local.dtype.itemsize * int(np.prod(local.shape[1:], dtype=np.int64))
        counts = np.array(rows, dtype=np.int64) * row_bytes
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        out = np.empty((sum(rows), *local.shape[1:]), dtype=local.dtype)
        send = local.reshape(-1).view(np.uint8)
        recv = out.reshape(-1).view(np.uint8)
        self.comm.Allgatherv([send, MPI.BYTE], [recv, (counts, displs), MPI.BYTE])
        return out

    def allreduce_sum(self, value):
        MPI = self._MPI
        if isinstance(value, np.ndarray):
            send = np.ascontiguousarray(value)
            out = np.empty_like(send)
            self.comm.Allreduce(send, out, op=MPI.SUM)
            return out
        return self.comm.allreduce(value, op=MPI.SUM)

    def abort(self, code: int = 1) -> None:
        sys.stderr.flush()
        self.comm.Abort(code)

    @contextmanager
    def abort_on_error(self, code: int = 1) -> Iterator[None]:
        """Turn an uncaught error on this rank into ``MPI_Abort`` so no other rank hangs."""
        try:
            yield
        except SystemExit as exc:
            if exc.code not in (0, None):
                sys.stderr.flush()
                self.comm.Abort(exc.code if isinstance(exc.code, int) else code)
            raise
        except BaseException as exc:
            print(f"rank {self.rank}: {type(exc).__name__}: {exc}", file=sys.stderr)
            if not isinstance(exc, KeyboardInterrupt):
                traceback.print_exc(file=sys.stderr)
            self.abort(code)

    def __repr__(self) -> str:
        return (
            f"MPIContext(rank={self.rank}, size={self.size}, local_rank={self.local_rank}, "
            f"local_size={self.local_size}, local_workers={self.local_workers})"
        )


#: The interface every context offers (LocalContext defines it; MPIContext implements it over MPI).
DistributedContext = LocalContext

_CONTEXT: LocalContext | None = None


def get_context(comm=None) -> LocalContext:
    """The process's distributed context: :class:`MPIContext` with >1 rank, else :class:`LocalContext`.

    Without an MPI launcher in the environment mpi4py is not even imported. Under one, the
    MPI library that matches the launcher is chosen first (:mod:`parallel_core.sitempi`:
    the site's Open MPI under its ``mpirun`` or ``srun --mpi=pmix``, the bundled MPICH
    under Hydra), and a library that sees fewer ranks than were launched is an error
    (:class:`~parallel_core.sitempi.SiteMPIError`, one line) instead of N silent copies of
    a serial run. The default context is created once and cached; pass ``comm`` for a
    sub-communicator.
    """
    global _CONTEXT
    if comm is not None:
        return MPIContext(comm) if comm.Get_size() > 1 else LocalContext()
    if _CONTEXT is None:
        _CONTEXT = LocalContext()
        if launched_under_mpi():
            configure_mpi4py()
            try:
                from mpi4py import MPI
            except ImportError:
                MPI = None
            if MPI is not None:
                check_world_size(MPI.COMM_WORLD.Get_size())
                if MPI.COMM_WORLD.Get_size() > 1:
                    _CONTEXT = MPIContext(MPI.COMM_WORLD)
    return _CONTEXT


def find_mpiexec() -> str:
    """``mpiexec`` of the mpich wheel (beside python, or in the base env of a uv overlay), else from PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    bindir = bundled_bindir()
    if bindir is not None:
        return str(bindir / "mpiexec")
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if found is None:
        raise FileNotFoundError(
            "mpiexec not found: install the 'mpich' wheel (uv sync does) or load your site MPI module"
        )
    return found


def relaunch_simulated(nodes: int | None, argv: list[str] | None = None) -> int | None:
    """Re-run this program as ``nodes`` MPI ranks on this machine; return their exit code.

    Returns ``None`` (the caller just carries on) when ``nodes <= 1`` or when this process
    already is an MPI rank (a real job, or the relaunched simulation itself). The cores of
    this process are split evenly between the ranks through ``PARALLEL_CORE_MAX_WORKERS``.
    ``argv`` defaults to the interpreter's original command line, so ``python -m pkg``
    and console scripts are both re-run as they were typed.
    """
    if not nodes or nodes <= 1 or launched_under_mpi() or os.environ.get(SIMULATE_ENV) == "active":
        return None
    if argv is None:
        argv = list(sys.orig_argv[1:])
    env = dict(os.environ)
    env[SIMULATE_ENV] = "active"
    env[MAX_WORKERS_ENV] = str(max(1, available_cores() // nodes))
    command = [find_mpiexec(), "-n", str(nodes), sys.executable, *argv]
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


def simulate_nodes_from_env() -> int:
    """Node count a user asked for through ``PARALLEL_CORE_SIMULATE_NODES`` (0 when unset)."""
    value = os.environ.get(SIMULATE_ENV, "")
    return int(value) if value.isdigit() else 0
