"""python -m protocol.conformance [--check]: regenerate (or check) protocol/vectors/*.json."""

import sys

from .build import main

sys.exit(main())
