"""nnkernel's side of a benchmark: its public API, as users run it (`nnkernel.fit`'s step)."""

from __future__ import annotations

import numpy as np

from .common import N_BATCHES, Step, cycle, image_inputs, inputs, matmul_shapes, random_arrays, step


def nk_backend(case):
    return "cupy" if case.get("device", "cpu") == "gpu" else "numpy"


def nk_mlp_model(nk, case, ensemble=None, seed=0):
    from nnkernel.nn.builders import mlp

    sizes = case["sizes"]
    return mlp(sizes[0], sizes[1:-1], sizes[-1], activation=case.get("activation", "relu"),
               seed=seed, dtype=case.get("dtype", "float32"), backend=nk_backend(case),
               ensemble=ensemble)


def nk_optimizer(nk, case):
    if case.get("optimizer", "adam") == "adam":
        return nk.optim.Adam(lr=case.get("lr", 1e-3))
    return nk.optim.SGD(lr=case.get("lr", 0.01))


def nk_train_step(nk, model, opt, case, loss=None):
    """One step of `nnkernel.fit`'s loop (`nnkernel.train.step.train_step`): forward, fused
    loss, backward without dx, update.

    ``loss(y, t, **options) -> (value, dy)`` defaults to the case's cross-entropy (labels
    checked once, as fit does: num_check=False) or squared error.
    """
    import functools

    from nnkernel.train.step import train_step

    if loss is None and case.get("loss", "ce") == "ce":
        loss = functools.partial(nk.losses.cross_entropy, num_check=False)
    elif loss is None:
        loss = nk.losses.mse

    def train(x, t):
        train_step(model, loss, opt, (x, t))

    return train


def nk_data(model, case, rows=None):
    xs, ts = inputs(case, case["sizes"][0], rows)
    be = model.backend
    return cycle([(be.asarray(x), be.asarray(t)) for x, t in zip(xs, ts, strict=True)])


def nk_sync(case):
    import nnkernel as nk

    be = nk.Backend(nk_backend(case))
    return be.synchronize


@step("mlp", "nnkernel")
def _nk_mlp(case):
    import nnkernel as nk

    model = nk_mlp_model(nk, case)
    train = nk_train_step(nk, model, nk_optimizer(nk, case), case)
    data = nk_data(model, case)
    return Step(lambda: train(*data()), nk_sync(case))


@step("ensemble", "nnkernel", "nnkernel-loop")
def _nk_ensemble(case):
    """E members as one stacked model (impl nnkernel) or as E separate models (nnkernel-loop)."""
    import nnkernel as nk

    E = case["members"]
    if case["impl"] == "nnkernel":
        model = nk_mlp_model(nk, case, ensemble=E)
        train = nk_train_step(nk, model, nk_optimizer(nk, case), case)
        data = nk_data(model, case)
        return Step(lambda: train(*data()), nk_sync(case))
    models = [nk_mlp_model(nk, case, seed=i) for i in range(E)]
    trains = [nk_train_step(nk, m, nk_optimizer(nk, case), case) for m in models]
    data = nk_data(models[0], case)

    def run():
        x, t = data()
        for train in trains:
            train(x, t)

    return Step(run, nk_sync(case))


@step("conv", "nnkernel")
def _nk_conv(case):
    """The CNN of `nnkernel train --conv` (nn.builders.cnn), stepped as fit steps it."""
    import nnkernel as nk
    from nnkernel.nn.builders import cnn

    model = cnn(case["image"], case["channels"], case["hidden"], case["classes"],
                activation=case.get("activation", "relu"), dtype=case.get("dtype", "float32"),
                backend=nk_backend(case))
    train = nk_train_step(nk, model, nk_optimizer(nk, case), case)
    xs, ts = image_inputs(case)
    be = model.backend
    data = cycle([(be.asarray(x), be.asarray(t)) for x, t in zip(xs, ts, strict=True)])
    return Step(lambda: train(*data()), nk_sync(case))


def _nk_arrays(case, *shapes):
    import nnkernel as nk

    be = nk.Backend(nk_backend(case))
    return be, [be.asarray(a) for a in random_arrays(case, *shapes)]


@step("matmul", "nnkernel")
@step("bmm", "nnkernel")
def _nk_matmul(case):
    be, (a, b) = _nk_arrays(case, *matmul_shapes(case))
    matmul = be.xp.matmul
    return Step(lambda: matmul(a, b), be.synchronize)


@step("dense_fwd", "nnkernel")
@step("dense_fwd_bwd", "nnkernel")
def _nk_dense(case):
    import nnkernel as nk

    n_in, n_out = case["n_in"], case["n_out"]
    model = nk.Sequential(nk.Dense(n_in, n_out, activation="relu"),
                          dtype=case.get("dtype", "float32"), backend=nk_backend(case))
    be, xs = _nk_arrays(case, *[(case["batch"], n_in)] * N_BATCHES)
    _, (dy,) = _nk_arrays(case, (case["batch"], n_out))
    data = cycle(xs)
    if case["kind"] == "dense_fwd":
        return Step(lambda: model.forward(data(), train=True), be.synchronize)

    def run():
        model.forward(data(), train=True)
        model.backward(dy, input_grad=True)

    return Step(run, be.synchronize)


@step("softmax_ce", "nnkernel")
def _nk_softmax_ce(case):
    import nnkernel as nk

    be, logits = _nk_arrays(case, *[(case["batch"], case["classes"])] * N_BATCHES)
    rng = np.random.default_rng(1)
    labels = be.asarray(rng.integers(0, case["classes"], case["batch"]))
    data = cycle(logits)
    return Step(lambda: nk.losses.cross_entropy(data(), labels, num_check=False),
                be.synchronize)


@step("adam", "nnkernel")
def _nk_adam(case):
    import nnkernel as nk

    model = nk_mlp_model(nk, case)
    rng = np.random.default_rng(1)
    grads = {k: model.backend.asarray(rng.standard_normal(v.shape).astype(np.dtype(
        case.get("dtype", "float32")))) for k, v in model.params.items()}
    opt = nk.optim.Adam(lr=1e-3)
    return Step(lambda: opt.step(model.params, grads), model.backend.synchronize)
