"""Gradient accumulation: one optimizer step from k micro-batches, as from one batch of all.

    value, score = accumulate_step(model, loss, optimizer, [(x1, y1), (x2, y2)], seed=(0, 7))

The loss of a batch of N rows is the mean over its rows, so over micro-batches of
n_i rows (N = Σ n_i)

    L = Σ_i (n_i / N) · L_i        dL/dθ = Σ_i (n_i / N) · dL_i/dθ

Each micro-batch's dL_i/dy is scaled by n_i / N before backprop, and its
gradients, which a backward pass writes over the model's gradient buffer, are
summed into a buffer of their own; the last micro-batch is an ordinary
`train_step` whose ``gradients`` hook adds that sum before the update. So
clipping, weight decay and the schedule see the gradient of the whole batch,
and the memory of activations is one micro-batch's. (For a token loss the mean
is over tokens: the same thing when each row has the same number of targets, as
(B, T) windows do.)
"""

from __future__ import annotations

from .step import train_step

__all__ = ["accumulate_step"]


def accumulate_step(model, loss, optimizer, batches, *, seed=None, score=None):
    """One update from ``batches`` (a list of (x, y) or (x, y, w)); returns (the mean loss
    over all their rows, the summed score or None). ``seed`` (an int or a tuple) reseeds
    Dropout per micro-batch as (*seed, i); a single batch is plain `train_step`."""
    if not batches:
        raise ValueError("accumulate_step needs at least one batch")
    if len(batches) == 1:
        return train_step(model, loss, optimizer, batches[0], seed=seed, score=score)
    rows = [int(b[0].shape[0]) for b in batches]
    total_rows = sum(rows)
    members = model.ensemble is not None
    store = model.store
    summed = value = total_score = None
    for i, batch in enumerate(batches):
        share = rows[i] / total_rows  # n_i / N

        def part(out, y, *, share=share, **options):
            v, dy = loss(out, y, **options)
            return v, dy * share

        micro_seed = None if seed is None else (*_tuple(seed), i)
        if i + 1 < len(batches):
            x, y, w = batch if len(batch) == 3 else (*batch, None)
            if micro_seed is not None and model.stochastic:
                model.reseed(micro_seed)
            out = model.forward(x, train=True)
            v, dy = part(out, y, members=members, weights=w)
            model.backward(dy, input_grad=False)
            g = store.grad
            summed = model.xp.asarray(g, copy=True) if summed is None else summed + g
            s = None if score is None else score(out, y)
        else:
            v, s = train_step(model, part, optimizer, batch, seed=micro_seed, score=score,
                              gradients=lambda m, summed=summed: _add(m.store, summed))
        value = v * share if value is None else value + v * share
        if s is not None:
            total_score = s if total_score is None else total_score + s
    return value, total_score


def _add(store, summed) -> None:
    """store.grad += summed: in place where the buffer can be written, else rebound."""
    if store.mutable:
        g = store.grad
        g += summed
    else:
        store.set_grad(store.grad + summed)


def _tuple(seed) -> tuple:
    return tuple(seed) if isinstance(seed, tuple | list) else (seed,)
