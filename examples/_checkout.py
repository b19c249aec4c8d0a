"""Let the examples run from a source checkout without installing nnkernel.

``python examples/xor.py`` puts examples/ (not the repository root) on sys.path,
so an uninstalled nnkernel would not be found. Importing this module first adds
the root when nnkernel is not importable already; an installed nnkernel wins.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("nnkernel") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
