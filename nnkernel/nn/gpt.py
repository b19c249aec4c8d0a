"""`gpt(...)`: the GPT-2 / nanoGPT decoder as a `Sequential` of nnkernel layers.

    model = nk.gpt(vocab_size=50257, max_len=1024, dim=768, heads=12, layers=12)
    logits = model.forward(ids, train=True)              # ids (B, T) -> (B, T, vocab_size)
    loss, dlogits = nk.losses.cross_entropy(logits, targets)

The stack, pre-LayerNorm as GPT-2 (nanoGPT's ``model.py``):

    x = wte[ids] + wpe[:T]                               Embedding, PositionEmbedding (Dropout)
    per block:  x = x + attn(ln_1(x))                    Residual(LayerNorm, MultiHeadAttention,
                x = x + mlp(ln_2(x))                              (Dropout)) and Residual(LayerNorm,
                mlp = Dense(C, 4C) · GELU · Dense(4C, C)          Dense, GELU, Dense, (Dropout))
    logits = ln_f(x) wteᵀ                                LayerNorm, TiedOutput (tie_weights)

Parameters are listed in that forward order. Initialisation as GPT-2: every
weight N(0, 0.02²), the residual projections (attention's Wo, the MLP's second
Dense) N(0, (0.02/√(2·layers))²), biases zero, LayerNorm γ = 1, β = 0. Dropout
(``dropout`` > 0) sits where nanoGPT puts it: after the embeddings, on the
attention probabilities, and at the end of each residual branch.

Without ``tie_weights`` the output is a Dense(C, vocab_size) of its own, with a
bias (initialised zero; nanoGPT's untied head has none).

`decay_keys(model)` names the parameters GPT training decays (the matrices of
the attention and Dense layers; not biases, LayerNorm or embeddings), for an
optimizer's per-parameter weight-decay selection.
"""

from __future__ import annotations

import math

from .attention import MultiHeadAttention
from .combinators import Residual
from .embedding import Embedding, PositionEmbedding, TiedOutput
from .layer import positive_int
from .layers import GELU, Dense, Dropout, LayerNorm
from .sequential import Sequential

STD = 0.02  # GPT-2's initial standard deviation


def gpt_layers(vocab_size: int, max_len: int, dim: int, heads: int, layers: int,
               dropout: float = 0.0, tie_weights: bool = True) -> list:
    """The layers of `gpt`, in forward order."""
    layers = positive_int("gpt layers", layers)
    dim = positive_int("gpt dim", dim)
    proj = f"normal({STD / math.sqrt(2 * layers)!r})"  # residual projections, GPT-2's scaling
    drop = [Dropout(dropout)] if dropout else []
    tok = Embedding(vocab_size, dim, std=STD)
    stack = [tok, PositionEmbedding(max_len, dim, std=STD), *drop]
    for _ in range(layers):
        attn = MultiHeadAttention(dim, heads, causal=True, dropout=dropout, std=STD,
                                  proj_std=STD / math.sqrt(2 * layers))
        stack.append(Residual(LayerNorm(dim), attn, *_fresh(drop)))
        stack.append(Residual(LayerNorm(dim), Dense(dim, 4 * dim, init=f"normal({STD})"), GELU(),
                              Dense(4 * dim, dim, init=proj), *_fresh(drop)))
    stack.append(LayerNorm(dim))
    stack.append(TiedOutput(tok) if tie_weights else Dense(dim, vocab_size,
                                                           init=f"normal({STD})"))
    return stack


def _fresh(drop: list) -> list:
    """A new Dropout per place (the same object twice would read as a shared layer)."""
    return [Dropout(d.p) for d in drop]


def decay_keys(model) -> list[str]:
    """The keys of the weight matrices of attention and Dense layers, in forward order: what
    AdamW decays in GPT training (biases, LayerNorm and embeddings are left alone)."""
    keys = []
    for pos in model.plan.walk():
        if pos.owns and isinstance(pos.layer, MultiHeadAttention):
            keys += [pos.keys["Wqkv"], pos.keys["Wo"]]
        elif pos.owns and isinstance(pos.layer, Dense):
            keys.append(pos.keys["W"])
    return keys


def gpt(vocab_size: int, max_len: int, dim: int, heads: int, layers: int,
        dropout: float = 0.0, tie_weights: bool = True, **sequential_keywords) -> Sequential:
    """A GPT-2-style decoder over token ids (B, T) -> logits (B, T, vocab_size);
    ``sequential_keywords`` go to `Sequential` (seed, dtype, backend, device)."""
    return Sequential(*gpt_layers(vocab_size, max_len, dim, heads, layers, dropout=dropout,
                                  tie_weights=tie_weights), **sequential_keywords)
