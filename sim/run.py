"""`python -m sim.run --scenario NAME [options]`: the command line (see `sim.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
