"""Command-line entry point for `agent-train` (filled in by the package's own issue)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("agent-train: not implemented yet (see the agent-async-train issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
