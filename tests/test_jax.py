"""JAX: the backend object (namespace, devices, RNG, 64-bit mode, tracers) and the compiled step.

The compiled step is `fit`'s step traced by jax.jit; it must give the numbers
the eager step gives (float64, 1e-12) with every kind of state a step carries:
Adam's moments and bias correction, SGD's first momentum step, BatchNorm's
running statistics, Dropout masks, a schedule, clipping, an ensemble.
"""

from __future__ import annotations

import functools
import types

import numpy as np
import pytest
from conftest import host, jax_or_skip

import nnkernel as nk
from nnkernel.errors import ConfigError, DeviceError, DTypeError
from nnkernel.train.compiled import CompiledStep
from nnkernel.train.loop import correct_count

jax = jax_or_skip()
jnp = jax.numpy


def blobs(n=70, seed=0, d=4, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return rng.standard_normal((classes, d))[y] * 2 + rng.standard_normal((n, d)), y


def net(dtype="float64", dropout=0.2, batchnorm=True, **kw):
    """BatchNorm first: a Dense bias *before* BatchNorm has an analytically zero gradient,
    whose rounding noise (~1e-17, summed in another order by XLA) Adam divides by eps = 1e-8,
    so that one parameter would differ by ~1e-11 between any two correct implementations."""
    layers = [nk.BatchNorm(4)] if batchnorm else []
    layers += [nk.Dense(4, 16, "tanh")]
    layers += [nk.Dropout(dropout)] if dropout else []
    layers += [nk.Dense(16, 3)]
    return nk.Sequential(*layers, backend="jax", dtype=dtype, seed=1, **kw)


# -- the backend object -------------------------------------------------------------------------
def test_the_jax_namespace_means_the_jax_backend_never_numpy():
    model = nk.Sequential(nk.Dense(3, 2), backend=jnp)
    assert model.backend.name == "jax"
    out = model.forward(jnp.ones((4, 3), dtype=jnp.float32))
    assert isinstance(out, jax.Array) and nk.backend.backend_name_of(out) == "jax"
    value, dy = nk.losses.cross_entropy(out, jnp.asarray([0, 1, 1, 0]))
    assert isinstance(dy, jax.Array)  # the generic kernels, not NumPy's in-place twin


def test_an_unknown_namespace_is_refused_naming_the_supported_ones():
    fake = types.ModuleType("sparse")
    with pytest.raises(DeviceError, match="unsupported array namespace 'sparse'") as err:
        nk.Sequential(nk.Dense(2, 2), backend=fake)
    for name in ("numpy", "torch", "jax", "dask"):
        assert name in str(err.value)


def test_devices_are_jax_devices_and_a_missing_gpu_says_so():
    be = nk.Backend("jax")
    assert be.device == jax.devices("cpu")[0] and be.device_name == "cpu"
    assert nk.Backend("jax", jax.devices("cpu")[0]).device == be.device
    if not any(d.platform == "gpu" for d in jax.devices()):
        with pytest.raises(DeviceError, match="CUDA jaxlib"):
            nk.Backend("jax", "gpu:0")
    x = be.asarray(np.arange(6.0).reshape(2, 3))
    assert x.device == be.device
    be.synchronize()  # waits for every live array of the device, without error


def test_float64_without_64_bit_mode_is_refused_not_computed_in_float32():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(DTypeError, match="jax_enable_x64"):
            nk.Sequential(nk.Dense(2, 2), backend="jax", dtype="float64")
        model = nk.Sequential(nk.Dense(4, 3), backend="jax")  # float32 still works
        X, y = blobs(20)
        nk.fit(model, X.astype(np.float32), y, epochs=1, batch_size=10, progress=False)
        assert model.backend.label_dtype == jnp.int32  # JAX's widest without x64: no warning
    finally:
        jax.config.update("jax_enable_x64", True)
    model = nk.Sequential(nk.Dense(2, 2), backend="jax", dtype="float64")
    assert model.store.flat.dtype == jnp.float64


def test_random_streams_are_named_by_seed_words_and_drawn_on_the_device():
    be = nk.Backend("jax")
    a, b, c = be.random((3, 0, 5)), be.random((3, 0, 5)), be.random((3, 0, 6))
    ua, ub, uc = (r.uniform((4, 5), jnp.float32) for r in (a, b, c))
    assert isinstance(ua, jax.Array) and ua.device == be.device
    np.testing.assert_array_equal(host(ua), host(ub))
    assert not np.array_equal(host(ua), host(uc))
    assert not np.array_equal(host(ua), host(a.uniform((4, 5), jnp.float32)))  # split per draw
    a.reseed((3, 0, 5))
    np.testing.assert_array_equal(host(a.uniform((4, 5), jnp.float32)), host(ua))
    perm = host(be.random(7).permutation(50))
    np.testing.assert_array_equal(np.sort(perm), np.arange(50))


def test_tracers_pass_the_checks_and_parameter_assignment():
    """A jitted function may set parameters from traced values and run the model."""
    model = net(dropout=0.0, batchnorm=False)
    x = jnp.ones((5, 4))

    @jax.jit
    def forward_with(w):
        saved = model.store.flat
        try:
            model.params["0.W"] = w  # a tracer: converted and spliced into the flat buffer
            return model.forward(x)
        finally:  # views made here would be tracers too: put the concrete ones back
            model.store.set_flat(saved)

    w = jnp.full((4, 16), 0.1)
    expected = model.copy()
    expected.params["0.W"] = np.full((4, 16), 0.1)
    np.testing.assert_allclose(host(forward_with(w)), host(expected.forward(x)), rtol=1e-14)
    assert not isinstance(model.params["0.W"], jax.core.Tracer)  # nothing leaked


# -- the compiled step ----------------------------------------------------------------------------
def fit_both(make_model, make_opt, X, y, **kw):
    """(eager model, history), (compiled model, history) from the same seed."""
    runs = []
    for compile in (False, True):
        model, opt = make_model(), make_opt()
        history = nk.fit(model, X, y, optimizer=opt, progress=False, compile=compile, **kw)
        model.optimizer_state = opt.state_arrays()  # what a checkpoint saves
        runs.append((model, history))
    return runs


def assert_same_training(runs, rtol=1e-12, atol=1e-12):
    (eager, h_eager), (compiled, h_compiled) = runs
    for key in ("loss", "accuracy", "val_loss"):
        if key in h_eager:
            np.testing.assert_allclose(h_compiled[key], h_eager[key], rtol=rtol, atol=atol)
    arrays = eager.arrays()
    for key, value in compiled.arrays().items():
        np.testing.assert_allclose(value, arrays[key], rtol=rtol, atol=atol, err_msg=key)
    np.testing.assert_allclose(host(compiled.store.grad), host(eager.store.grad), rtol=rtol,
                               atol=atol)
    assert compiled.optimizer_state.keys() == eager.optimizer_state.keys()
    for key, value in eager.optimizer_state.items():
        np.testing.assert_allclose(compiled.optimizer_state[key], value, rtol=rtol, atol=atol,
                                   err_msg=key)


@pytest.fixture(params=["flat", "per_key"])
def layout(request, monkeypatch):
    """The compiled step's two layouts: flat buffers (small models), per-key arrays (large)."""
    import nnkernel.train.compiled as compiled

    monkeypatch.setattr(compiled, "PER_KEY_FROM", 0 if request.param == "per_key" else 10**12)
    return request.param


def test_compiled_adam_steps_equal_eager_steps_with_batchnorm_and_dropout(layout):
    """20 Adam steps (4 epochs of 5 shuffled batches, the last one shorter), float64."""
    X, y = blobs(70)
    runs = fit_both(net, lambda: nk.optim.Adam(lr=0.01), X, y, epochs=4, batch_size=16,
                    validation_data=(X[:20], y[:20]))  # evaluated between compiled steps
    assert_same_training(runs)
    eager, compiled = runs[0][0], runs[1][0]
    assert compiled.store.flat.dtype == jnp.float64
    assert not np.allclose(eager.arrays()["0.running_mean"], 0.0)  # the statistics moved
    opt_eager, opt_compiled = (nk.optim.Adam(lr=0.01) for _ in range(2))
    for model, opt in ((eager, opt_eager), (compiled, opt_compiled)):
        nk.fit(model, X, y, epochs=1, batch_size=16, optimizer=opt, progress=False)
    assert opt_compiled.t == opt_eager.t == 5


def test_the_step_is_traced_once_per_batch_shape(layout):
    X, y = blobs(90)
    model, opt = net(), nk.optim.Adam(lr=0.01)
    step = CompiledStep(model, nk.losses.cross_entropy, opt,
                        score=functools.partial(correct_count, model.xp, False))
    be = model.backend
    for i in range(6):  # five full batches, then a shorter one
        rows = slice(16 * i, 16 * i + 16) if i < 5 else slice(80, 90)
        value, correct = step((be.asarray(X[rows]), be.asarray(y[rows])), seed=(0, 0, i))
    assert step.traces == 2 and step.per_key == (layout == "per_key")
    assert opt.t == 6 and opt.flat_state(model.store).uniform == 6
    assert 0 <= float(correct) <= 10 and np.isfinite(float(value))
    flat = host(model.store.flat)  # the views are made when looked at, from the new buffer
    a, b = model.store.bounds["1.W"]
    np.testing.assert_array_equal(host(model.params["1.W"]).reshape(-1), flat[a:b])
    assert not isinstance(model.params["1.W"], jax.core.Tracer)
    before = host(model.params["1.W"]).copy()  # an eager step continues from the same state
    out = model.forward(be.asarray(X[:16]), train=True)
    _, dy = nk.losses.cross_entropy(out, be.asarray(y[:16]))
    model.backward(dy, input_grad=False)
    opt.step(model.params, model.grads)
    assert opt.t == 7 and not np.array_equal(host(model.params["1.W"]), before)


@pytest.mark.parametrize("case", ["sgd_momentum", "nesterov_clip_decay", "rmsprop_centered",
                                  "adamw_schedule", "adam_flush_subnormals"])
def test_compiled_steps_equal_eager_steps_for_every_optimizer(case, layout):
    make_opt = {
        "sgd_momentum": lambda: nk.optim.SGD(lr=0.05, momentum=0.9, dampening=0.1),
        "nesterov_clip_decay": lambda: nk.optim.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                                    weight_decay=1e-3, clip_norm=0.5),
        "rmsprop_centered": lambda: nk.optim.RMSprop(lr=0.01, centered=True, momentum=0.5),
        "adamw_schedule": lambda: nk.optim.AdamW(lr=0.02, schedule=nk.optim.StepDecay(7, 0.5)),
        "adam_flush_subnormals": lambda: nk.optim.Adam(lr=0.01, flush_subnormals=True),
    }[case]
    X, y = blobs(64)
    assert_same_training(fit_both(lambda: net(dropout=0.1), make_opt, X, y, epochs=5,
                                  batch_size=16))


def test_compiled_regression_with_sample_weights():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((48, 4))
    Y = np.tanh(X @ rng.standard_normal((4, 3)))

    def make():
        return nk.Sequential(nk.Dense(4, 8, "gelu"), nk.LayerNorm(8), nk.Dense(8, 3),
                             backend="jax", dtype="float64", seed=3)

    assert_same_training(fit_both(make, lambda: nk.optim.Adam(lr=0.01), X, Y, loss="huber",
                                  epochs=3, batch_size=16, sample_weight=rng.uniform(0, 2, 48)))


def test_compiled_ensemble_with_per_member_learning_rates(layout):
    X, y = blobs(64)
    assert_same_training(fit_both(lambda: net(ensemble=3),
                                  lambda: nk.optim.Adam(lr=[0.01, 0.02, 0.005]), X, y,
                                  epochs=3, batch_size=16))


def test_compiled_float32_stays_close_to_eager():
    X, y = blobs(64)
    runs = fit_both(lambda: net(dtype="float32"), lambda: nk.optim.Adam(lr=0.01),
                    X.astype(np.float32), y, epochs=3, batch_size=16)
    assert runs[1][0].store.flat.dtype == jnp.float32
    assert_same_training(runs, rtol=1e-4, atol=1e-5)


def test_compile_on_a_backend_that_cannot_is_refused_with_the_fix():
    model = nk.Sequential(nk.Dense(4, 3))
    X, y = blobs(20)
    with pytest.raises(ConfigError, match="backend='jax'"):
        nk.fit(model, X, y, epochs=1, batch_size=10, compile=True, progress=False)


def test_a_compiled_step_needs_every_parameter_at_one_step_count():
    model, opt = net(dropout=0.0), nk.optim.Adam(lr=0.01)
    X, y = blobs(16)
    out = model.forward(model.backend.asarray(X), train=True)
    _, dy = nk.losses.cross_entropy(out, model.backend.asarray(y))
    model.backward(dy)
    grads = dict(model.grads)
    del grads["1.b"]  # a frozen parameter: its count falls behind
    opt.step(model.params, grads)
    with pytest.raises(ConfigError, match="different steps"):
        CompiledStep(model, nk.losses.cross_entropy, opt)((model.backend.asarray(X),
                                                           model.backend.asarray(y)))
