"""`MultiHeadAttention`: self-attention over (..., T, C), in nanoGPT's layout.

    qkv = x Wqkv + bqkv                  Wqkv (C, 3C): q | k | v, three C-wide column blocks
    q_h, k_h, v_h                        head h: columns h·D … (h+1)·D − 1 of each block, D = C/H
    o_h = softmax(q_h k_hᵀ/√D + mask) v_h
    y = [o_1 … o_H] Wo + bo              heads concatenated in order; Wo (C, C)

The parameters are nanoGPT's ``c_attn`` and ``c_proj`` transposed (a torch Linear
stores (out, in)): weights move to and from PyTorch with a transpose and nothing
else. The attention itself and its backward (dV = P̃ᵀdO, dP = dO Vᵀ,
dS = P ⊙ (dP − rowsum(dO ⊙ O)), dQ = dS K/√D, dK = dSᵀQ/√D) are the kernels'
`self_attention` / `self_attention_backward` on qkv and o in this layout: batched
matrix products over (batch, head) (kernels/reference/attention.py).

``causal``: position t attends to positions ≤ t (a GPT). ``dropout``: on the
attention probabilities P in training (the residual-path dropout is a `Dropout`
layer after this one, as `nnkernel.nn.gpt` builds it). Ensembles are refused.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError
from .embedding import no_ensemble, positive_std
from .layer import Layer, positive_int, register_layer


@register_layer
class MultiHeadAttention(Layer):
    """Multi-head self-attention on (..., T, dim); ``heads`` must divide ``dim``.

    Initialised as GPT-2: weights N(0, std²), the output projection N(0, proj_std²)
    (default: std; `nnkernel.nn.gpt` passes 0.02/√(2·layers)), biases zero.
    """

    param_names = ("Wqkv", "bqkv", "Wo", "bo")

    def __init__(self, dim: int, heads: int, causal: bool = False, dropout: float = 0.0,
                 std: float = 0.02, proj_std: float | None = None):
        self.dim = positive_int("MultiHeadAttention dim", dim)
        self.heads = positive_int("MultiHeadAttention heads", heads)
        if self.dim % self.heads:
            raise ConfigError(f"MultiHeadAttention: heads={self.heads} must divide "
                              f"dim={self.dim}")
        if not isinstance(causal, bool):
            raise ConfigError(f"MultiHeadAttention causal must be True or False, got {causal!r}")
        self.causal = causal
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
                0.0 <= dropout < 1.0):
            raise ConfigError(f"MultiHeadAttention dropout must be a number in [0, 1), got "
                              f"{dropout!r}")
        self.dropout = float(dropout)
        self.std = positive_std("MultiHeadAttention std", std)
        self.proj_std = None if proj_std is None else positive_std(
            "MultiHeadAttention proj_std", proj_std)

    @property
    def stochastic(self):
        return self.dropout > 0.0

    def input_shape(self):
        return (None, self.dim)

    def output_shape(self, shape):
        if len(shape) < 2 or (shape[-1] is not None and shape[-1] != self.dim):
            raise ShapeError(f"MultiHeadAttention({self.dim}, {self.heads}) takes (T, {self.dim}) "
                             f"per sample, got {tuple(shape)}")
        return tuple(shape)

    def param_shapes(self):
        C = self.dim
        return {"Wqkv": (C, 3 * C), "bqkv": (3 * C,), "Wo": (C, C), "bo": (C,)}

    def init_params(self, rng, ensemble=None, next_layer=None):
        no_ensemble(self, ensemble)
        C = self.dim
        proj_std = self.std if self.proj_std is None else self.proj_std
        return {"Wqkv": rng.normal(0.0, self.std, size=(C, 3 * C)), "bqkv": np.zeros(3 * C),
                "Wo": rng.normal(0.0, proj_std, size=(C, C)), "bo": np.zeros(C)}

    def forward(self, ctx, x, train):
        k = ctx.k
        if x.ndim < 2 or x.shape[-1] != self.dim:
            raise ShapeError(f"MultiHeadAttention({self.dim}, {self.heads}) takes (..., T, "
                             f"{self.dim}), got shape {tuple(x.shape)}")
        Wqkv, Wo = ctx.params["Wqkv"], ctx.params["Wo"]
        qkv = k.affine(x, Wqkv, ctx.params["bqkv"])   # (..., T, 3C) = x Wqkv + bqkv
        p = self.dropout if train else 0.0
        # o_h = softmax(q_h k_hᵀ/√D + mask) v_h, heads side by side: (..., T, C)
        o, saved = k.self_attention(qkv, self.heads, self.causal, p,
                                    ctx.random if p else None)
        y = k.affine(o, Wo, ctx.params["bo"])         # y = o Wo + bo

        def backprop(dy, need_dx=True):
            do, dWo, dbo = k.affine_backward(o, Wo, dy, True, ctx.grads.out("Wo", "bo"))
            ctx.grads.add("Wo", dWo)                  # dWo = oᵀ dy
            ctx.grads.add("bo", dbo)                  # dbo = Σ_rows dy
            # do = dy Woᵀ; dq, dk, dv per head (see kernels/reference/attention.py)
            dqkv = k.self_attention_backward(qkv, self.heads, saved, do)  # (..., T, 3C)
            dx, dW, db = k.affine_backward(x, Wqkv, dqkv, need_dx,
                                           ctx.grads.out("Wqkv", "bqkv"))
            ctx.grads.add("Wqkv", dW)                 # dWqkv = xᵀ dqkv
            ctx.grads.add("bqkv", db)                 # dbqkv = Σ_rows dqkv
            return dx                                 # dx = dqkv Wqkvᵀ

        return y, backprop

    def config(self):
        return {"type": "MultiHeadAttention", "dim": self.dim, "heads": self.heads,
                "causal": self.causal, "dropout": self.dropout, "std": self.std,
                "proj_std": self.proj_std}

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in (("causal", self.causal),
                                                     ("dropout", self.dropout)) if v)
        return f"MultiHeadAttention({self.dim}, {self.heads}{extra})"
