"""The API tour: build a model, run one training step by hand, then train with `fit`.

    python examples/quickstart.py

Uses the 8x8 digits dataset that ships inside nnkernel (1,437 train / 360 test
images, 64 features, 10 classes), so it runs offline with only NumPy.
"""

import _checkout  # noqa: F401  (finds nnkernel in a source checkout)

import nnkernel as nk
from nnkernel import datasets

data = datasets.load("digits")
print(f"digits: X_train {data.X_train.shape}, X_test {data.X_test.shape}, "
      f"{data.n_classes} classes")

# 1. A model: parameters live in model.params under "<layer index>.<name>".
model = nk.Sequential(nk.Dense(64, 128), nk.ReLU(), nk.Dense(128, 10), seed=0)
print(model)
print("parameters:", {k: tuple(v.shape) for k, v in model.params.items()})

# 2. One training step by hand: forward, fused softmax cross-entropy, backward, Adam.
x, labels = data.X_train[:32], data.y_train[:32]
opt = nk.optim.Adam(lr=1e-3)
y = model.forward(x, train=True)                 # logits, shape (32, 10)
loss, dy = nk.losses.cross_entropy(y, labels)    # mean loss and dL/dy = (softmax(y) − t)/N
model.backward(dy)                               # fills model.grads, returns dL/dx
print(f"one batch: logits {tuple(y.shape)}, loss {float(loss):.4f}, "
      f"|dL/dW0| = {float((model.grads['0.W'] ** 2).sum() ** 0.5):.4f}")
opt.step(model.params, model.grads)              # rebinds model.params entries
loss_after, _ = nk.losses.cross_entropy(model.forward(x), labels)
print(f"after one Adam step the same batch has loss {float(loss_after):.4f}")

# 3. The fit loop: minibatches, shuffling, metrics and validation.
history = nk.fit(model, data.X_train, data.y_train, optimizer=opt, epochs=10, batch_size=32,
                 validation_data=(data.X_test, data.y_test), progress=False)
for epoch, (acc, val_acc) in enumerate(zip(history["accuracy"], history["val_accuracy"],
                                           strict=True)):
    print(f"epoch {epoch + 1:2d}: train accuracy {acc:.4f}, test accuracy {val_acc:.4f}")
test_loss, test_acc = nk.evaluate(model, data.X_test, data.y_test)
print(f"test loss {test_loss:.4f}, test accuracy {test_acc:.4f}")
