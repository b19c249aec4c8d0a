"""NumPy twin of the attention kernels: the softmax and its backward in place, and self-attention
on the fused projection without copies of the heads.

`attention_softmax` / `attention_softmax_backward`: S and dP̃ come fresh from a
matrix product, so the twin works inside them: scale, causal mask, max, exp and
normalisation write into S; the backward's mask, Δ, P and scale into dP̃.

`self_attention` reads q, k, v as strided views of qkv (BLAS takes the row stride
3C as is) and writes o, dq, dk, dv straight into the merged (..., T, C) and
(..., T, 3C) layouts (matmul ``out=`` views), where the reference copies them.
It keeps the scores transposed, Sᵀ = k qᵀ (keys by queries), so the softmax's max
and sum over the keys run down the columns (NumPy reduces along a non-last axis
several times faster than along many short rows), and every product reads Pᵀ or
its transpose in place:

    Sᵀ = k qᵀ · s,  Pᵀ = softmax over axis −2 (causal: −∞ where key > query)
    o = (Pᵀ)ᵀ v,    dV = P̃ᵀ dO,   dP̃ᵀ = V dOᵀ,   dSᵀ = Pᵀ ⊙ (dPᵀ − Δᵀ),
    dQ = (dSᵀ)ᵀ K s,   dK = dSᵀ Q s

The numbers are the reference's up to rounding (the same sums, in another order).
A causal mask is one (T, T) array of 0 and −∞ per (T, dtype, layout), kept and
added in place, never one per batch or head.
"""

from __future__ import annotations

import math

import numpy as np


class NumpyAttentionKernels:
    _causal: dict | None = None  # (T, dtype, transposed) -> (T, T) additive mask

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

    # -- on the fused projection, scores kept transposed ----------------------------------
    def self_attention(self, qkv, heads, causal, p=0.0, random=None):
        q, k, v = _heads(qkv, heads, 3)
        T, D = q.shape[-2], q.shape[-1]
        st = np.matmul(k, np.swapaxes(q, -1, -2))            # Sᵀ = k qᵀ  (..., H, Tk, Tq)
        st *= 1.0 / math.sqrt(D)
        if causal:
            st += self._causal_mask(T, st.dtype, transposed=True)  # −∞ where key > query
        st -= np.maximum.reduce(st, axis=-2, keepdims=True)
        np.exp(st, out=st)
        st /= np.matmul(np.ones(T, dtype=st.dtype), st)[..., None, :]  # Pᵀ (1ᵀ e: the sums)
        mask = None
        pd = np.swapaxes(st, -1, -2)                         # P, a view
        if p > 0.0:
            pd, mask = self.dropout(pd, p, random)           # P̃ = P ⊙ M, M drawn as P
        o = np.empty((*qkv.shape[:-1], qkv.shape[-1] // 3), dtype=qkv.dtype)
        np.matmul(pd, v, out=_heads(o, heads, 1)[0])         # o_h = P̃ v, into (..., T, C)
        return o, (st, mask, pd if mask is not None else None, o)

    def self_attention_backward(self, qkv, heads, saved, do):
        st, mask, pd, o = saved
        q, k, v = _heads(qkv, heads, 3)
        scale = 1.0 / math.sqrt(q.shape[-1])
        (doh,) = _heads(do, heads, 1)
        dqkv = np.empty_like(qkv)
        dq, dk, dv = _heads(dqkv, heads, 3)
        pdt = st if mask is None else np.swapaxes(pd, -1, -2)  # P̃ᵀ
        np.matmul(pdt, doh, out=dv)                          # dV = P̃ᵀ dO
        dst = np.matmul(v, np.swapaxes(doh, -1, -2))         # dP̃ᵀ = V dOᵀ  (..., H, Tk, Tq)
        if mask is not None:
            dst *= np.swapaxes(mask, -1, -2)                 # dPᵀ = dP̃ᵀ ⊙ Mᵀ
        # Δ = rowsum(dO ⊙ O) per query, summed within each head of the merged layout
        delta = np.add.reduce((do * o).reshape(*do.shape[:-1], heads, -1), axis=-1)
        dst -= np.moveaxis(delta, -1, -2)[..., None, :]      # − Δᵀ  (..., H, 1, Tq)
        dst *= st
        dst *= scale                                         # dSᵀ · s
        np.matmul(np.swapaxes(dst, -1, -2), k, out=dq)       # dQ = dS K s
        np.matmul(dst, q, out=dk)                            # dK = dSᵀ Q s
        return dqkv

    def _causal_mask(self, T, dtype, transposed=False):
        key = (T, np.dtype(dtype), transposed)
        if self._causal is None:
            self._causal = {}
        mask = self._causal.get(key)
        if mask is None:
            if len(self._causal) > 32:
                self._causal.clear()
            full = np.full((T, T), -np.inf, dtype=dtype)
            mask = self._causal[key] = np.tril(full, k=-1) if transposed else np.triu(full, k=1)
        return mask


def _heads(a, heads, parts):
    """``parts`` views (..., H, T, D) of a (..., T, parts·H·D) array: its column blocks, head
    h of each being columns h·D … (h+1)·D − 1 (nanoGPT's layout)."""
    *lead, T, width = a.shape
    n = len(lead)
    split = a.reshape(*lead, T, parts, heads, width // (parts * heads))
    split = split.transpose(n + 1, *range(n), n + 2, n, n + 3)  # (parts, ..., H, T, D)
    return tuple(split[i] for i in range(parts))
