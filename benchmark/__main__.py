"""``python -m stbench`` and the console script."""

import sys

from stbench.cli.app import main


def entry() -> None:
    """Exit with the CLI's exit code."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
