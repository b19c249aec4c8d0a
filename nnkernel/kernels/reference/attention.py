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

`self_attention` is the whole of it on a fused projection, nanoGPT's layout:

    qkv (..., T, 3C)        q | k | v as three C-wide column blocks; head h of each is
                            columns h·D … (h+1)·D − 1 (D = C/H)
    o (..., T, C)           the heads' outputs side by side, in order

and `self_attention_backward` gives dqkv in that layout, so a twin can read the
heads out of qkv and write o and dqkv in place of the reference's copies.
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

    # -- on the fused projection: qkv (..., T, 3C) -> o (..., T, C) ---------------------
    def self_attention(self, qkv, heads: int, causal: bool, p: float = 0.0, random=None):
        """(o, saved): the heads of qkv attended, merged to (..., T, C); see `attention`."""
        q, k, v = split_qkv(self.xp, qkv, heads)
        o, saved = self.attention(q, k, v, causal, p, random)
        return merge_heads(self.xp, o), (o, saved)

    def self_attention_backward(self, qkv, heads: int, saved, do):
        """dqkv (..., T, 3C) of `self_attention` for dL/do (..., T, C)."""
        xp = self.xp
        q, k, v = split_qkv(xp, qkv, heads)
        o, inner = saved
        dq, dk, dv = self.attention_backward(q, k, v, o, inner, split_heads(xp, do, heads))
        return join_qkv(xp, dq, dk, dv)


def split_qkv(xp, qkv, heads: int):
    """q, k, v (..., H, T, D) from qkv (..., T, 3C)."""
    *lead, T, C3 = qkv.shape
    n = len(lead)
    parts = xp.reshape(qkv, (*lead, T, 3, heads, C3 // (3 * heads)))
    parts = xp.permute_dims(parts, (n + 1, *range(n), n + 2, n, n + 3))  # (3, ..., H, T, D)
    return parts[0, ...], parts[1, ...], parts[2, ...]


def join_qkv(xp, dq, dk, dv):
    """(..., T, 3C) from three (..., H, T, D): the inverse of `split_qkv`."""
    *lead, H, T, D = dq.shape
    n = len(lead)
    parts = xp.stack([dq, dk, dv], axis=n)                                 # (..., 3, H, T, D)
    parts = xp.permute_dims(parts, (*range(n), n + 2, n, n + 1, n + 3))    # (..., T, 3, H, D)
    return xp.reshape(parts, (*lead, T, 3 * H * D))


def split_heads(xp, a, heads: int):
    """(..., H, T, D) from (..., T, C)."""
    *lead, T, C = a.shape
    n = len(lead)
    a = xp.reshape(a, (*lead, T, heads, C // heads))
    return xp.permute_dims(a, (*range(n), n + 1, n, n + 2))


def merge_heads(xp, o):
    """(..., T, C) from (..., H, T, D): the heads side by side."""
    *lead, H, T, D = o.shape
    n = len(lead)
    o = xp.permute_dims(o, (*range(n), n + 1, n, n + 2))                   # (..., T, H, D)
    return xp.reshape(o, (*lead, T, H * D))
