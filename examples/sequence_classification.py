"""Classify variable-length sequences with a bidirectional LSTM: lengths, padding, a hand loop.

    python examples/sequence_classification.py

Each sequence is a noisy sine wave of 8 to 24 steps whose frequency (one of three)
is the class, with a random phase. Sequences are padded to 24 steps with NaN and
their lengths passed as ``lengths=``: padded steps are never read (the state
carries through them, their outputs are 0 and no gradient flows), so the NaN
changes nothing. `fit` takes no side inputs, so the training loop is written out:
forward, loss, backward, Adam.
"""

import _checkout  # noqa: F401  (finds nnkernel in a source checkout)
import numpy as np

import nnkernel as nk

T_MAX, CLASSES = 24, 3
OMEGA = (0.4, 0.8, 1.2)  # radians per step, one per class


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    lengths = rng.integers(8, T_MAX + 1, n)
    t = np.arange(T_MAX)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    x = np.sin(np.array(OMEGA)[labels][:, None] * t + phase) + 0.3 * rng.standard_normal(
        (n, T_MAX))
    x[t >= lengths[:, None]] = np.nan  # padding: never read
    return x[:, :, None].astype(np.float32), lengths, labels  # (N, T, 1 feature)


X, L, y = make_data(2048, seed=0)
X_test, L_test, y_test = make_data(512, seed=1)
print(f"train {X.shape}, test {X_test.shape}, lengths {L.min()}..{L.max()}, "
      f"{np.isnan(X).mean():.0%} of the steps are NaN padding")

model = nk.Sequential(nk.LSTM(1, 16, bidirectional=True),  # final state of each direction
                      nk.Dense(32, CLASSES), seed=0)
print(model)
opt = nk.optim.Adam(lr=1e-2)
rng = np.random.default_rng(2)
for epoch in range(6):
    order = rng.permutation(len(X))
    total = 0.0
    for i in range(0, len(X), 64):
        rows = order[i:i + 64]
        logits = model.forward(X[rows], train=True, lengths=L[rows])
        loss, dy = nk.losses.cross_entropy(logits, y[rows])
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)
        total += float(loss) * len(rows)
    accuracy = (model.predict(X_test, lengths=L_test).argmax(axis=1) == y_test).mean()
    print(f"epoch {epoch + 1}: train loss {total / len(X):.4f}, test accuracy {accuracy:.4f}")

# The padding is never read: any other filler gives the same predictions.
zeros = np.nan_to_num(X_test, nan=0.0)
same = np.array_equal(model.predict(zeros, lengths=L_test), model.predict(X_test, lengths=L_test))
print(f"NaN or zero padding, same predictions: {same}")
print(f"test accuracy {accuracy:.4f}")
