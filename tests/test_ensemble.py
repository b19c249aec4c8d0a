"""Ensembles: E networks trained as one must match E networks trained one by one.

The central contract: `Sequential.stack` of E separately initialised models,
trained with per-member losses, gives member i exactly the parameters that
model i reaches on its own (same batches, same optimizer), for shared (N, D)
and per-member (E, N, D) inputs. Everything else here (per-member
hyperparameters, Dropout masks, fit with bootstrap and per-member early
stopping, member/stack, predictions and their summaries, gradcheck, moving,
configs and checkpoints) is checked against that ground truth or against NumPy.
All tests run in float64 on NumPy (the in-place twin) and array-api-strict
(the generic reference kernels).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CPU_BACKENDS, host, make

import nnkernel as nk
from nnkernel import checkpoint, losses, optim

pytestmark = pytest.mark.parametrize("backend", CPU_BACKENDS)

N_IN, N_OUT, ROWS = 4, 3, 12


# -- architectures ----------------------------------------------------------------------
# Every activation appears at least once, as a Dense activation or as a layer. A Dense
# right before BatchNorm would have a bias whose exact gradient is 0, and Adam turns the
# rounding noise in it into ±lr steps, so a nonlinearity always sits in between.
def activations_net():
    return [nk.Tanh(), nk.Dense(N_IN, 8, "leaky_relu"), nk.LayerNorm(8),
            nk.Dense(8, 8, "elu"), nk.Dense(8, 8, "swish"), nk.GELU(),
            nk.Dense(8, 8, "sigmoid"), nk.ReLU(), nk.Dense(8, 8), nk.Softmax(),
            nk.Dense(8, N_OUT, "identity")]


def activation_layers_net():
    return [nk.LayerNorm(N_IN), nk.Dense(N_IN, 8), nk.LeakyReLU(0.2), nk.Dense(8, 8), nk.ELU(0.5),
            nk.Dense(8, 8), nk.Sigmoid(), nk.Dense(8, 8), nk.SiLU(), nk.Dense(8, 8, "gelu"),
            nk.Identity(), nk.Dense(8, 8, "relu"), nk.Dense(8, N_OUT, "softmax")]


def batchnorm_net():
    return [nk.Dense(N_IN, 8, "tanh"), nk.BatchNorm(8), nk.ReLU(), nk.Dense(8, 8, "gelu"),
            nk.BatchNorm(8, momentum=0.3), nk.Dense(8, N_OUT)]


def norm_first_net():
    """Normalisation layers that see the raw input: a shared (N, D) x reaches them."""
    return [nk.BatchNorm(N_IN), nk.Dense(N_IN, 8, "tanh"), nk.LayerNorm(8),
            nk.Dense(8, N_OUT)]


def small_net():
    return [nk.Dense(N_IN, 8, "tanh"), nk.Dense(8, N_OUT)]


NETS = {"activations": activations_net, "activation_layers": activation_layers_net,
        "batchnorm": batchnorm_net, "norm_first": norm_first_net}


# -- helpers ----------------------------------------------------------------------------
def models(backend, net, seeds):
    return [nk.Sequential(*net(), seed=s, dtype="float64", backend=backend) for s in seeds]


def data(backend, shape, seed, labels=False):
    rng = np.random.default_rng(seed)
    if labels:
        return make(backend, rng.integers(0, N_OUT, size=shape))
    return make(backend, rng.normal(size=shape))


def batches(backend, steps, E, shared, seed=0):
    """Training batches: x (N, D) or (E, N, D) with labels (N,) or (E, N)."""
    lead = () if shared else (E,)
    return [(data(backend, lead + (ROWS, N_IN), (seed, s)),
             data(backend, lead + (ROWS,), (seed, s, 1), labels=True)) for s in range(steps)]


def member_batch(x, t, i, shared):
    return (x, t) if shared else (x[i, ...], t[i, ...])


def train(model, opt, xs_ts, members=False):
    for x, t in xs_ts:
        _, dy = losses.cross_entropy(model.forward(x, train=True), t, members=members)
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)


def assert_member_equals(ens, i, single, rtol=1e-10, what="params"):
    ens_arrays = getattr(ens, what)
    for key, value in getattr(single, what).items():
        np.testing.assert_allclose(host(ens_arrays[key])[i], host(value), rtol=rtol,
                                   atol=1e-14, err_msg=f"member {i}, {what} {key}")


# -- 1. the central equivalence ---------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True], ids=["per_member", "shared"])
@pytest.mark.parametrize("net", list(NETS))
def test_ensemble_trains_exactly_like_separate_models(backend, net, shared):
    E, seeds = 3, (11, 22, 33)
    singles = models(backend, NETS[net], seeds)
    ens = nk.Sequential.stack(singles)
    assert ens.ensemble == E
    steps = batches(backend, 20, E, shared)
    train(ens, optim.Adam(lr=1e-2), steps, members=True)
    for i, single in enumerate(singles):
        train(single, optim.Adam(lr=1e-2), [member_batch(x, t, i, shared) for x, t in steps])
        assert_member_equals(ens, i, single)
        assert_member_equals(ens, i, single, what="state")  # BatchNorm statistics per member
    # the members really were trained, and differently
    first = host(ens.params[next(k for k in ens.params if k.endswith(".W"))])
    assert not np.allclose(first[0], first[1])


@pytest.mark.parametrize("shared", [False, True], ids=["per_member", "shared"])
@pytest.mark.parametrize("net", list(NETS))
def test_one_backward_gives_each_member_its_own_gradients(backend, net, shared):
    E = 3
    singles = models(backend, NETS[net], (5, 6, 7))
    ens = nk.Sequential.stack(singles)
    (x, t), = batches(backend, 1, E, shared, seed=9)
    _, dy = losses.cross_entropy(ens.forward(x, train=True), t, members=True)
    dx = host(ens.backward(dy))
    assert dx.shape == tuple(x.shape)
    dx_sum = 0.0
    for i, single in enumerate(singles):
        xi, ti = member_batch(x, t, i, shared)
        _, dyi = losses.cross_entropy(single.forward(xi, train=True), ti)
        dxi = host(single.backward(dyi))
        assert_member_equals(ens, i, single, what="grads")
        assert set(ens.grads) == set(single.grads) == set(single.params)
        if shared:
            dx_sum = dx_sum + dxi
        else:
            np.testing.assert_allclose(dx[i], dxi, rtol=1e-10, atol=1e-15)
    if shared:  # one input feeds every member: its gradient is the members' sum
        np.testing.assert_allclose(dx, dx_sum, rtol=1e-10, atol=1e-15)


def test_evaluation_mode_uses_each_members_running_statistics(backend):
    singles = models(backend, batchnorm_net, (1, 2))
    ens = nk.Sequential.stack(singles)
    steps = batches(backend, 3, 2, shared=True)
    train(ens, optim.SGD(lr=0.1), steps, members=True)
    x = data(backend, (ROWS, N_IN), 99)
    y = host(ens.predict(x))
    for i, single in enumerate(singles):
        train(single, optim.SGD(lr=0.1), steps)
        np.testing.assert_allclose(y[i], host(single.predict(x)), rtol=1e-10)


# -- 2. per-member hyperparameters ------------------------------------------------------
LRS = [1e-3, 3e-3, 1e-2]
PER_MEMBER_OPTIMIZERS = {
    "adam": (lambda lr, wd: optim.Adam(lr=lr), None),
    "adam_l2": (lambda lr, wd: optim.Adam(lr=lr, weight_decay=wd), [0.0, 1e-2, 1e-1]),
    "sgd_momentum": (lambda lr, wd: optim.SGD(lr=lr, momentum=0.9, weight_decay=wd),
                     [0.0, 1e-3, 1e-1]),
    "sgd_nesterov": (lambda lr, wd: optim.SGD(lr=lr, momentum=0.5, nesterov=True,
                                              weight_decay=wd), [1e-2, 0.0, 1e-3]),
    "adamw": (lambda lr, wd: optim.AdamW(lr=lr, weight_decay=wd), [1e-2, 0.5, 0.0]),
    "rmsprop": (lambda lr, wd: optim.RMSprop(lr=lr, momentum=0.5, weight_decay=wd),
                [0.0, 1e-2, 1e-1]),
}


@pytest.mark.parametrize("name", list(PER_MEMBER_OPTIMIZERS))
def test_per_member_hyperparameters_equal_separate_runs(backend, name):
    factory, wds = PER_MEMBER_OPTIMIZERS[name]
    wds = wds or [0.0] * 3
    singles = models(backend, small_net, (1, 2, 3))
    ens = nk.Sequential.stack(singles)
    steps = batches(backend, 20, 3, shared=False)
    train(ens, factory(LRS, wds), steps, members=True)
    for i, single in enumerate(singles):
        train(single, factory(LRS[i], wds[i]), [member_batch(x, t, i, False) for x, t in steps])
        assert_member_equals(ens, i, single)


def test_gradient_clipping_is_per_member(backend):
    """clip_norm clips each member by its own norm, as if it trained alone (scalar lr too)."""
    singles = models(backend, small_net, (1, 2, 3))
    ens = nk.Sequential.stack(singles)
    steps = batches(backend, 10, 3, shared=False)
    train(ens, optim.Adam(lr=1e-2, clip_norm=0.05), steps, members=True)
    for i, single in enumerate(singles):
        train(single, optim.Adam(lr=1e-2, clip_norm=0.05),
              [member_batch(x, t, i, False) for x, t in steps])
        assert_member_equals(ens, i, single)


def test_per_member_lr_list_needs_one_value_per_member(backend):
    ens = nk.Sequential(*small_net(), ensemble=3, dtype="float64", backend=backend)
    (x, t), = batches(backend, 1, 3, shared=True)
    _, dy = losses.cross_entropy(ens.forward(x, train=True), t, members=True)
    ens.backward(dy)
    with pytest.raises(nk.ConfigError, match="lr has 2 per-member values"):
        optim.Adam(lr=[1e-3, 1e-2]).step(ens.params, ens.grads)
    with pytest.raises(nk.ConfigError, match="weight_decay has 4"):
        optim.SGD(lr=0.1, weight_decay=[0.0] * 4).step(ens.params, ens.grads)
    # one model has no members: a list of N_IN values must not become a per-row lr
    single = nk.Sequential(*small_net(), dtype="float64", backend=backend)
    _, dy = losses.cross_entropy(single.forward(x, train=True), t)
    single.backward(dy)
    with pytest.raises(nk.ConfigError, match="one model"):
        optim.Adam(lr=[1e-3] * N_IN).step(single.params, single.grads)


# -- 3. dropout -------------------------------------------------------------------------
def test_dropout_masks_are_independent_per_member(backend):
    E = 4
    ens = nk.Sequential(nk.Dropout(0.5), nk.Dense(N_IN, N_OUT), ensemble=E, seed=0,
                        dtype="float64", backend=backend)
    x = make(backend, np.ones((200, N_IN)))  # shared: every member sees the same rows
    out = host(ens.forward(x, train=True))
    assert out.shape == (E, 200, N_OUT)
    # a Dropout-only model with the same seed draws the same masks: its output of ones
    drop = nk.Sequential(nk.Dropout(0.5), ensemble=E, seed=0, dtype="float64", backend=backend,
                         input_shape=(N_IN,))
    mask = host(drop.forward(x, train=True))
    assert mask.shape == (E, 200, N_IN)
    for i in range(E):
        assert 0.35 < np.mean(mask[i] > 0) < 0.65
        for j in range(i):
            assert not np.array_equal(mask[i], mask[j]), (i, j)
    np.testing.assert_array_equal(host(drop.forward(x)), np.ones((200, N_IN)))  # no mask
    twins = nk.Sequential.stack([ens.member(0)] * 2)  # two identical members
    y_train, y_eval = host(twins.forward(x, train=True)), host(twins.forward(x))
    assert not np.allclose(y_train[0], y_train[1])
    np.testing.assert_array_equal(y_eval[0], y_eval[1])


def test_dropout_with_a_shared_input_backpropagates_through_every_mask(backend):
    ens = nk.Sequential(nk.Dropout(0.3), nk.Dense(N_IN, 5, "tanh"), nk.Dropout(0.5),
                        nk.Dense(5, N_OUT), ensemble=3, seed=4, backend=backend)
    x = data(backend, (6, N_IN), 1)
    t = data(backend, (6,), 2, labels=True)
    # eps 1e-5 (test_gradients' step): at 1e-6 round-off (~1e-16/eps) nears the tolerance
    # for some mask draws (JAX's stream gave 1.3e-6 there, 1.1e-7 at 1e-5)
    assert nk.gradcheck(ens, "cross_entropy", x, t, eps=1e-5) < 1e-6


# -- 4. fit -----------------------------------------------------------------------------
def classification(backend, n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_IN))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return make(backend, X), make(backend, y)


def test_fit_history_is_per_member_and_matches_separate_fits(backend):
    X, y = classification(backend)
    Xv, yv = classification(backend, n=32, seed=1)
    singles = models(backend, batchnorm_net, (1, 2, 3))
    ens = nk.Sequential.stack(singles)
    kw = dict(epochs=3, batch_size=16, validation_data=(Xv, yv), seed=5, progress=False)
    hist = nk.fit(ens, X, y, optimizer=optim.Adam(lr=[1e-2, 2e-2, 5e-3]), **kw)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(hist[key]) == 3
        assert all(isinstance(v, list) and len(v) == 3 for v in hist[key]), key
    for i, (single, lr) in enumerate(zip(singles, [1e-2, 2e-2, 5e-3], strict=True)):
        h = nk.fit(single, X, y, optimizer=optim.Adam(lr=lr), **kw)
        assert_member_equals(ens, i, single)
        assert_member_equals(ens, i, single, what="state")
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose([v[i] for v in hist[key]], h[key], rtol=1e-10)
        # validation metrics are the member's own evaluation
        vl, va = nk.evaluate(ens.member(i), Xv, yv)
        np.testing.assert_allclose([vl, va], [hist["val_loss"][-1][i],
                                              hist["val_accuracy"][-1][i]], rtol=1e-10)


def test_fit_regression_ensemble_reports_per_member_losses(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, N_IN))
    Y = X[:, :N_OUT] * 2.0 - 1.0
    ens = nk.Sequential(*small_net(), ensemble=2, dtype="float64", backend=backend)
    hist = nk.fit(ens, make(backend, X), make(backend, Y), loss="mse", epochs=4,
                  batch_size=8, validation_data=(make(backend, X), make(backend, Y)),
                  optimizer=optim.Adam(lr=1e-2), progress=False)
    losses_by_epoch = np.asarray(hist["loss"])
    assert losses_by_epoch.shape == (4, 2)
    assert (losses_by_epoch[-1] < losses_by_epoch[0]).all()
    vl, va = nk.evaluate(ens, make(backend, X), make(backend, Y), loss="mse")
    assert va is None and len(vl) == 2
    np.testing.assert_allclose(vl, hist["val_loss"][-1], rtol=1e-12)
    y = host(ens.predict(make(backend, X)))
    np.testing.assert_allclose(vl, ((y - Y) ** 2).mean(axis=(1, 2)), rtol=1e-10)


def bootstrap_fit(backend, singles, seed):
    X, y = classification(backend)
    ens = nk.Sequential.stack(singles)
    nk.fit(ens, X, y, optimizer=optim.SGD(lr=0.1), epochs=2, batch_size=16, seed=seed,
           bootstrap=True, progress=False)
    return ens


def test_bootstrap_gives_members_different_data_fixed_by_the_seed(backend):
    X, y = classification(backend)
    same = models(backend, small_net, (1,)) * 3  # three identical members
    plain = nk.Sequential.stack(same)
    nk.fit(plain, X, y, optimizer=optim.SGD(lr=0.1), epochs=2, batch_size=16, seed=0,
           progress=False)
    W = host(plain.params["0.W"])
    np.testing.assert_array_equal(W[0], W[1])  # same data, same start: no divergence
    boot = bootstrap_fit(backend, same, seed=0)
    W = host(boot.params["0.W"])
    for i in range(3):
        for j in range(i):
            assert not np.allclose(W[i], W[j]), (i, j)  # each member saw its own resample
    # the same seed draws the same resamples; another seed others
    again = host(bootstrap_fit(backend, same, seed=0).params["0.W"])
    np.testing.assert_array_equal(again, W)
    other = host(bootstrap_fit(backend, same, seed=1).params["0.W"])
    assert not np.allclose(other[0], W[0])
    # a member's resample depends on the seed and its index only, not on the other members
    a, b, c, b2 = models(backend, small_net, (1, 2, 3, 4))
    first = bootstrap_fit(backend, [a, b, c], seed=0)
    second = bootstrap_fit(backend, [a, b2, c], seed=0)
    for key in first.params:
        p, q = host(first.params[key]), host(second.params[key])
        np.testing.assert_array_equal(p[[0, 2]], q[[0, 2]])


def test_bootstrap_needs_an_ensemble(backend):
    X, y = classification(backend)
    model = nk.Sequential(*small_net(), backend=backend)
    with pytest.raises(nk.ConfigError):
        nk.fit(model, X, y, bootstrap=True, epochs=1, progress=False)


class ScriptedScore(nk.Callback):
    """Writes a per-member score for each epoch into the logs, for EarlyStopping to read."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float64)

    def on_epoch_end(self, run, logs):
        logs["score"] = self.scores[run.epoch].tolist()


class Snapshots(nk.Callback):
    """The parameters at the end of every epoch, as host copies."""

    def __init__(self):
        self.params = []

    def on_epoch_end(self, run, logs):
        self.params.append({k: host(v).copy() for k, v in run.model.params.items()})


# Lower is better. Member 0 never improves after epoch 0, member 1 improves until
# epoch 3, member 2 until epoch 5; with patience 2 they stop after epochs 2, 5 and 7.
SCORES = np.array([[1.0, 1.0, 1.0], [1.1, 0.9, 0.9], [1.2, 0.8, 0.8], [1.3, 0.7, 0.7],
                   [1.4, 0.75, 0.6], [1.5, 0.8, 0.5], [1.6, 0.9, 0.6], [1.7, 1.0, 0.7]]
                  + [[2.0, 2.0, 2.0]] * 12)
STOPS = [2, 5, 7]
BEST = [0, 3, 5]


def early_stopping_fit(backend, restore_best):
    X, y = classification(backend)
    ens = nk.Sequential(*batchnorm_net(), ensemble=3, dtype="float64", backend=backend)
    es = nk.EarlyStopping(monitor="score", patience=2, restore_best=restore_best)
    snaps, opt = Snapshots(), optim.Adam(lr=1e-2)
    hist = nk.fit(ens, X, y, optimizer=opt, epochs=len(SCORES), batch_size=16,
                  callbacks=[ScriptedScore(SCORES), snaps, es], progress=False)
    return ens, es, snaps.params, hist, opt


def test_early_stopping_freezes_each_member_and_ends_when_all_stopped(backend):
    ens, es, snaps, hist, opt = early_stopping_fit(backend, restore_best=False)
    assert len(hist.epochs) == STOPS[-1] + 1 == len(snaps)  # ended when all had stopped
    assert es.stopped_epoch == STOPS[-1]
    for key in snaps[0]:
        for i, stop in enumerate(STOPS):
            for e in range(1, len(snaps)):
                changed = not np.array_equal(snaps[e][key][i], snaps[e - 1][key][i])
                # a member trains until the epoch after which it stopped, then never again
                assert changed == (e <= stop), (key, i, e)
    final = {k: host(v).copy() for k, v in ens.params.items()}
    for key in final:
        np.testing.assert_array_equal(final[key], snaps[-1][key])
    # the mask ends with the fit: a later fit with the same optimizer trains every member
    assert opt.member_mask is None
    X, y = classification(backend)
    nk.fit(ens, X, y, optimizer=opt, epochs=1, batch_size=16, progress=False)
    W = host(ens.params["0.W"])
    for i in range(3):
        assert not np.array_equal(W[i], final["0.W"][i]), i


class StateSnapshots(nk.Callback):
    """BatchNorm running statistics at the end of every epoch, as host copies."""

    def __init__(self):
        self.state = []

    def on_epoch_end(self, run, logs):
        self.state.append({k: host(v).copy() for k, v in run.model.state.items()})


def test_stack_refuses_models_of_different_dtypes(backend):
    a = nk.Sequential(nk.Dense(3, 2), dtype="float64", backend=backend)
    b = nk.Sequential(nk.Dense(3, 2), dtype="float32", backend=backend)
    with pytest.raises(nk.ConfigError, match="one backend, device and dtype"):
        nk.Sequential.stack([a, b])


def test_a_stopped_member_keeps_its_batchnorm_statistics(backend):
    X, y = classification(backend)
    ens = nk.Sequential(*batchnorm_net(), ensemble=3, dtype="float64", backend=backend)
    es = nk.EarlyStopping(monitor="score", patience=2, restore_best=False)
    states = StateSnapshots()
    nk.fit(ens, X, y, optimizer=optim.Adam(lr=1e-2), epochs=len(SCORES), batch_size=16,
           callbacks=[ScriptedScore(SCORES), es, states], progress=False)
    assert ens.state
    for key in states.state[0]:
        for i, stop in enumerate(STOPS):
            for e in range(1, len(states.state)):
                changed = not np.array_equal(states.state[e][key][i],
                                             states.state[e - 1][key][i])
                assert changed == (e <= stop), (key, i, e)


def test_early_stopping_restores_each_members_best_epoch(backend):
    ens, es, snaps, _, _ = early_stopping_fit(backend, restore_best=True)
    for key, value in ens.params.items():
        for i, best in enumerate(BEST):
            np.testing.assert_array_equal(host(value)[i], snaps[best][key][i],
                                          err_msg=f"member {i} {key}")
    # BatchNorm statistics come back from the same epoch as the weights
    assert set(ens.state) == {"1.running_mean", "1.running_var", "4.running_mean",
                              "4.running_var"}


def test_early_stopping_on_real_validation_loss_stops_a_diverging_member(backend):
    """A member with a far too high learning rate stops early; the others keep going."""
    X, y = classification(backend)
    Xv, yv = classification(backend, n=32, seed=1)
    ens = nk.Sequential(*small_net(), ensemble=3, dtype="float64", backend=backend, seed=3)
    es = nk.EarlyStopping(monitor="val_loss", patience=1, min_delta=1e-3, restore_best=False)
    snaps = Snapshots()
    hist = nk.fit(ens, X, y, optimizer=optim.SGD(lr=[1e-7, 0.05, 0.05]), epochs=6,
                  batch_size=16, validation_data=(Xv, yv), callbacks=[snaps, es],
                  progress=False)
    assert len(hist.epochs) == 6  # the healthy members kept training
    W = [s["0.W"] for s in snaps.params]
    np.testing.assert_array_equal(W[-1][0], W[1][0])  # member 0 stopped after epoch 1
    assert not np.array_equal(W[-1][1], W[-2][1])


# -- 5. member and stack ----------------------------------------------------------------
def test_member_is_an_ordinary_model_with_the_members_outputs(backend):
    ens = nk.Sequential(*batchnorm_net(), ensemble=3, seed=2, dtype="float64", backend=backend)
    train(ens, optim.Adam(lr=1e-2), batches(backend, 3, 3, shared=True), members=True)
    x = data(backend, (ROWS, N_IN), 7)
    xs = data(backend, (3, ROWS, N_IN), 8)
    members = [ens.member(i) for i in range(3)]
    y_eval, y_per = host(ens.forward(x)), host(ens.forward(xs))
    y_train = host(ens.forward(x, train=True))  # batch statistics, per member
    for i, m in enumerate(members):
        assert m.ensemble is None and m.backend.name == ens.backend.name
        assert all(v.shape == ens.params[k].shape[1:] for k, v in m.params.items())
        np.testing.assert_allclose(host(m.forward(x)), y_eval[i], rtol=1e-12)
        np.testing.assert_allclose(host(m.forward(xs[i, ...])), y_per[i], rtol=1e-12)
        np.testing.assert_allclose(host(m.forward(x, train=True)), y_train[i], rtol=1e-12)
        assert_member_equals(ens, i, m, what="state")  # running statistics moved alike
    np.testing.assert_allclose(host(ens.member(-1).forward(x)), host(ens.forward(x))[2],
                               rtol=1e-12)
    # a copy: training the member leaves the ensemble alone
    m0 = ens.member(0)
    before = host(ens.params["0.W"]).copy()
    train(m0, optim.SGD(lr=1.0), batches(backend, 1, 1, shared=True))
    np.testing.assert_array_equal(host(ens.params["0.W"]), before)
    with pytest.raises(IndexError):
        ens.member(3)
    with pytest.raises(nk.ConfigError):
        ens.member(0).member(0)


def test_stack_of_members_round_trips(backend):
    ens = nk.Sequential(*norm_first_net(), ensemble=3, seed=2, dtype="float64", backend=backend)
    train(ens, optim.Adam(lr=1e-2), batches(backend, 2, 3, shared=False), members=True)
    again = nk.Sequential.stack([ens.member(i) for i in range(3)])
    assert again.ensemble == 3 and again.config()["layers"] == ens.config()["layers"]
    for key, value in ens.arrays().items():
        np.testing.assert_array_equal(again.arrays()[key], value)
    x = data(backend, (ROWS, N_IN), 3)
    np.testing.assert_array_equal(host(again.forward(x)), host(ens.forward(x)))


@pytest.mark.parametrize("other", [
    lambda: [nk.Dense(N_IN, 9, "tanh"), nk.Dense(9, N_OUT)],       # another width
    lambda: [nk.Dense(N_IN, 8, "relu"), nk.Dense(8, N_OUT)],        # another activation
    lambda: [nk.Dense(N_IN, 8, "tanh"), nk.Dropout(0.1), nk.Dense(8, N_OUT)],  # more layers
], ids=["width", "activation", "layers"])
def test_stack_refuses_different_architectures(backend, other):
    a = nk.Sequential(*small_net(), backend=backend)
    b = nk.Sequential(*other(), backend=backend)
    with pytest.raises(nk.ConfigError):
        nk.Sequential.stack([a, b])
    with pytest.raises(nk.ConfigError):
        nk.Sequential.stack([])


# -- 6. predictions and their summaries -------------------------------------------------
def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_predict_and_ensemble_summaries_agree_with_numpy(backend):
    ens = nk.Sequential(*small_net(), ensemble=4, seed=1, dtype="float64", backend=backend)
    x = data(backend, (10, N_IN), 0)
    y = ens.predict(x)
    assert tuple(y.shape) == (4, 10, N_OUT)
    np.testing.assert_allclose(host(ens.predict(x, batch_size=3)), host(y), rtol=1e-12)
    xs = data(backend, (4, 10, N_IN), 1)
    ys = host(ens.predict(xs, batch_size=4))
    assert ys.shape == (4, 10, N_OUT)
    np.testing.assert_allclose(ys[2], host(ens.member(2).predict(xs[2, ...])), rtol=1e-12)
    h = host(y)
    np.testing.assert_allclose(host(nk.ensemble_mean(y)), h.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(host(nk.ensemble_variance(y)), h.var(axis=0), rtol=1e-12)
    p = host(nk.mean_probabilities(y))
    np.testing.assert_allclose(p, softmax(h).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    big = nk.mean_probabilities(make(backend, h * 1e4))  # stable for huge logits
    assert np.isfinite(host(big)).all()


@pytest.mark.parametrize("shape", [(2, ROWS, N_IN), (5, ROWS, N_IN), (3, 2, ROWS, N_IN),
                                   (N_IN,)])
def test_ensemble_input_with_a_wrong_shape_is_refused(backend, shape):
    ens = nk.Sequential(*small_net(), ensemble=3, dtype="float64", backend=backend)
    with pytest.raises(nk.ShapeError):
        ens.forward(make(backend, np.zeros(shape)))
    with pytest.raises(nk.ShapeError):
        ens.predict(make(backend, np.zeros(shape)), batch_size=4)


# -- 7. finite differences ----------------------------------------------------------------
@pytest.mark.parametrize("shared", [False, True], ids=["per_member", "shared"])
def test_ensemble_gradients_match_finite_differences(backend, shared):
    ens = nk.Sequential(nk.Dense(3, 4, "tanh"), nk.BatchNorm(4), nk.Dense(4, 4, "gelu"),
                        nk.LayerNorm(4), nk.Dropout(0.2), nk.Dense(4, 2, "elu"),
                        nk.Dense(2, 3), ensemble=2, seed=0, backend=backend)
    lead = () if shared else (2,)
    x = data(backend, lead + (5, 3), 1)
    t = data(backend, lead + (5,), 2, labels=True)
    # eps 1e-5 (test_gradients' step): at 1e-6 round-off (~1e-16/eps) nears the tolerance
    # for some mask draws (JAX's stream gave 1.3e-6 there, 1.1e-7 at 1e-5)
    assert nk.gradcheck(ens, "cross_entropy", x, t, eps=1e-5) < 1e-6
    if shared:  # a regression loss too, with per-member targets
        assert nk.gradcheck(ens, "mse", x, data(backend, (2, 5, 3), 3)) < 1e-6
    assert ens.dtype == ens.backend.dtype("float32")  # gradcheck gives the model back as it was


# -- moving, configs and checkpoints --------------------------------------------------------
def test_to_moves_an_ensemble_between_backends_and_dtypes(backend):
    ens = nk.Sequential(*batchnorm_net(), ensemble=3, seed=1, dtype="float64", backend=backend)
    train(ens, optim.Adam(lr=1e-2), batches(backend, 2, 3, shared=True), members=True)
    x = data(backend, (ROWS, N_IN), 5)
    y = host(ens.predict(x))
    other = "numpy" if backend == "array_api_strict" else "array_api_strict"
    ens.to(backend=other)
    assert ens.ensemble == 3 and ens.backend.name == other
    np.testing.assert_allclose(host(ens.predict(data(other, (ROWS, N_IN), 5))), y, rtol=1e-12)
    ens.to(backend=backend, dtype="float32")
    assert all(v.dtype == ens.backend.dtype("float32") for v in ens.params.values())
    assert all(v.shape[0] == 3 for v in {**ens.params, **ens.state}.values())
    y32 = ens.predict(make(backend, host(x), dtype="float32"))
    assert y32.dtype == ens.backend.dtype("float32")
    np.testing.assert_allclose(host(y32), y, rtol=1e-4, atol=1e-5)
    # still trains as an ensemble after the move
    train(ens, optim.Adam(lr=[1e-3, 1e-2, 1e-1]),
          [(make(backend, host(xb), dtype="float32"), tb)
           for xb, tb in batches(backend, 2, 3, shared=False)], members=True)


def test_config_and_checkpoint_arrays_rebuild_the_ensemble(backend, tmp_path):
    ens = nk.Sequential(*batchnorm_net(), ensemble=3, seed=1, dtype="float64", backend=backend)
    opt = optim.Adam(lr=[1e-3, 1e-2, 3e-2])
    steps = batches(backend, 6, 3, shared=False)
    train(ens, opt, steps[:3], members=True)
    cfg = json.loads(json.dumps(ens.config()))
    assert cfg["ensemble"] == 3
    checkpoint.save_arrays(tmp_path / "model.npz", ens.arrays())
    checkpoint.save_arrays(tmp_path / "optim.npz", opt.state_arrays())

    restored = nk.Sequential.from_config(cfg, backend=backend)
    assert restored.ensemble == 3 and restored.dtype == ens.dtype
    restored.load_arrays(checkpoint.load_arrays(tmp_path / "model.npz"))
    opt2 = optim.Adam(lr=json.loads(json.dumps(opt.config()))["lr"])
    opt2.load_state_arrays(checkpoint.load_arrays(tmp_path / "optim.npz"), restored.params)
    x = data(backend, (ROWS, N_IN), 5)
    np.testing.assert_array_equal(host(restored.predict(x)), host(ens.predict(x)))
    # training resumed from the checkpoint continues exactly where the original goes
    train(ens, opt, steps[3:], members=True)
    train(restored, opt2, steps[3:], members=True)
    for key, value in ens.arrays().items():
        np.testing.assert_allclose(restored.arrays()[key], value, rtol=1e-12, err_msg=key)


def test_arrays_are_snapshots_and_load_arrays_copies(backend):
    """Checkpoint arrays must not alias live parameters that optimizers update in place."""
    ens = nk.Sequential(*small_net(), ensemble=2, dtype="float64", backend=backend)
    opt = optim.Adam(lr=0.1)
    steps = batches(backend, 3, 2, shared=True)
    train(ens, opt, steps[:1], members=True)  # the optimizer now owns its parameter buffers
    saved = ens.arrays()
    before = {k: v.copy() for k, v in saved.items()}
    other = nk.Sequential(*small_net(), ensemble=2, dtype="float64", backend=backend)
    other.load_arrays(saved)
    train(ens, opt, steps[1:], members=True)
    train(other, optim.Adam(lr=[0.1, 0.2]), steps, members=True)  # updates in place per array
    for key in saved:
        np.testing.assert_array_equal(saved[key], before[key], err_msg=key)
    with pytest.raises(nk.ShapeError):  # another number of members
        nk.Sequential(*small_net(), ensemble=3, backend=backend).load_arrays(saved)
    with pytest.raises(nk.ShapeError):
        nk.Sequential(*small_net(), backend=backend).load_arrays(saved)
