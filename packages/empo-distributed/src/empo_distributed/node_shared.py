"""An array held once per node by the MPI ranks that share the node's memory.

Phase 1 gathers the policies where they are written (rank 0). Sent as messages, every
policy row of another rank passes memory three times: written by its rank, copied into
MPI's shared-memory buffer, copied out into rank 0's array (both sides pay). Ranks on
rank 0's node instead write their rows straight into one array that rank 0 reads: a
file in ``/dev/shm`` that the node's first rank creates (sparse: pages become resident
as ranks write them) and every rank of the node maps. Its name is removed as soon as
every rank has mapped it, so nothing is left behind whatever happens later (a crash,
SIGTERM, SIGKILL): the memory lives exactly as long as some process maps it, and each
process drops its mapping with its last reference to the array (rank 0 keeps it while
the caller uses the policies; an MPI shared window would need a collective free instead,
which the ranks cannot time with rank 0's caller).

Simulated nodes (``PARALLEL_CORE_SIMULATE_NODES``, ``--mpi-simulate-nodes``) stand for
separate machines, so there every rank keeps to the message path that real nodes need.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


def node_comm(ctx):
    """The communicator of the ranks that share this rank's memory (its node), or None
    where there is nothing to share: no MPI, one rank on the node, or simulated nodes."""
    from parallel_core.mpi import SIMULATE_ENV

    if not ctx.is_distributed or getattr(ctx, "local_size", 1) <= 1:
        return None
    if os.environ.get(SIMULATE_ENV) == "active":
        return None
    return getattr(ctx, "node_comm", None)


def holds_rank0(ctx) -> bool:
    """Whether rank 0 of ``ctx.comm`` is on this rank's node (the same on every rank of a node)."""
    from mpi4py import MPI

    (r,) = MPI.Group.Translate_ranks(ctx.comm.Get_group(), [0], ctx.node_comm.Get_group())
    return r != MPI.UNDEFINED


class NodeArray:
    """One zero-filled array mapped by every rank of ``comm`` (one node); ``array`` is this
    rank's view. :meth:`create` is collective over ``comm`` and gives None on every rank
    when the file cannot be made or mapped (the caller then keeps its message path)."""

    PREFIX = "empo-node-"

    def __init__(self, comm, array: np.ndarray, path: str):
        from mpi4py import MPI

        self.comm = comm
        self.array = array
        self.path = path  # the file's former name (already removed)
        # A window of no memory whose only use is MPI_Win_sync, MPI's memory barrier for
        # memory that processes share (see sync); one passive epoch for its lifetime.
        self.fence = MPI.Win.Allocate_shared(0, 1, comm=comm)
        self.fence.Lock_all(MPI.MODE_NOCHECK)

    @classmethod
    def create(cls, comm, shape: tuple, dtype) -> NodeArray | None:
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        path = None
        if comm.Get_rank() == 0 and nbytes > 0 and os.path.isdir("/dev/shm"):
            try:
                fd, path = tempfile.mkstemp(prefix=cls.PREFIX, dir="/dev/shm")
                try:
                    os.ftruncate(fd, nbytes)  # sparse: no page is resident until written
                finally:
                    os.close(fd)
            except OSError:
                path = None
        try:
            path = comm.bcast(path, root=0)
            array = None
            if path is not None:
                try:
                    array = np.asarray(np.memmap(path, dtype=dtype, mode="r+", shape=shape))
                except (OSError, ValueError):
                    array = None
            # Every rank has mapped it (or failed to): the name can go.
            ok = comm.allreduce(array is not None, op=_land())
        finally:
            if comm.Get_rank() == 0 and path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        return cls(comm, array, path) if ok else None

    def sync(self) -> None:
        """Wait until every rank of the node has arrived here; then the rows each rank
        wrote before are visible to every rank. Memory model (MPI's for shared memory,
        "unified"): a store of one process is sure to be seen by a load of another only
        with a memory barrier on both sides of a synchronisation, so ``Win_sync`` (a full
        barrier) before, the node's barrier (non-blocking, waited for without burning the
        core), ``Win_sync`` after."""
        from .exchange import wait_all

        self.fence.Sync()
        wait_all([self.comm.Ibarrier()])
        self.fence.Sync()

    def close(self) -> None:
        """Free the barrier's window (collective over the node; after a failure on one rank
        skip it: the others may never get here). The array stays valid (see module)."""
        if self.fence is not None:
            self.fence.Unlock_all()
            self.fence.Free()
            self.fence = None


def _land():
    from mpi4py import MPI

    return MPI.LAND


def policy_array(ctx, shape: tuple, dtype, policy_on: str, workers: int):
    """``(node, direct)`` for Phase 1's policies: ``node`` the :class:`NodeArray` that the
    ranks of the node holding rank 0 write their policy rows into (``policy_on="root"``;
    ``"all"``: only when every rank is on one node, so every rank reads every row), or
    None (no sharing: the message path, on every rank); ``direct``: the ranks whose rows
    need no message (empty when no rank shares). Collective over ``ctx.comm``.

    Local workers write P in place only when they are forked (they inherit the
    mapping); with another start method the ranks keep the message path."""
    from parallel_core.pools import choose_start_method

    if not ctx.is_distributed or policy_on not in ("root", "all"):
        return None, frozenset()
    comm = node_comm(ctx)
    wanted = comm is not None and (
        holds_rank0(ctx) if policy_on == "root" else ctx.node_count == 1
    )
    node = None
    if wanted:
        fits = workers <= 1 or choose_start_method() == "fork"
        if comm.allreduce(fits, op=_land()):  # the node's ranks decide together
            node = NodeArray.create(comm, shape, dtype)
    shares = ctx.comm.allgather(node is not None)
    return node, frozenset(r for r, shared in enumerate(shares) if shared)
