"""A single sigmoid neuron learns to separate (0,0),(0,1) -> 0 from (1,0),(1,1) -> 1.

The classic hand-worked exercise: y = σ(w1·x1 + w2·x2 + b) with the bias FIXED
at b = −3, weights starting at (w1, w2) = (0.1, 0.5), learning rate 0.1 on the
error E = 1/(2N) Σ (d − y)², and 10,000 epochs of full-batch gradient descent.

The classic result: the target only depends on x1, so w1 grows until
w1 + b = w1 − 3 > 0 lets it dominate the fixed bias (w1 ends well above 3),
while w2 shrinks so that x2 = 1 cannot lift (0,1) over the threshold; the
outputs for the four inputs round to 0, 0, 1, 1.

    python examples/sigmoid_neuron.py
"""

import _checkout  # noqa: F401  (finds nnkernel in a source checkout)
import numpy as np

import nnkernel as nk

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
d = np.array([[0.0], [0.0], [1.0], [1.0]])
N = X.shape[0]

model = nk.Sequential(nk.Dense(2, 1, activation="sigmoid"), dtype="float64")
model.params["0.W"] = [[0.1], [0.5]]
model.params["0.b"] = [-3.0]
opt = nk.optim.SGD(lr=0.1)

for _ in range(10_000):
    y = model.forward(X, train=True)
    # nk.losses.mse is mean((y − d)²) with gradient 2(y − d)/N; E = 1/(2N) Σ (d − y)² is half
    # of it for one output, so E = 0.5·mse and dE/dy = 0.5·dy.
    mse, dy = nk.losses.mse(y, d)
    model.backward(0.5 * dy, input_grad=False)
    # Freeze the bias: an optimizer updates exactly the keys in the grads it is given.
    opt.step(model.params, {"0.W": model.grads["0.W"]})

y = model.forward(X)
E = float(np.sum((d - y) ** 2) / (2 * N))
w1, w2 = (float(v) for v in model.params["0.W"][:, 0])
print(f"weights: w1 = {w1:.4f}, w2 = {w2:.4f}")
print(f"bias (fixed): b = {float(model.params['0.b'][0]):.4f}")
print(f"error E = {E:.6f}")
for x, out, target in zip(X, y[:, 0], d[:, 0], strict=True):
    print(f"input ({x[0]:.0f}, {x[1]:.0f}) -> output {out:.4f} (rounded {round(out)}, "
          f"target {target:.0f})")
