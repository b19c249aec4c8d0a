"""A learning-rate sweep as one model: an ensemble with one member per learning rate.

``Sequential(..., ensemble=3)`` stacks three independent networks (every
parameter gets a leading axis of 3, each Dense is one batched matmul), and
``Adam(lr=[...])`` gives member i the i-th learning rate. One `fit` trains all
three on the same minibatches; `evaluate` reports each member on its own.

    python examples/ensemble_sweep.py
"""

import _checkout  # noqa: F401  (finds nnkernel in a source checkout)

import nnkernel as nk
from nnkernel import datasets

data = datasets.load("digits")
rates = [1e-4, 1e-3, 1e-2]

model = nk.Sequential(nk.Dense(64, 64), nk.ReLU(), nk.Dense(64, 10), seed=0,
                      ensemble=len(rates))
print(f"ensemble of {model.ensemble}: W0 has shape {tuple(model.params['0.W'].shape)}")
history = nk.fit(model, data.X_train, data.y_train, optimizer=nk.optim.Adam(lr=rates),
                 epochs=5, batch_size=32, progress=False)
test_loss, test_acc = nk.evaluate(model, data.X_test, data.y_test)

print("member  lr      train loss  test loss  test accuracy")
for i, lr in enumerate(rates):
    print(f"{i:6d}  {lr:<6g}  {history['loss'][-1][i]:10.4f}  {test_loss[i]:9.4f}  "
          f"{test_acc[i]:13.4f}")
best = max(range(len(rates)), key=lambda i: test_acc[i])
print(f"best learning rate: {rates[best]:g} (test accuracy {test_acc[best]:.4f})")
