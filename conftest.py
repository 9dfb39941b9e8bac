"""Repository-wide pytest set-up: loaded for every package's tests and for tests/."""

import signal


def pytest_configure(config):
    # A shell without job control starts background commands with SIGINT ignored, and
    # every child inherits that: a test's Ctrl-C to a CLI would then be ignored and the
    # CLI would run to the end. Python's own handler here makes children start with the
    # default disposition, as under a terminal or CI.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
