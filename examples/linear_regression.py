"""Gradient descent recovers the line y = 2x + 1.

A single Dense(1, 1) (no activation) is fitted to noisy samples of y = 2x + 1
with the mean squared error and plain SGD, one full batch per step: the
textbook first example of learning by gradient descent.

    python examples/linear_regression.py
"""

import _checkout  # noqa: F401  (finds nnkernel in a source checkout)
import numpy as np

import nnkernel as nk

rng = np.random.default_rng(0)
x = rng.uniform(-1.0, 1.0, size=(200, 1)).astype(np.float32)
y = (2.0 * x + 1.0 + rng.normal(0.0, 0.05, size=x.shape)).astype(np.float32)

model = nk.Sequential(nk.Dense(1, 1), seed=0)
opt = nk.optim.SGD(lr=0.1)
print(f"start: w = {float(model.params['0.W'][0, 0]):.4f}, b = {float(model.params['0.b'][0]):.4f}")

for epoch in range(500):
    out = model.forward(x, train=True)
    loss, dy = nk.losses.mse(out, y)       # loss = mean((out - y)^2), dy = 2 (out - y) / N
    model.backward(dy, input_grad=False)   # fills model.grads["0.W"], model.grads["0.b"]
    opt.step(model.params, model.grads)    # w <- w - lr * dL/dw
    if epoch in (0, 9, 99, 499):
        print(f"epoch {epoch + 1:3d}: mse = {float(loss):.5f}")

w = float(model.params["0.W"][0, 0])
b = float(model.params["0.b"][0])
print(f"learned weight w = {w:.4f} (true 2)")
print(f"learned bias   b = {b:.4f} (true 1)")
