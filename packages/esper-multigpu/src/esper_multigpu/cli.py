"""Command-line entry point for `esper` (filled in by the package's own issue)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("esper: not implemented yet (see the esper-multigpu issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
