"""The same networks in nnkernel (float64) and in PyTorch autograd: values and gradients agree.

Weights are drawn by nnkernel and copied into torch tensors; torch builds the
network from torch.nn.functional and differentiates it with autograd. Compared:
the loss, every parameter gradient and dL/dx.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

import nnkernel as nk
from nnkernel import losses

torch = torch_or_skip()  # the reference; without it there is nothing to compare with
F = torch.nn.functional

RTOL, ATOL = 1e-10, 1e-12

# nnkernel activation -> the torch function it must equal
ACTIVATIONS = {
    "identity": (nk.activations.Identity(), lambda z: z),
    "sigmoid": (nk.activations.Sigmoid(), torch.sigmoid),
    "tanh": (nk.activations.Tanh(), torch.tanh),
    "relu": (nk.activations.ReLU(), F.relu),
    "leaky_relu": (nk.activations.LeakyReLU(0.1), lambda z: F.leaky_relu(z, 0.1)),
    "elu": (nk.activations.ELU(0.7), lambda z: F.elu(z, alpha=0.7)),
    "swish": (nk.activations.Swish(), F.silu),
    "gelu": (nk.activations.GELU(), lambda z: F.gelu(z, approximate="tanh")),
    "softmax": (nk.activations.Softmax(), lambda z: F.softmax(z, dim=-1)),
}

HUBER_DELTA = 0.7


def _targets(rng, n, k):
    return {
        "mse": (lambda y, t: losses.mse(y, t), F.mse_loss, rng.standard_normal((n, k))),
        "mae": (lambda y, t: losses.mae(y, t), F.l1_loss, rng.standard_normal((n, k))),
        "huber": (lambda y, t: losses.huber(y, t, delta=HUBER_DELTA),
                  lambda y, t: F.huber_loss(y, t, delta=HUBER_DELTA),
                  rng.standard_normal((n, k)) * 2),
        "binary_cross_entropy": (lambda y, t: losses.binary_cross_entropy(y, t),
                                 F.binary_cross_entropy_with_logits, rng.uniform(0, 1, (n, k))),
        "cross_entropy_labels": (lambda y, t: losses.cross_entropy(y, t), F.cross_entropy,
                                 rng.integers(0, k, n)),
        "cross_entropy_probabilities": (lambda y, t: losses.cross_entropy(y, t), F.cross_entropy,
                                        rng.dirichlet(np.ones(k), size=n)),
    }


LOSSES = list(_targets(np.random.default_rng(0), 1, 2))


def as_torch(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f"
                        else np.asarray(a), requires_grad=grad)


def assert_close(ours, theirs, what):
    np.testing.assert_allclose(nk.backend.to_numpy(ours), theirs.detach().numpy(), rtol=RTOL,
                               atol=ATOL, err_msg=what)


@pytest.mark.parametrize("loss_name", LOSSES)
@pytest.mark.parametrize("act_name", list(ACTIVATIONS))
def test_network_matches_torch(act_name, loss_name):
    act, torch_act = ACTIVATIONS[act_name]
    rng = np.random.default_rng(1)
    n, k = 7, 3
    model = nk.Sequential(nk.Dense(4, 6, activation=act), nk.Dense(6, k), seed=2,
                          dtype="float64")
    x = rng.standard_normal((n, 4))
    ours_loss, torch_loss, target = _targets(rng, n, k)[loss_name]

    y = model.forward(x, train=True)
    value, dy = ours_loss(y, target)
    dx = model.backward(dy)

    W = {key: as_torch(v, grad=True) for key, v in model.params.items()}
    tx = as_torch(x, grad=True)
    ty = torch_act(tx @ W["0.W"] + W["0.b"]) @ W["1.W"] + W["1.b"]
    tvalue = torch_loss(ty, as_torch(target))
    tvalue.backward()

    assert_close(value, tvalue, "loss")
    for key, tensor in W.items():
        assert_close(model.grads[key], tensor.grad, f"gradient of {key}")
    assert_close(dx, tx.grad, "dL/dx")


def test_binary_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[-100.0, 100.0, -40.0, 40.0], [0.0, -750.0, 750.0, 1e-3]])
    target = np.array([[1.0, 0.0, 0.3, 1.0], [0.5, 0.0, 1.0, 0.2]])
    value, dy = losses.binary_cross_entropy(logits, target)
    tl = as_torch(logits, grad=True)
    tvalue = F.binary_cross_entropy_with_logits(tl, as_torch(target))
    tvalue.backward()
    assert np.isfinite(float(value)) and np.isfinite(dy).all()
    assert_close(value, tvalue, "loss")
    assert_close(dy, tl.grad, "dL/dy")


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-800.0, -790.0, -805.0]])
    labels = np.array([1, 0])
    value, dy = losses.cross_entropy(logits, labels)
    tl = as_torch(logits, grad=True)
    tvalue = F.cross_entropy(tl, as_torch(labels))
    tvalue.backward()
    assert_close(value, tvalue, "loss")
    assert_close(dy, tl.grad, "dL/dy")


def test_cross_entropy_of_one_unbatched_sample():
    """Logits (C,) and a 0-d label, as torch accepts them."""
    logits = np.array([1.0, 2.0, 3.0, -0.5])
    value, dy = losses.cross_entropy(logits, np.asarray(2))
    tl = as_torch(logits, grad=True)
    tvalue = F.cross_entropy(tl, as_torch(np.asarray(2)))
    tvalue.backward()
    assert_close(value, tvalue, "loss")
    assert_close(dy, tl.grad, "dL/dy")


# -- normalisation layers ---------------------------------------------------------------------
def _norm_model(layer, rng):
    model = nk.Sequential(nk.Dense(3, 5, "tanh"), layer, seed=4, dtype="float64")
    model.params["1.gamma"] = rng.uniform(0.5, 2.0, 5)
    model.params["1.beta"] = rng.standard_normal(5)
    return model


def _torch_pair(model, module):
    """Leaf tensors for the Dense layer, the module's affine copied from the model."""
    W = {key: as_torch(model.params[key], grad=True) for key in ("0.W", "0.b")}
    with torch.no_grad():
        module.weight.copy_(as_torch(model.params["1.gamma"]))
        module.bias.copy_(as_torch(model.params["1.beta"]))
    return W


def _compare_step(model, module, W, x, probe, train):
    """One forward and backward of both with the loss Σ y ⊙ probe; compare everything."""
    y = model.forward(x, train=train, record=True)
    dx = model.backward(probe)
    tx = as_torch(x, grad=True)
    ty = module(torch.tanh(tx @ W["0.W"] + W["0.b"]))
    (ty * as_torch(probe)).sum().backward()
    assert_close(y, ty, "output")
    assert_close(dx, tx.grad, "dL/dx")
    assert_close(model.grads["1.gamma"], module.weight.grad, "dL/dgamma")
    assert_close(model.grads["1.beta"], module.bias.grad, "dL/dbeta")
    for key in ("0.W", "0.b"):
        assert_close(model.grads[key], W[key].grad, f"gradient of {key}")
    for tensor in [*W.values(), tx, module.weight, module.bias]:
        tensor.grad = None


def test_batchnorm_matches_torch_in_training_and_evaluation():
    rng = np.random.default_rng(5)
    model = _norm_model(nk.BatchNorm(5, eps=1e-5, momentum=0.1), rng)
    module = torch.nn.BatchNorm1d(5, eps=1e-5, momentum=0.1).double()
    W = _torch_pair(model, module)
    module.train()
    for _ in range(3):  # running statistics accumulate over several batches
        x, probe = rng.standard_normal((8, 3)) * 2 + 1, rng.standard_normal((8, 5))
        _compare_step(model, module, W, x, probe, train=True)
        assert_close(model.state["1.running_mean"], module.running_mean, "running mean")
        assert_close(model.state["1.running_var"], module.running_var, "running var")
    module.eval()
    x, probe = rng.standard_normal((6, 3)), rng.standard_normal((6, 5))
    _compare_step(model, module, W, x, probe, train=False)


def test_layernorm_matches_torch():
    rng = np.random.default_rng(6)
    model = _norm_model(nk.LayerNorm(5, eps=1e-5), rng)
    module = torch.nn.LayerNorm(5, eps=1e-5).double()
    W = _torch_pair(model, module)
    for train in (True, False):
        x, probe = rng.standard_normal((8, 3)) * 3, rng.standard_normal((8, 5))
        _compare_step(model, module, W, x, probe, train=train)
