"""Command-line entry point for `empo-prior` (filled in by the package's own issue)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("empo-prior: not implemented yet (see the empo-distributed issue)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
