"""NumPy twin of the attention kernels: the softmax and its backward in place.

The scores S and dP̃ come fresh from a matrix product, so the twin works inside
them: scale, causal mask, max, exp and normalisation write into S; the backward's
mask, Δ, P and scale into dP̃. The causal mask is one (T, T) array of 0 and −∞ per
(T, dtype), kept and added in place, never one per batch or head.
"""

from __future__ import annotations

import numpy as np


class NumpyAttentionKernels:
    _causal: dict | None = None  # (T, dtype) -> (T, T) additive mask, made on first use

    def attention_softmax(self, s, scale, causal):
        s *= scale
        if causal:
            s += self._causal_mask(s.shape[-1], s.dtype)  # −∞ where column > row
        s -= np.maximum.reduce(s, axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= np.add.reduce(s, axis=-1, keepdims=True)
        return s

    def attention_softmax_backward(self, P, dPd, mask, o, do, scale):
        if mask is not None:
            dPd *= mask                                       # dP = dP̃ ⊙ M
        dPd -= np.add.reduce(do * o, axis=-1, keepdims=True)  # − Δ, Δ = rowsum(dO ⊙ O)
        dPd *= P
        dPd *= scale
        return dPd

    def _causal_mask(self, T, dtype):
        key = (T, np.dtype(dtype))
        if self._causal is None:
            self._causal = {}
        mask = self._causal.get(key)
        if mask is None:
            if len(self._causal) > 32:
                self._causal.clear()
            mask = self._causal[key] = np.triu(np.full((T, T), -np.inf, dtype=dtype), k=1)
        return mask
