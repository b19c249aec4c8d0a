"""The reference kernels: the mathematics in the Array API standard only, for every library.

`Kernels` joins one mixin per file (dense, losses, optim, conv, attention,
embedding); a library's twin (``kernels/numpy/``, ``kernels/cupy/``) has files of
the same names and overrides what it speeds up, computing the same numbers.
"""

from __future__ import annotations

from .attention import AttentionKernels
from .conv import ConvKernels
from .dense import DenseKernels, fill
from .embedding import EmbeddingKernels
from .losses import LossKernels
from .optim import SUBNORMAL_FLUSH_EVERY, OptimKernels
from .recurrent import RecurrentKernels


class Kernels(DenseKernels, LossKernels, OptimKernels, ConvKernels, AttentionKernels,
              EmbeddingKernels, RecurrentKernels):
    """Reference kernels; library twins subclass this and override what they speed up."""

    in_place = False  # updates return new arrays; True: they write into p and the state
    fused_activations: frozenset = frozenset()  # names `affine_act` fuses (a twin's business)

    def __init__(self, xp):
        self.xp = xp


__all__ = ["SUBNORMAL_FLUSH_EVERY", "AttentionKernels", "ConvKernels", "DenseKernels",
           "EmbeddingKernels", "Kernels", "LossKernels", "OptimKernels", "RecurrentKernels", "fill"]
