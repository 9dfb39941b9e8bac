"""Small process helpers shared by the episode and agent worker pools.

Both pools are hand-rolled on ``multiprocessing`` pipes rather than a
``ProcessPoolExecutor`` because they need two things an executor hides: which task
a dead worker was running (so exactly that episode is reported failed), and a
persistent per-worker state (agent workers keep their built policies between steps).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys

from parallel_core.pools import choose_start_method, limit_worker_threads


def mp_context():
    return mp.get_context(choose_start_method())


def worker_setup() -> None:
    """First thing in every worker: no Ctrl-C handling, die with the parent, one BLAS thread.

    SIGINT reaches the whole foreground process group; only the main process reacts,
    tearing the pools down in order. PR_SET_PDEATHSIG makes the kernel SIGTERM this
    worker if its parent dies without cleaning up, so no orphan survives a crash.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked child inherits its parent's handlers; a worker just dies on SIGTERM
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    limit_worker_threads()
    _reseed_global_rngs()


def _reseed_global_rngs() -> None:
    """A forked worker inherits its parent's global RNG states, so every worker would draw
    the same "random" numbers. Policies that draw from the global generators without a
    seed (upstream's ``random`` uses the ``random`` module, its neural policies sample with
    torch's) are not reproducible anyway; reseeding from the OS keeps their episodes
    independent. Seeded policies (all of ours) are unaffected."""
    import random

    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.seed()
        except Exception:  # noqa: BLE001 - CUDA or an odd build: leave it
            pass


def stop_process(proc, conn=None, grace: float = 1.0) -> None:
    """Ask politely (``None`` on the pipe), then SIGTERM, then SIGKILL."""
    if proc is None:
        return
    if conn is not None:
        try:
            conn.send(None)
        except (OSError, ValueError, BrokenPipeError):
            pass
    proc.join(grace)
    if proc.is_alive():
        proc.terminate()
        proc.join(grace)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass


def exit_description(proc) -> str:
    code = proc.exitcode
    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
