"""The public step on a 2-16-2 tanh net at batch 4 against the same step written by hand.

    python bench/tiny_step.py [--chunks 20] [--steps 500] [--optimizer sgd|adam]

Issue 21: ``model.forward``, ``nk.losses.cross_entropy``, ``model.backward`` and
``opt.step`` should cost at most 1.3x a hand-written NumPy step of the same net (the
checks a step needs made once per model or dataset, not per call). Both run in this
process (both are NumPy), in alternating chunks of steps timed with
``time.process_time``; the figures are medians and minima over the chunks. A benchmark,
not a test: the ratio moves with the machine (bench/RESULTS.md has the measured ones).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import nnkernel as nk


def hand_written(X, y, params, lr, adam=False):
    """The step as a careful user writes it with NumPy alone: forward, loss, backward, SGD
    (or Adam), the loss value computed too."""
    W1, b1, W2, b2 = params
    rows, n = np.arange(X.shape[0]), X.shape[0]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]

    def step():
        a1 = X @ W1
        a1 += b1
        np.tanh(a1, out=a1)
        z2 = a1 @ W2
        z2 += b2
        z2 -= z2.max(axis=1, keepdims=True)
        e = np.exp(z2)
        s = e.sum(axis=1, keepdims=True)
        loss = np.log(s).mean() - z2[rows, y].mean()
        e /= s
        e[rows, y] -= 1.0
        e *= 1.0 / n
        grads = [None, None, a1.T @ e, e.sum(axis=0)]
        da1 = e @ W2.T
        da1 *= 1.0 - a1 * a1
        grads[0], grads[1] = X.T @ da1, da1.sum(axis=0)
        if not adam:
            for p, g in zip(params, grads, strict=True):
                p -= lr * g
            return loss
        t[0] += 1
        for p, g, mi, vi in zip(params, grads, m, v, strict=True):
            mi *= 0.9
            mi += 0.1 * g
            vi *= 0.999
            vi += 0.001 * (g * g)
            p -= (lr / (1.0 - 0.9 ** t[0])) * mi / (np.sqrt(vi) / (1.0 - 0.999 ** t[0]) ** 0.5
                                                    + 1e-8)
        return loss

    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 2)).astype(np.float32)
    y = np.array([0, 1, 1, 0])
    model = nk.Sequential(nk.Dense(2, 16), nk.Tanh(), nk.Dense(16, 2), seed=0)
    adam = args.optimizer == "adam"
    lr = 1e-3 if adam else 0.01
    opt = nk.optim.Adam(lr=lr) if adam else nk.optim.SGD(lr=lr)
    params = [np.array(model.params[k]) for k in ("0.W", "0.b", "2.W", "2.b")]
    hand = hand_written(X, y, params, np.float32(lr), adam)

    def public():
        out = model.forward(X, train=True)
        _, dy = nk.losses.cross_entropy(out, y)
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)

    def chunk(step):
        start = time.process_time()
        for _ in range(args.steps):
            step()
        return (time.process_time() - start) / args.steps * 1e6

    for step in (public, hand):
        chunk(step)  # warm up
    ours, theirs = [], []
    for _ in range(args.chunks):
        ours.append(chunk(public))
        theirs.append(chunk(hand))
    mo, mt = statistics.median(ours), statistics.median(theirs)
    print(f"2-16-2 tanh, batch 4, {args.optimizer}: nnkernel {mo:.1f} µs (min {min(ours):.1f}), "
          f"hand-written {mt:.1f} µs (min {min(theirs):.1f}); ratio {mo / mt:.2f} "
          f"(of minima {min(ours) / min(theirs):.2f}); goal <= 1.3")


if __name__ == "__main__":
    main()
