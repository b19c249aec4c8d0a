"""``python -m nnkernel.bench.workers SIDE``: one benchmark worker process."""

import sys

from . import main

sys.exit(main())
