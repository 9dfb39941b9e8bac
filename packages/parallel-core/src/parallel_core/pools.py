"""Process and thread pools that behave: ordered results, safe start methods, no orphans.

``parallel_map`` is the one-call interface; ``make_executor`` returns a
``concurrent.futures.Executor`` for callers that submit work themselves. Both fall
back to running in-process when one worker is asked for, so the serial path and the
parallel path run the very same function.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .budget import available_cores

_THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


class WorkerError(RuntimeError):
    """A task failed in a worker; the message carries the worker's traceback.

    The original exception is kept as ``__cause__`` (and ``original``) so callers can
    still branch on its type.
    """

    def __init__(self, message: str, original: BaseException | None = None):
        super().__init__(message)
        self.original = original


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:  # a torch build without CUDA support
        return False


def choose_start_method() -> str:
    """Pick the cheapest start method that is safe in the current process.

    ``fork`` copies the parent instantly but is unsafe once other threads exist (a lock
    held by another thread stays locked forever in the child) or once CUDA is
    initialised (the CUDA context cannot be forked). Then ``forkserver`` (a clean
    single-threaded parent) or ``spawn`` is used.
    """
    available = mp.get_all_start_methods()
    if sys.platform == "linux" and "fork" in available:
        if threading.active_count() == 1 and not _cuda_initialised():
            return "fork"
    if "forkserver" in available:
        return "forkserver"
    return "spawn"


def limit_worker_threads() -> None:
    """Keep this process at one BLAS/OpenMP/torch thread so N workers use N cores."""
    for name in _THREAD_ENV_VARS:
        os.environ[name] = "1"
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            torch.set_num_threads(1)


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies, so a crash leaves no orphans."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _worker_init(user_initializer: Callable | None, initargs: tuple) -> None:
    # Ctrl-C reaches the whole process group; the parent alone decides what to do with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    limit_worker_threads()
    if user_initializer is not None:
        user_initializer(*initargs)


def _thread_init(torch_threads: int | None, user_initializer: Callable | None, initargs: tuple) -> None:
    # torch's intra-op thread count is per OS thread: a new thread would start with one
    # thread per core and oversubscribe them, so it adopts its creator's setting.
    torch = sys.modules.get("torch")
    if torch is not None and torch_threads is not None:
        torch.set_num_threads(torch_threads)
    if user_initializer is not None:
        user_initializer(*initargs)


def _current_torch_threads() -> int | None:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


class SerialExecutor(cf.Executor):
    """An executor that runs each task at ``submit`` time, in this process."""

    def __init__(self, initializer: Callable | None = None, initargs: tuple = ()):
        self._shutdown = False
        if initializer is not None:
            initializer(*initargs)

    def submit(self, fn, /, *args, **kwargs) -> cf.Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


class ProcessPool(cf.ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` that kills its workers when the ``with`` block fails.

    The standard executor waits for running tasks on exit, so Ctrl-C during a long map
    hangs until every task ends. Here an exception (KeyboardInterrupt included) in the
    block cancels pending work and terminates the workers at once.
    """

    def terminate(self) -> None:
        """Cancel queued tasks and kill every worker process now."""
        processes = list((getattr(self, "_processes", None) or {}).values())
        self.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.terminate()
            return False
        return super().__exit__(exc_type, exc, tb)


def make_executor(
    workers: int,
    *,
    kind: str = "process",
    initializer: Callable | None = None,
    initargs: tuple = (),
    mp_context: Any = None,
) -> cf.Executor:
    """An executor with ``workers`` workers: ``SerialExecutor`` when ``workers <= 1``.

    ``kind="process"`` uses :func:`choose_start_method` (unless ``mp_context`` is given)
    and runs :func:`limit_worker_threads` in each worker before ``initializer``;
    ``kind="thread"`` gives a ``ThreadPoolExecutor`` (for work that releases the GIL,
    such as torch ops) whose threads keep the caller's torch thread count.
    """
    if workers <= 1:
        return SerialExecutor(initializer, initargs)
    if kind == "thread":
        return cf.ThreadPoolExecutor(
            workers,
            initializer=_thread_init,
            initargs=(_current_torch_threads(), initializer, initargs),
        )
    if kind != "process":
        raise ValueError(f"executor kind must be 'process' or 'thread', got {kind!r}")
    if mp_context is None:
        mp_context = mp.get_context(choose_start_method())
    return ProcessPool(
        max_workers=workers,
        mp_context=mp_context,
        initializer=_worker_init,
        initargs=(initializer, initargs),
    )


def _run_chunk(fn: Callable, start: int, chunk: Sequence) -> list:
    results = []
    for offset, item in enumerate(chunk):
        try:
            results.append(fn(item))
        except Exception as exc:
            raise WorkerError(
                f"item {start + offset} failed: {type(exc).__name__}: {exc}\n"
                f"worker traceback:\n{traceback.format_exc()}",
                exc,
            ) from exc
    return results


def _unpicklable_reason(fn: Callable, items: Sequence) -> str | None:
    try:
        pickle.dumps(fn)
    except Exception as exc:
        return f"the function {getattr(fn, '__qualname__', fn)!r} cannot be pickled ({exc})"
    try:
        pickle.dumps(items[0])
    except Exception as exc:
        return f"the items cannot be pickled ({exc})"
    return None


def parallel_map(
    fn: Callable,
    items: Iterable,
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    initializer: Callable | None = None,
    initargs: tuple = (),
) -> list:
    """``[fn(x) for x in items]`` on worker processes, results in input order.

    ``workers=None`` uses every available core. Items are sent in chunks (default: about
    four chunks per worker) so tiny tasks do not pay one round trip each. Runs serially
    when ``workers <= 1``, when there is at most one item, or (with one warning) when
    ``fn`` or the items cannot be pickled. A failing item raises :class:`WorkerError`
    naming the item and carrying the worker's traceback, in every mode.
    """
    items = list(items)
    if workers is None:
        workers = available_cores()
    workers = min(workers, len(items))
    if workers > 1:
        reason = _unpicklable_reason(fn, items)
        if reason is not None:
            warnings.warn(
                f"parallel_map runs serially: {reason}; define the function at module level "
                "to run it in worker processes",
                RuntimeWarning,
                stacklevel=2,
            )
            workers = 1
    if workers <= 1:
        with SerialExecutor(initializer, initargs):
            return _run_chunk(fn, 0, items)

    if chunksize is None:
        chunksize = max(1, len(items) // (workers * 4))
    starts = range(0, len(items), chunksize)
    with make_executor(workers, initializer=initializer, initargs=initargs) as pool:
        futures = [pool.submit(_run_chunk, fn, s, items[s : s + chunksize]) for s in starts]
        results: list = []
        try:
            for future in futures:
                results.extend(future.result())
        except cf.process.BrokenProcessPool as exc:
            raise WorkerError(
                "a worker process died unexpectedly (killed, out of memory, or crashed "
                "in native code); rerun with workers=1 to see the failing item"
            ) from exc
    return results
