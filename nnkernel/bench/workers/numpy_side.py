"""The hand-written NumPy step: what a careful user writes without a library (the floor)."""

from __future__ import annotations

import numpy as np

from .common import Step, cycle, inputs, step


class HandMLP:
    """forward, loss, backward and SGD/Adam written out with plain NumPy calls (CuPy on a GPU).

    The phases are methods so that bench/profile_step.py can time them one by one
    against nnkernel's; `step` is the whole thing.
    """

    def __init__(self, case, xp=np):
        self.xp = xp
        dt = np.dtype(case.get("dtype", "float32"))
        sizes = case["sizes"]
        rng = np.random.default_rng(0)
        self.Ws = [xp.asarray((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dt))
                   for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        self.bs = [xp.zeros(b, dtype=dt) for b in sizes[1:]]
        self.params = [p for pair in zip(self.Ws, self.bs, strict=True) for p in pair]
        self.ms = [xp.zeros_like(p) for p in self.params]
        self.vs = [xp.zeros_like(p) for p in self.params]
        self.relu = case.get("activation", "relu") == "relu"
        self.ce = case.get("loss", "ce") == "ce"
        self.adam = case.get("optimizer", "adam") == "adam"
        self.lr = case.get("lr", 1e-3 if self.adam else 0.01)
        self.t = 0

    def forward(self, x):
        xp, L = self.xp, len(self.Ws)
        acts = [x]
        a = x
        for i in range(L):
            z = a @ self.Ws[i]
            z += self.bs[i]
            if i < L - 1:
                a = xp.maximum(z, 0, out=z) if self.relu else xp.tanh(z, out=z)
            else:
                a = z
            acts.append(a)
        return acts

    def loss(self, y, t):
        """(loss, dL/dy): softmax cross-entropy on labels, or mean squared error."""
        xp = self.xp
        n = y.shape[0]
        if self.ce:
            shifted = y - y.max(axis=1, keepdims=True)
            e = xp.exp(shifted)
            s = e.sum(axis=1, keepdims=True)
            rows = xp.arange(n)
            loss = (xp.log(s[:, 0]) - shifted[rows, t]).mean()
            dz = e / s
            dz[rows, t] -= 1.0
            dz *= 1.0 / n
            return loss, dz
        diff = y - t
        return (diff * diff).mean(), diff * (2.0 / diff.size)

    def backward(self, acts, dz):
        """Gradients [dW0, db0, dW1, ...]; the first layer needs no dx."""
        grads = [None] * (2 * len(self.Ws))
        for i in range(len(self.Ws) - 1, -1, -1):
            grads[2 * i] = acts[i].T @ dz
            grads[2 * i + 1] = dz.sum(axis=0)
            if i > 0:
                da = dz @ self.Ws[i].T
                h = acts[i]
                dz = da * (h > 0) if self.relu else da * (1.0 - h * h)
        return grads

    def update(self, grads):
        lr, xp = self.lr, self.xp
        if not self.adam:
            for p, g in zip(self.params, grads, strict=True):
                p -= lr * g
            return
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.t += 1
        step_size = lr / (1.0 - b1**self.t)
        root_bc2 = (1.0 - b2**self.t) ** 0.5
        for p, g, m, v in zip(self.params, grads, self.ms, self.vs, strict=True):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= step_size * m / (xp.sqrt(v) / root_bc2 + eps)

    def step(self, x, t):
        acts = self.forward(x)
        _, dz = self.loss(acts[-1], t)
        self.update(self.backward(acts, dz))


@step("mlp", "numpy-loop")
def numpy_mlp(case):
    xp, sync = np, None
    if case.get("device", "cpu") == "gpu":
        import cupy as xp

        def sync():
            xp.cuda.get_current_stream().synchronize()

    hand = HandMLP(case, xp)
    xs, ts = inputs(case, case["sizes"][0])
    data = cycle([(xp.asarray(x), xp.asarray(t)) for x, t in zip(xs, ts, strict=True)])
    return Step(lambda: hand.step(*data()), sync)
