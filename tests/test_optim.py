"""Optimizers against torch.optim: whole training trajectories, clipping, schedules, bad settings.

Each trajectory trains the same small MLP twice for 50 steps in float64: in
nnkernel (its own backward, its own optimizer) and in torch (autograd and
torch.optim), and compares every parameter after every step. It runs on NumPy
(the in-place NumPy twin kernels) and on array-api-strict (the generic
reference kernels).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import CPU_BACKENDS, TRAJECTORY_BACKENDS, host, make, torch_or_skip

import nnkernel as nk
from nnkernel import optim
from nnkernel.errors import ConfigError

torch = torch_or_skip()  # the reference; without it there is nothing to compare with
F = torch.nn.functional

STEPS = 50
RTOL, ATOL = 1e-8, 1e-12

OPTIMIZERS = {
    "sgd": (lambda: optim.SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_momentum": (lambda: optim.SGD(lr=0.05, momentum=0.9),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "sgd_nesterov": (lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "sgd_weight_decay": (lambda: optim.SGD(lr=0.05, momentum=0.5, weight_decay=0.05),
                         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, weight_decay=0.05)),
    "sgd_dampening": (lambda: optim.SGD(lr=0.05, momentum=0.9, dampening=0.3),
                      lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3)),
    "rmsprop": (lambda: optim.RMSprop(), lambda p: torch.optim.RMSprop(p)),
    "rmsprop_momentum": (lambda: optim.RMSprop(lr=0.003, momentum=0.8),
                         lambda p: torch.optim.RMSprop(p, lr=0.003, momentum=0.8)),
    "rmsprop_centered": (lambda: optim.RMSprop(lr=0.003, centered=True, momentum=0.5),
                         lambda p: torch.optim.RMSprop(p, lr=0.003, centered=True, momentum=0.5)),
    "rmsprop_weight_decay": (lambda: optim.RMSprop(lr=0.005, alpha=0.9, weight_decay=0.1),
                             lambda p: torch.optim.RMSprop(p, lr=0.005, alpha=0.9,
                                                           weight_decay=0.1)),
    "adam": (lambda: optim.Adam(), lambda p: torch.optim.Adam(p)),
    "adam_weight_decay": (lambda: optim.Adam(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1),
                          lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.99),
                                                     weight_decay=0.1)),
    "adamw": (lambda: optim.AdamW(), lambda p: torch.optim.AdamW(p)),
    "adamw_strong": (lambda: optim.AdamW(lr=0.02, weight_decay=0.5, eps=1e-6),
                     lambda p: torch.optim.AdamW(p, lr=0.02, weight_decay=0.5, eps=1e-6)),
    # decay on matrices only, as GPT training: torch's two parameter groups
    "adamw_matrices": (lambda: optim.AdamW(lr=0.02, weight_decay=0.3, decay="matrices"),
                       lambda p: torch.optim.AdamW(
                           [{"params": [t for t in p if t.dim() >= 2], "weight_decay": 0.3},
                            {"params": [t for t in p if t.dim() < 2], "weight_decay": 0.0}],
                           lr=0.02)),
}


class Twins:
    """The same 4-8-3 tanh MLP and minibatch stream in nnkernel and in torch autograd."""

    def __init__(self, backend, seed=0):
        self.model = nk.Sequential(nk.Dense(4, 8, "tanh"), nk.Dense(8, 3), seed=seed,
                                   dtype="float64", backend=backend)
        self.backend = backend
        self.tparams = {k: torch.tensor(host(v), requires_grad=True)
                        for k, v in self.model.params.items()}
        rng = np.random.default_rng(seed)
        self.X = rng.standard_normal((64, 4))
        self.y = rng.integers(0, 3, 64)
        self.batches = [rng.choice(64, 16, replace=False) for _ in range(STEPS)]

    def our_grads(self, step):
        rows = self.batches[step]
        out = self.model.forward(make(self.backend, self.X[rows]), train=True)
        _, dy = nk.losses.cross_entropy(out, make(self.backend, self.y[rows]))
        self.model.backward(dy, input_grad=False)
        return self.model.grads

    def torch_backward(self, step):
        rows = self.batches[step]
        p = self.tparams
        out = torch.tanh(torch.tensor(self.X[rows]) @ p["0.W"] + p["0.b"]) @ p["1.W"] + p["1.b"]
        for t in p.values():
            t.grad = None
        F.cross_entropy(out, torch.tensor(self.y[rows])).backward()

    def assert_same_params(self, step, keys=None):
        for key in keys or self.tparams:
            np.testing.assert_allclose(host(self.model.params[key]),
                                       self.tparams[key].detach().numpy(), rtol=RTOL, atol=ATOL,
                                       err_msg=f"{key} after step {step + 1}")


def run_both(backend, ours, make_theirs, *, frozen=(), clip=None, scheduler=None):
    twins = Twins(backend)
    theirs = make_theirs([t for k, t in twins.tparams.items() if k not in frozen])
    sched = None if scheduler is None else scheduler(theirs)
    for step in range(STEPS):
        grads = {k: g for k, g in twins.our_grads(step).items() if k not in frozen}
        ours.step(twins.model.params, grads)
        twins.torch_backward(step)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([t for k, t in twins.tparams.items()
                                            if k not in frozen], clip)
        theirs.step()
        if sched is not None:
            sched.step()
        twins.assert_same_params(step)
    return twins


@pytest.mark.parametrize("backend", TRAJECTORY_BACKENDS)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_trajectory_matches_torch(backend, name):
    ours, theirs = OPTIMIZERS[name]
    twins = run_both(backend, ours(), theirs)
    # The run must actually move the weights, or agreement would prove nothing.
    start = Twins(backend).model.params
    moved = max(np.abs(host(twins.model.params[k]) - host(start[k])).max() for k in start)
    assert moved > 1e-3


@pytest.mark.parametrize("backend", TRAJECTORY_BACKENDS)
@pytest.mark.parametrize("name", ["sgd_momentum", "rmsprop_centered", "adam", "adamw"])
def test_frozen_parameter_stays_bit_identical(backend, name):
    ours, theirs = OPTIMIZERS[name]
    before = host(Twins(backend).model.params["0.b"]).copy()
    twins = run_both(backend, ours(), theirs, frozen=("0.b",))
    assert np.array_equal(host(twins.model.params["0.b"]), before)


@pytest.mark.parametrize("backend", TRAJECTORY_BACKENDS)
def test_trajectory_with_gradient_clipping(backend):
    run_both(backend, optim.SGD(lr=0.2, momentum=0.9, clip_norm=0.3),
             lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9), clip=0.3)


@pytest.mark.parametrize("backend", TRAJECTORY_BACKENDS)
def test_trajectory_with_a_schedule(backend):
    run_both(backend, optim.Adam(lr=0.05, schedule=optim.StepDecay(7, 0.5)),
             lambda p: torch.optim.Adam(p, lr=0.05),
             scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("max_norm", [0.05, 1e3])  # clips, and leaves alone
def test_clip_by_global_norm_matches_torch(backend, max_norm):
    rng = np.random.default_rng(1)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5) * 3}
    clipped = optim.clip_by_global_norm({k: make(backend, v) for k, v in grads.items()},
                                        max_norm)
    tensors = [torch.tensor(v, requires_grad=True) for v in grads.values()]
    for t, v in zip(tensors, grads.values(), strict=True):
        t.grad = torch.tensor(v)
    norm = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    assert math.isclose(float(optim.global_norm({k: make(backend, v) for k, v in grads.items()})),
                        float(norm), rel_tol=1e-12)
    for key, t in zip(grads, tensors, strict=True):
        np.testing.assert_allclose(host(clipped[key]), t.grad.numpy(), rtol=1e-12, atol=0)


# -- learning-rate schedules -----------------------------------------------------------------
def _lambda_warmup(w):
    return lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / w, end_factor=1.0,
                                                       total_iters=w - 1)


SCHEDULES = {
    "step": (lambda: optim.StepDecay(4, 0.5),
             lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.5), 30),
    "exponential": (lambda: optim.ExponentialDecay(0.9),
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), 30),
    "cosine": (lambda: optim.CosineDecay(20, min_factor=0.1),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.03),
               21),  # torch's cosine climbs again after T_max; ours stays at the floor
    "warmup": (lambda: optim.LinearWarmup(5), _lambda_warmup(5), 30),
    "warmup_cosine": (
        lambda: optim.LinearWarmup(5, optim.CosineDecay(15)),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o, [_lambda_warmup(5)(o), torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15)],
            milestones=[5]),
        21),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch_lr_scheduler(name):
    ours, theirs, steps = SCHEDULES[name]
    lr = 0.3
    opt = optim.SGD(lr=lr, schedule=ours())
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=lr)
    sched = theirs(topt)
    params = {"w": np.zeros(1)}
    for _ in range(steps):
        expected = topt.param_groups[0]["lr"]
        assert math.isclose(opt.current_lr, expected, rel_tol=1e-9, abs_tol=1e-15)
        before = params["w"].copy()
        opt.step(params, {"w": np.ones(1)})  # the lr really used: p moves by lr · 1
        assert math.isclose(float(before[0] - params["w"][0]), expected, rel_tol=1e-9,
                            abs_tol=1e-15)
        topt.step()
        sched.step()


def test_cosine_stays_at_its_floor_after_the_last_step():
    cosine = optim.CosineDecay(10, min_factor=0.2)
    assert cosine(0) == 1.0
    assert [cosine(t) for t in (10, 11, 100)] == [pytest.approx(0.2)] * 3


# -- hyperparameter checks -------------------------------------------------------------------
@pytest.mark.parametrize("make_bad", [
    lambda: optim.SGD(lr=0.0),
    lambda: optim.SGD(lr=-0.1),
    lambda: optim.Adam(lr=float("nan")),
    lambda: optim.Adam(lr=float("inf")),
    lambda: optim.SGD(lr=0.1, weight_decay=-1e-4),
    lambda: optim.SGD(lr=0.1, nesterov=True),
    lambda: optim.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
    lambda: optim.SGD(lr=0.1, momentum=-0.5),
    lambda: optim.Adam(betas=(1.0, 0.999)),
    lambda: optim.Adam(betas=(0.9, -0.1)),
    lambda: optim.Adam(eps=-1e-8),
    lambda: optim.AdamW(weight_decay=-0.01),
    lambda: optim.RMSprop(alpha=1.5),
    lambda: optim.RMSprop(momentum=-0.1),
    lambda: optim.SGD(lr=0.1, clip_norm=0.0),
    lambda: optim.SGD(lr=[0.1, -0.1]),
    lambda: optim.SGD(lr=[[0.1]]),
    lambda: optim.SGD(lr=[]),
    lambda: optim.get_optimizer("adagrad"),
])
def test_bad_hyperparameters_raise_config_error(make_bad):
    with pytest.raises(ConfigError):
        make_bad()
