"""`python -m egalib`: the command line, which lives with the commands in experiments/cli.py."""

import sys

from .experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
