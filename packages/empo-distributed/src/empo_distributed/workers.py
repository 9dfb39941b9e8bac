"""Local worker pools that never race the parent over SIGTERM/SIGINT.

A worker forked while the CLI's SIGTERM handler is installed inherits that handler; a
``kill`` (or the pool's own ``terminate()``) reaching it before its initializer ran made
it print the CLI's "terminated" line and a traceback ("Exception in initializer"). Here:

* the parent blocks SIGTERM/SIGINT while the workers are forked and until every worker
  has run its initializer (a signal that arrives meanwhile waits, pending, in the parent);
* each worker ignores SIGTERM/SIGINT and asks Linux for SIGKILL when its parent dies, so
  no orphan outlives a crashed parent;
* the parent alone cleans up: on failure it kills the workers (SIGKILL: they ignore
  SIGTERM by design), removes shared files, and reports once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Hold SIGTERM/SIGINT pending in this thread (and in children forked meanwhile)."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    except (AttributeError, ValueError, OSError):  # not POSIX or not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _kill_with_parent() -> None:
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _worker_start(initializer: Callable | None, initargs: tuple, started) -> None:
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(AttributeError, ValueError, OSError):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    _kill_with_parent()  # SIGTERM (parallel_core's default) is ignored here
    try:
        if initializer is not None:
            initializer(*initargs)
    finally:
        started.release()


def _ready() -> bool:
    return True


START_TIMEOUT_S = 120.0


class WorkerPool:
    """``workers`` processes (``parallel_core.pools.make_executor``), started signal-safely.

    ``submit`` as a ``concurrent.futures`` executor; ``close(failed)`` shuts down (kills
    the workers at once when ``failed``).
    """

    def __init__(self, workers: int, initializer: Callable | None = None, initargs: tuple = ()):
        import multiprocessing as mp

        from parallel_core.pools import choose_start_method, make_executor

        if workers < 2:  # make_executor would run the initializer (and SIG_IGN) in-process
            raise ValueError(f"a WorkerPool needs >= 2 workers, got {workers}")
        self.workers = workers
        self.executor = None
        mp_context = mp.get_context(choose_start_method())
        started = mp_context.Semaphore(0)
        try:
            with signals_blocked():
                self.executor = make_executor(
                    workers,
                    initializer=_worker_start,
                    initargs=(initializer, initargs, started),
                    mp_context=mp_context,
                )
                # Start every worker (fork starts all at the first submit, other methods
                # one per submit) and wait until each has run its initializer: only then
                # is a pending signal let through, to the parent alone.
                futures = [self.executor.submit(_ready) for _ in range(workers)]
                for _ in range(workers):
                    if not started.acquire(timeout=START_TIMEOUT_S):
                        raise RuntimeError(f"worker processes did not start in {START_TIMEOUT_S} s")
                for f in futures:
                    f.result()
        except BaseException:  # including a SIGTERM/Ctrl-C delivered as the mask is lifted
            self.close(failed=True)
            raise

    def submit(self, fn, /, *args, **kwargs):
        return self.executor.submit(fn, *args, **kwargs)

    def close(self, failed: bool = False) -> None:
        """Stop the workers: wait for them, or (``failed``) kill them now."""
        ex = self.executor
        if ex is None:
            return
        self.executor = None
        if not failed:
            ex.shutdown(wait=True)
            return
        processes = list((getattr(ex, "_processes", None) or {}).values())
        for p in processes:
            with contextlib.suppress(Exception):
                p.kill()
        for p in processes:
            with contextlib.suppress(Exception):
                p.join(timeout=5)
        # Quick now: the manager thread sees the dead workers and ends.
        ex.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close(failed=exc_type is not None)
        return False
