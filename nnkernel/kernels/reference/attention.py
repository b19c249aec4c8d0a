"""Scaled dot-product attention, the reference: two batched matrix products around a softmax.

Per (batch, head), with q, k, v of shape (T, D) and s = 1/√D:

    S = q kᵀ · s                     (T, T) scores
    P = softmax(S + mask)            causal: −∞ where column > row (a key after the query)
    P̃ = P ⊙ M                        M: inverted-dropout mask (training only), else P̃ = P
    o = P̃ v                          (T, D)

Backward (dO given):

    dV = P̃ᵀ dO
    dP̃ = dO Vᵀ,   dP = dP̃ ⊙ M
    dS = P ⊙ (dP − Δ),   Δ = rowsum(dO ⊙ O)   (= rowsum(P ⊙ dP): O's rows are P̃ V)
    dQ = dS K · s,   dK = dSᵀ Q · s

All of it is `xp.matmul` over leading (batch, head) axes: strided-batched GEMMs on a
GPU, O(T²·D) per head (a loop over (i, j, d) as in llm.c's CPU backward is O(T³)).
The causal mask is a (T, T) comparison of two aranges broadcast over (batch, head):
no mask array per batch. A twin replaces the softmax and its backward
(`attention_softmax`, `attention_softmax_backward`) with fused forms.
"""

from __future__ import annotations

import math

import array_api_compat


class AttentionKernels:
    """Mixed into `Kernels` (which provides ``self.xp`` and ``dropout``)."""

    def attention(self, q, k, v, causal: bool, p: float = 0.0, random=None):
        """(o, saved): o = softmax(q kᵀ/√D + mask) v over (..., T, D) inputs; ``saved`` is what
        `attention_backward` needs. ``p`` > 0: dropout on P with masks from ``random``."""
        xp = self.xp
        scale = 1.0 / math.sqrt(q.shape[-1])
        P = self.attention_softmax(xp.matmul(q, xp.matrix_transpose(k)), scale, causal)
        mask = None
        if p > 0.0:
            Pd, mask = self.dropout(P, p, random)   # P̃ = P ⊙ M
        else:
            Pd = P
        return xp.matmul(Pd, v), (P, mask)

    def attention_backward(self, q, k, v, o, saved, do):
        """(dq, dk, dv) of `attention` for dL/do."""
        xp = self.xp
        P, mask = saved
        scale = 1.0 / math.sqrt(q.shape[-1])
        Pd = P if mask is None else P * mask
        dv = xp.matmul(xp.matrix_transpose(Pd), do)             # dV = P̃ᵀ dO
        dPd = xp.matmul(do, xp.matrix_transpose(v))             # dP̃ = dO Vᵀ
        ds = self.attention_softmax_backward(P, dPd, mask, o, do, scale)  # dS · s
        dq = xp.matmul(ds, k)                                   # dQ = dS K s
        dk = xp.matmul(xp.matrix_transpose(ds), q)              # dK = dSᵀ Q s
        return dq, dk, dv

    def attention_softmax(self, s, scale: float, causal: bool):
        """P = softmax(s · scale + mask) over the last axis, stable (row maximum subtracted).
        ``s`` is a fresh product that a twin may overwrite (it works in place)."""
        xp = self.xp
        s = s * scale
        if causal:
            T = s.shape[-1]
            idx = xp.arange(T, device=array_api_compat.device(s))
            future = xp.expand_dims(idx, axis=0) > xp.expand_dims(idx, axis=1)  # (T, T)
            s = xp.where(future, -math.inf, s)
        e = xp.exp(s - xp.max(s, axis=-1, keepdims=True))  # the diagonal keeps each max finite
        return e / xp.sum(e, axis=-1, keepdims=True)

    def attention_softmax_backward(self, P, dPd, mask, o, do, scale: float):
        """dS · scale with dS = P ⊙ (dP̃ ⊙ M − Δ), Δ = rowsum(dO ⊙ O); a twin may overwrite
        the fresh ``dPd``."""
        xp = self.xp
        dP = dPd if mask is None else dPd * mask
        delta = xp.sum(do * o, axis=-1, keepdims=True)
        return P * (dP - delta) * scale
