"""CuPy's twin of the reference kernels: fewer kernel launches, the same numbers.

On a GPU each kernel launch costs ~10-25 µs of CPU time, so a small network is
bound by the number of launches, not by arithmetic. The twin fuses what the
reference spreads over several array operations: bias + activation, g′ and
dropout (`dense.py`), softmax cross-entropy (`losses.py`), each optimizer update
(`optim.py`), im2col/col2im (`conv.py`), attention's softmax and its backward
(`attention.py`), the token gather and scatter-add (`embedding.py`), the recurrent gates
(`recurrent.py`) — the same file names as ``kernels/reference/`` and ``kernels/numpy/``.

TF32 is opt-in through `nnkernel.backend.cupy.set_tf32` (it says what it trades).
These modules import CuPy at their top where it is installed; nnkernel imports
them only when a model uses the "cupy" backend, so NumPy-only installs
never load CuPy. Without CuPy they still import: `cuda_sources()` lists every
kernel of the folder for the CUDA compile test (the contract for a new module is
in `specs.py`).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..reference import Kernels
from .attention import CupyAttentionKernels
from .conv import CupyConvKernels
from .dense import CupyDenseKernels
from .embedding import CupyEmbeddingKernels
from .losses import CupyLossKernels
from .optim import CupyOptimKernels
from .recurrent import CupyRecurrentKernels


class CupyKernels(CupyDenseKernels, CupyLossKernels, CupyOptimKernels, CupyConvKernels,
                  CupyAttentionKernels, CupyEmbeddingKernels,
                  CupyRecurrentKernels, Kernels):
    in_place = True  # the updates write into p and the state and return the same arrays


# -- every CUDA source of the folder, for tests/test_cuda_compile.py -------------------------
NOT_KERNEL_MODULES = frozenset({"specs"})


def kernel_modules() -> list[str]:
    """The modules of this folder that build kernels: all of them but `specs`."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in NOT_KERNEL_MODULES)


def cuda_sources() -> list:
    """The specs (`specs.Elementwise`, `Reduction`, `Raw`) of every module of the folder.

    A module joins by defining ``cuda_sources()`` (specs.py's contract); one without it
    raises here, so a new kernel file cannot slip past the compile test.
    """
    found, seen = [], {}
    for name in kernel_modules():
        module = importlib.import_module(f"{__name__}.{name}")
        listing = getattr(module, "cuda_sources", None)
        if listing is None:
            raise AttributeError(f"nnkernel/kernels/cupy/{name}.py has no cuda_sources(): "
                                 "every kernel module lists its specs (see specs.py)")
        for spec in listing():
            for key in _keys(spec):
                other, where = seen.get(key, (spec, name))
                if other != spec:
                    raise ValueError(f"two different kernels named {key[0]!r} for {key[1]} "
                                     f"(in {where}.py and {name}.py)")
                seen[key] = (spec, name)
            found.append(spec)
    return list(dict.fromkeys(found))  # a spec listed twice is compiled once


def _keys(spec):
    dtypes = (spec.dtype,) if hasattr(spec, "dtype") else spec.dtypes
    return [(spec.name, dtype) for dtype in dtypes]
