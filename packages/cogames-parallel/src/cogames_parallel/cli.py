"""Command-line entry point for `cogames` (filled in by the package's own issue)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("cogames: not implemented yet (see the cogames-parallel issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
