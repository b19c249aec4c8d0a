"""`generate`: continue token ids with a language model, one sampled token at a time.

    ids = nk.generate(model, prompt_ids, tokens=500, temperature=0.8, top_k=40, seed=1)

Each new token is drawn from softmax(logits / T) over the last position's logits,
restricted to the ``top_k`` largest (nanoGPT's `generate`); temperature 0 takes
the arg-max (greedy). The model sees at most its context: a model with a
`PositionEmbedding` of max_len L gets the last L tokens (the prompt cropped as it
grows), while a recurrent model (its layers take ``initial_state``) reads the
prompt once and then one token per step, carrying its state (`RecurrentState`):
O(1) work per token instead of re-reading a growing context.

The model runs on its own backend and device; the draw is made on the host from
the last position's (B, V) logits, with NumPy's generator seeded by ``seed``, so
a seed gives the same tokens on every run (and on every backend, wherever their
logits round alike).
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError, NonFiniteError, ShapeError

__all__ = ["context_length", "generate", "sample_next"]


def generate(model, ids, tokens: int, temperature: float = 1.0, top_k: int | None = None,
             seed=None):
    """``ids`` ((T,) or (B, T) integers, T ≥ 1: any array or a list) followed by ``tokens``
    new ones: a host int64 array of the same rank, (T + tokens,) or (B, T + tokens)."""
    tokens = _count("tokens", tokens, 0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not (
            math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature!r}")
    top_k = None if top_k is None else _count("top_k", top_k, 1)
    rng = np.random.default_rng(seed)
    prompt, one = _host_ids(ids)
    out = np.empty((prompt.shape[0], prompt.shape[1] + tokens), dtype=np.int64)
    out[:, :prompt.shape[1]] = prompt
    be, n = model.backend, prompt.shape[1]
    if tokens == 0:
        return out[0] if one else out
    if "initial_state" in model.side_inputs:  # recurrent: carry the state, one token a step
        from .recurrent import RecurrentState

        state = RecurrentState()
        logits = model(be.asarray(prompt), initial_state=state)
        for i in range(tokens):
            out[:, n + i] = sample_next(_last(logits), temperature, top_k, rng)
            if i + 1 < tokens:
                state = state.next()
                logits = model(be.asarray(out[:, n + i:n + i + 1]), initial_state=state)
    else:
        context = context_length(model)
        for i in range(tokens):
            start = 0 if context is None else max(n + i - context, 0)
            logits = model(be.asarray(out[:, start:n + i]))
            out[:, n + i] = sample_next(_last(logits), temperature, top_k, rng)
    return out[0] if one else out


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None, rng=None):
    """One id per row of host logits (B, V): arg-max at temperature 0, else a draw from
    p = softmax(z), z = logits / T, with z = −∞ outside the top_k largest."""
    z = np.asarray(logits, dtype=np.float64)
    if not np.isfinite(z).all():
        raise NonFiniteError("the model's logits hold NaN or Inf; it cannot be sampled from")
    if temperature == 0:
        return np.argmax(z, axis=-1)
    z = z / temperature
    V = z.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(z, V - top_k, axis=-1)[:, V - top_k:V - top_k + 1]  # k-th largest
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=-1, keepdims=True))        # softmax, stably
    cdf = np.cumsum(p, axis=-1)
    u = (rng or np.random.default_rng()).random(z.shape[0])[:, None] * cdf[:, -1:]
    return np.minimum(np.sum(cdf <= u, axis=-1), V - 1)  # the first id whose cdf passes u


def context_length(model) -> int | None:
    """The most tokens the model can read at once (its PositionEmbedding's max_len), or
    None when it has no such limit."""
    lengths = [pos.layer.max_len for pos in model.plan.walk()
               if isinstance(getattr(pos.layer, "max_len", None), int)]
    return min(lengths) if lengths else None


def _last(logits) -> np.ndarray:
    """The last position's logits (B, V) on the host."""
    if logits.ndim != 3:
        raise ShapeError(f"generate needs a model whose outputs are (batch, T, vocabulary) "
                         f"logits, got shape {tuple(logits.shape)}")
    return np.asarray(to_numpy(logits[:, -1, :]), dtype=np.float64)


def _host_ids(ids) -> tuple[np.ndarray, bool]:
    """(ids as host int64 (B, T), whether they were one sequence (T,))."""
    host = np.asarray(to_numpy(ids) if hasattr(ids, "shape") and not isinstance(
        ids, np.ndarray) else ids)
    one = host.ndim == 1
    if one:
        host = host[None, :]
    if host.ndim != 2 or host.shape[1] == 0 or host.shape[0] == 0:
        raise ShapeError(f"generate needs a prompt of at least one token, (T,) or (B, T) ids; "
                         f"got shape {host.shape}")
    if host.dtype.kind not in "iu":
        raise ConfigError(f"generate takes integer token ids, got dtype {host.dtype}")
    return host.astype(np.int64), one


def _count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
