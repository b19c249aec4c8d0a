"""Optional dependencies (onnx, onnxruntime, safetensors), imported only when a feature needs them.

``import nnkernel`` must keep working with NumPy alone, so the packages behind
the ``nnkernel[onnx]`` and ``nnkernel[safetensors]`` extras are imported inside
the functions that use them, and a missing one is a one-line error that names
the extra to install.
"""

from __future__ import annotations

import importlib

from ..errors import NnkernelError


class MissingDependencyError(NnkernelError, ImportError):
    """A feature needs a package of an optional extra that is not installed."""


def require(module: str, extra: str, feature: str):
    """Import ``module``, or raise MissingDependencyError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{feature} needs the {module.split('.')[0]!r} package, which is not installed "
            f"({e}); install it with: pip install \"nnkernel[{extra}]\"") from e
