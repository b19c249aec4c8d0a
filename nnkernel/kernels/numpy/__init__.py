"""NumPy's twin of the reference kernels: the same numbers, fewer temporaries.

NumPy lets us write into existing buffers (``out=``, in-place operators), which
the standard does not. Same file names as ``kernels/reference/`` and
``kernels/cupy/``: a difference between libraries is a diff of two files.
"""

from __future__ import annotations

from ..reference import Kernels
from .attention import NumpyAttentionKernels
from .conv import NumpyConvKernels
from .dense import NumpyDenseKernels
from .embedding import NumpyEmbeddingKernels
from .losses import NumpyLossKernels
from .optim import NumpyOptimKernels, flush_subnormals
from .recurrent import NumpyRecurrentKernels


class NumpyKernels(NumpyDenseKernels, NumpyLossKernels, NumpyOptimKernels, NumpyConvKernels,
                   NumpyAttentionKernels, NumpyEmbeddingKernels,
                   NumpyRecurrentKernels, Kernels):
    in_place = True  # the optimizer updates write into p and the state


__all__ = ["NumpyKernels", "flush_subnormals"]
