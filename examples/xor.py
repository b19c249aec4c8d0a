"""A two-layer network learns XOR, the function a single neuron cannot represent.

2 inputs -> 8 tanh hidden units -> 1 output logit, trained with binary
cross-entropy on the logit (the sigmoid is fused into the loss) and Adam from a
fixed seed. The predictions are σ(logit) for the four inputs.

    python examples/xor.py
"""

import _checkout  # noqa: F401  (finds nnkernel in a source checkout)
import numpy as np

import nnkernel as nk

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float32)
t = np.array([[0.0], [1.0], [1.0], [0.0]], dtype=np.float32)

model = nk.Sequential(nk.Dense(2, 8, activation="tanh"), nk.Dense(8, 1), seed=1)
opt = nk.optim.Adam(lr=0.05)

for step in range(500):
    logits = model.forward(X, train=True)
    loss, dy = nk.losses.binary_cross_entropy(logits, t)  # dy = (σ(logit) − t) / N
    model.backward(dy, input_grad=False)
    opt.step(model.params, model.grads)
    if step in (0, 99, 499):
        print(f"step {step + 1:3d}: binary cross-entropy = {float(loss):.4f}")

prob = 1.0 / (1.0 + np.exp(-np.asarray(model.predict(X))))
for x, p, target in zip(X, prob[:, 0], t[:, 0], strict=True):
    print(f"xor({x[0]:.0f}, {x[1]:.0f}) = {target:.0f}: predicted {p:.4f} -> {int(p > 0.5)}")
