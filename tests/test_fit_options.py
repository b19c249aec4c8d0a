"""The training conveniences of issue 13 against PyTorch: fit(sample_weight=, class_weight=,
validation_split=), model.predict_proba and model.summary().
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

import nnkernel as nk
from nnkernel.errors import ConfigError


def data(n=96, d=5, c=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return rng.normal(size=(n, d)) + np.eye(c, d)[y], y


def twin(torch, model):
    """The torch.nn.Sequential of a Dense-Tanh-Dense model, with the same weights."""
    a = model.arrays()
    net = torch.nn.Sequential(torch.nn.Linear(*a["0.W"].shape), torch.nn.Tanh(),
                              torch.nn.Linear(*a["2.W"].shape)).double()
    with torch.no_grad():
        for i in (0, 2):  # nnkernel's W is (n_in, n_out), torch's (out, in)
            net[i].weight.copy_(torch.from_numpy(a[f"{i}.W"].T.copy()))
            net[i].bias.copy_(torch.from_numpy(a[f"{i}.b"]))
    return net


@pytest.mark.parametrize("how", ["sample_weight", "class_weight"])
def test_weighted_training_follows_torch(how):
    torch = torch_or_skip()
    X, y = data()
    model = nk.Sequential(nk.Dense(5, 8), nk.Tanh(), nk.Dense(8, 3), seed=3, dtype="float64")
    net = twin(torch, model)
    rng = np.random.default_rng(1)
    table = {0: 0.2, 1: 3.0, 2: 1.0}
    w = rng.uniform(0, 2, 96) if how == "sample_weight" else np.array([table[c] for c in y])
    kw = {"sample_weight": w} if how == "sample_weight" else {"class_weight": table}
    nk.fit(model, X, y, optimizer=nk.optim.SGD(lr=0.5), epochs=4, batch_size=96,
           progress=False, **kw)  # one full batch an epoch: the order does not matter
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    tx, ty, tw = torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(w)
    for _ in range(4):  # Keras' rule: weighted per-sample losses, divided by N
        opt.zero_grad()
        (torch.nn.functional.cross_entropy(net(tx), ty, reduction="none") * tw).mean().backward()
        opt.step()
    np.testing.assert_allclose(model.params["0.W"], net[0].weight.detach().numpy().T,
                               rtol=1e-10, atol=1e-12)
    ours = nk.evaluate(model, X, y, sample_weight=w)[0]
    theirs = (torch.nn.functional.cross_entropy(net(tx), ty, reduction="none") * tw).mean()
    assert ours == pytest.approx(float(theirs.detach()), rel=1e-10)


def test_weights_refused_clearly():
    X, y = data()
    model = nk.Sequential(nk.Dense(5, 3), seed=0)
    with pytest.raises(ConfigError, match="classes are 0..2"):
        nk.fit(model, X, y, class_weight={5: 1.0}, epochs=1, progress=False)
    with pytest.raises(nk.ShapeError, match="one value per sample"):
        nk.fit(model, X, y, sample_weight=np.ones(3), epochs=1, progress=False)


def test_validation_split_holds_out_that_fraction_reproducibly():
    X, y = data(200)
    hist = nk.fit(nk.Sequential(nk.Dense(5, 3), seed=0), X, y, epochs=2, validation_split=0.25,
                  progress=False, seed=4)
    train, held = nk.train.data.split_indices(200, 0.25, seed=4)
    assert len(held) == 50 and not set(train) & set(held)
    again = nk.fit(nk.Sequential(nk.Dense(5, 3), seed=0), X[train], y[train], epochs=2,
                   validation_data=(X[held], y[held]), progress=False, seed=4)
    assert hist["val_loss"] == again["val_loss"] and hist["loss"] == again["loss"]
    with pytest.raises(ConfigError, match="not both"):
        nk.fit(nk.Sequential(nk.Dense(5, 3)), X, y, validation_split=0.2,
               validation_data=(X, y), progress=False)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_predict_proba_is_torchs_softmax_or_sigmoid(loss):
    torch = torch_or_skip()
    X, _ = data()
    n_out = 3 if loss == "cross_entropy" else 1
    model = nk.Sequential(nk.Dense(5, 8), nk.Tanh(), nk.Dense(8, n_out), seed=2, dtype="float64")
    z = torch.from_numpy(np.asarray(model(X)))
    want = torch.softmax(z, dim=-1) if n_out == 3 else torch.sigmoid(z)
    np.testing.assert_allclose(model.predict_proba(X, loss=loss), want.numpy(), rtol=1e-12)


def test_summary_counts_what_torch_counts():
    torch = torch_or_skip()
    model = nk.Sequential(nk.Dense(20, 32), nk.BatchNorm(32), nk.ReLU(), nk.Dropout(0.1),
                          nk.Dense(32, 16), nk.LayerNorm(16), nk.Dense(16, 4), seed=0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.BatchNorm1d(32),
                              torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 16),
                              torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)).eval()
    table = model.summary().splitlines()
    rows = table[2:2 + len(net)]
    x = torch.zeros(7, 20)
    for row, layer in zip(rows, net, strict=True):
        cells = row.split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        x = layer(x)
        assert int(cells[-1].replace(",", "")) == sum(p.numel() for p in layer.parameters())
        assert cells[2] == "(N, " + ", ".join(str(d) for d in x.shape[1:]) + ")"
    total = sum(p.numel() for p in net.parameters())
    state = sum(b.numel() for name, b in net.named_buffers() if "running" in name)
    assert table[-1].startswith(f"parameters: {total:,}  (+ {state:,} non-trainable")
    assert model.num_parameters() == total
