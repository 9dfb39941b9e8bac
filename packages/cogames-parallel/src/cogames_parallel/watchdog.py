"""Bounding code that may never return (a hung policy) in the process that runs an episode.

A policy called in-process (serial runs, episode workers without ``--parallel-policy``,
and upstream CoGames' own rollout loop) cannot be pre-empted by a deadline checked after
it returns. ``deadline(seconds, message)`` arms ``ITIMER_REAL``; when it fires, the
SIGALRM handler raises :class:`Hung` in the main thread, which unwinds the stuck call
(pure-Python loops, ``time.sleep``, blocking I/O), so the episode fails with a clear
message and the run goes on. Outside the main thread (or off POSIX) it does nothing.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Hung(Exception):
    """Raised inside code that ran past its :func:`deadline`."""


# Set once a deadline has fired: the stuck call may live on in a thread that cannot be
# stopped (upstream steps several policies on a thread pool); the CLI then ends the
# process with os._exit after writing its output instead of waiting for that thread.
fired = False


def _can_arm() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deadline(seconds: float | None, message: str) -> Iterator[None]:
    """Raise :class:`Hung` (``message``) in this block if it runs longer than ``seconds``."""
    if not seconds or seconds <= 0 or not _can_arm():
        yield
        return

    def _fire(signum, frame):
        global fired
        fired = True
        raise Hung(message)

    previous = signal.signal(signal.SIGALRM, _fire)
    # re-fires every second: also escapes cleanup code that waits for the stuck call
    signal.setitimer(signal.ITIMER_REAL, float(seconds), 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)
