"""Memory guard: stop cleanly, on every rank at once, before the machine starts swapping.

The guard compares this process's resident memory (``/proc/self/statm``) with a limit
after every DAG wave and Phase 1 level, and before large allocations (with the size
about to be allocated). Under MPI the ranks decide together (one tiny ``allreduce`` per
check), so either every rank stops with :class:`MemoryLimitError` or none does.
"""

from __future__ import annotations

import mmap
import os
import sys
import time

import numpy as np


class MemoryLimitError(MemoryError):
    """A rank would exceed its memory limit; the run stopped before swapping."""


def current_rss() -> int:
    """Resident set size of this process in bytes (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_rss() -> int:
    """Peak resident set size of this process in bytes.

    ``VmHWM`` of ``/proc/self/status`` where available: ``getrusage``'s ``ru_maxrss``
    survives ``exec`` and so reports the parent's size for a child started from a big
    process (``subprocess`` uses ``vfork``), e.g. a test runner.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_LIBC = None


def release_free_memory() -> None:
    """Give memory that is free inside the process back to the system (glibc ``malloc_trim``).

    numpy's blocks below glibc's adaptive mmap threshold (up to 32 MB) live in the heap,
    and freed ones stay resident: without this, a million-state run keeps ~170 MB of
    freed DAG temporaries. A no-op where glibc is not the allocator.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            lib = ctypes.CDLL(None)
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def release_pages(array, start: int, stop: int) -> None:
    """Drop the resident pages of ``array[start:stop]`` (a 1-D array this process owns).

    Linux ``madvise(MADV_DONTNEED)`` on the whole pages inside the range: the memory goes
    back to the system at once and reads there would give zeros, so call it only for
    elements that are never read again. A no-op for memory maps, views, and where
    ``madvise`` is unavailable.
    """
    if not isinstance(array, np.ndarray) or isinstance(array, np.memmap) or array.base is not None:
        return
    if not array.flags.c_contiguous or stop <= start or sys.platform != "linux":
        return
    global _MADVISE
    if _MADVISE is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            fn.restype = ctypes.c_int
            _MADVISE = fn
        except (OSError, AttributeError):
            _MADVISE = False
    if not _MADVISE:
        return
    page = mmap.PAGESIZE
    base = array.ctypes.data
    lo = base + start * array.itemsize
    hi = base + min(stop, len(array)) * array.itemsize
    lo = -(-lo // page) * page  # whole pages inside the range only
    hi = hi // page * page
    if hi > lo:
        _MADVISE(lo, hi - lo, 4)  # MADV_DONTNEED


_MADVISE = None


def meminfo() -> dict[str, int]:
    """``MemTotal`` and ``MemAvailable`` in bytes (empty where /proc/meminfo is unavailable)."""
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def default_limit(ranks_on_node: int = 1) -> int | None:
    """90% of the memory available now, shared by the ranks of this node, plus what we hold."""
    avail = meminfo().get("MemAvailable")
    if avail is None:
        return None
    return current_rss() + int(0.9 * avail / max(1, ranks_on_node))


def _fmt(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


class MemoryGuard:
    """``check(where, extra=0)`` raises :class:`MemoryLimitError` on every rank when needed.

    ``limit``: bytes of RSS per rank (None: no RSS limit). ``min_free_fraction``: also stop
    when less than this fraction of the machine's memory is available (EMPO's
    ``min_free_memory_fraction``); ``pause_s``: wait this long and look again first
    (EMPO's ``memory_pause_duration``).
    """

    def __init__(self, limit=None, ctx=None, min_free_fraction=0.0, pause_s=0.0):
        self.limit = limit
        self.ctx = ctx
        self.min_free_fraction = float(min_free_fraction)
        self.pause_s = float(pause_s)
        self.checks = 0

    @property
    def active(self) -> bool:
        return self.limit is not None or self.min_free_fraction > 0

    def _problem(self, where: str, extra: int) -> str | None:
        if self.limit is not None:
            rss = current_rss()
            if rss + extra > self.limit:
                need = f" + {_fmt(extra)} to allocate" if extra else ""
                return (
                    f"stopped {where}: memory {_fmt(rss)}{need} would exceed the limit "
                    f"{_fmt(self.limit)} (--max-memory); use more ranks/nodes, a smaller "
                    "world (--max-steps), --dtype float32, or raise --max-memory"
                )
        if self.min_free_fraction > 0:
            info = meminfo()
            if info and info["MemAvailable"] - extra < self.min_free_fraction * info["MemTotal"]:
                return (
                    f"stopped {where}: less than {self.min_free_fraction:.0%} of the machine's "
                    "memory is free (min_free_memory_fraction)"
                )
        return None

    def local_problem(self, where: str, extra: int = 0) -> str | None:
        """This rank's verdict alone (None: fine); for callers that exchange it with
        other facts (:meth:`raise_first` then decides for every rank)."""
        if not self.active:
            return None
        self.checks += 1
        problem = self._problem(where, extra)
        if problem and self.pause_s > 0:
            time.sleep(self.pause_s)  # EMPO pauses once, hoping other jobs free memory
            problem = self._problem(where, extra)
        return problem

    @staticmethod
    def raise_first(problems) -> None:
        """Raise the first rank's problem, if any (identically on every rank)."""
        found = [p for p in problems if p]
        if found:
            raise MemoryLimitError(found[0])

    def check(self, where: str, extra: int = 0) -> None:
        if not self.active:
            return
        problem = self.local_problem(where, extra)
        ctx = self.ctx
        if ctx is not None and ctx.is_distributed:
            self.raise_first(ctx.allgather(problem))
        self.raise_first([problem])
