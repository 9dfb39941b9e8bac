"""One command-line convention for every parallel-rl CLI.

- Usage errors (a wrong flag or value, a missing file named on the command line): one line
  ``prog: error: what is wrong (what to do)`` on stderr, exit code 2. Raise
  :class:`UsageError` anywhere, or let :class:`ArgumentParser` reject the arguments.
- Runtime failures the user can act on (:class:`CliError`): one line, exit code 1.
- Ctrl-C: one line, exit 130; SIGTERM (what SLURM sends) is turned into the same clean
  unwinding, exit 143, so ``finally`` blocks stop workers and keep finished files.
- ``--quiet`` (:func:`add_quiet_flag`) silences progress on stderr; data goes to stdout as
  JSON (:func:`emit_json`) or to files written atomically (:func:`parallel_core.io.atomic_write`).
- ``PARALLEL_RL_SMOKE=1`` (:func:`smoke_mode`): every CLI shrinks its job to a few seconds.
  The documentation test runs every documented command that way, so documented commands
  cannot rot without CI noticing.

Nothing here imports torch or mpi4py: argument errors must answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

SMOKE_ENV = "PARALLEL_RL_SMOKE"
EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


class CliError(Exception):
    """A failure the user can act on (not a bug): reported as one line, exit code 1."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the shared error line: ``prog: error: message (see prog --help)``."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: no progress bars or status lines on stderr (data is unaffected)."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or status lines on stderr"
    )


def smoke_mode() -> bool:
    """True when ``PARALLEL_RL_SMOKE=1``: CLIs shrink their job to a few seconds."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


def error_line(prog: str, message: object) -> None:
    """Print ``prog: error: message`` as one line on stderr (newlines folded)."""
    text = " ".join(str(message).split()) or type(message).__name__
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)


def emit_json(data: Any, stream=None) -> None:
    """Write ``data`` as indented JSON to stdout (or ``stream``), ending with a newline."""
    stream = stream or sys.stdout
    json.dump(data, stream, indent=2, sort_keys=False, default=_json_default)
    stream.write("\n")
    stream.flush()


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays without importing numpy here
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _raise_terminated(signum: int, _frame) -> None:
    raise Terminated(signum)


def run_cli(prog: str, body: Callable[[], int | None], *, interrupted: str = "interrupted") -> int:
    """Run a CLI's ``body`` under the shared convention and return its exit code.

    ``interrupted`` completes the line printed on Ctrl-C/SIGTERM (e.g. "interrupted;
    finished files are intact").
    """
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (tests calling main() from a thread)
        pass
    try:
        code = body()
        return 0 if code is None else int(code)
    except UsageError as exc:
        error_line(prog, exc)
        return EXIT_USAGE
    except CliError as exc:
        error_line(prog, exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Terminated as exc:
        # "interrupted; finished files are intact" -> "terminated; finished files are intact"
        _, _, detail = interrupted.partition("; ")
        print(f"{prog}: terminated" + (f"; {detail}" if detail else ""), file=sys.stderr, flush=True)
        return 128 + exc.signum
    except BrokenPipeError:  # `prog | head`: the reader left; not an error
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

