"""`python -m nnkernel ...`: the same command line as the `nnkernel` script."""

import sys

from .cli import main

sys.exit(main())
