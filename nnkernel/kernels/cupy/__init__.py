"""CuPy's twin of the reference kernels: fewer kernel launches, the same numbers.

On a GPU each kernel launch costs ~10-25 µs of CPU time, so a small network is
bound by the number of launches, not by arithmetic. The twin fuses what the
reference spreads over several array operations: bias + activation, g′ and
dropout (`dense.py`), softmax cross-entropy (`losses.py`), each optimizer update
(`optim.py`), im2col/col2im (`conv.py`) — the same file names as
``kernels/reference/`` and ``kernels/numpy/``.

TF32 is opt-in through `enable_tf32` (`nnkernel.backend.cupy.set_tf32` says what it
trades). These modules import CuPy at their top; nnkernel imports them only when a
model uses the "cupy" backend, so NumPy-only installs never load CuPy.
"""

from __future__ import annotations

from ..reference import Kernels
from .conv import CupyConvKernels
from .dense import CupyDenseKernels
from .losses import CupyLossKernels
from .optim import CupyOptimKernels
from .recurrent import CupyRecurrentKernels


class CupyKernels(CupyDenseKernels, CupyLossKernels, CupyOptimKernels, CupyConvKernels,
                  CupyRecurrentKernels, Kernels):
    in_place = True  # the updates write into p and the state and return the same arrays


# -- TF32 (the switch lives with the backend; these names stay for scripts that use them) --
def enable_tf32(enabled: bool = True) -> bool:
    """Let float32 2-D matrix products use TF32; see `nnkernel.backend.cupy.set_tf32`."""
    from ...backend.cupy import set_tf32

    return set_tf32(enabled)


def tf32_enabled() -> bool:
    from ...backend.cupy import tf32_enabled as enabled

    return enabled()
