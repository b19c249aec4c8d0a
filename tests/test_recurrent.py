"""RNN, LSTM and GRU: float64 finite differences of every gradient, lengths, states, errors.

Gradients: `nk.gradcheck` of each layer in a model (both directions, T = 1,
sequences and final-step outputs, a Dense folded over (B, T, H) after it), and a
directional check of `Recurrent.apply` for what gradcheck cannot reach: lengths,
an initial state in and the final state out. Padded steps must change neither an
output nor a gradient. The NumPy twin's steps must give the reference's numbers,
and the layers must run on CuPy's Python paths (the test double). torch parity is in
tests/test_recurrent_torch.py, the CUDA sources in tests/test_recurrent_cuda_source.py.
"""

from __future__ import annotations

import array_api_compat
import array_api_compat.numpy as np_compat
import numpy as np
import pytest
from conftest import host, jax_or_skip, make
from cupy_double import fake_cupy  # noqa: F401 - the fixture

import nnkernel as nk
from nnkernel.errors import ConfigError, DTypeError, ShapeError
from nnkernel.kernels import Kernels
from nnkernel.kernels.numpy import NumpyKernels
from nnkernel.nn.layer import layer_from_config

EVERY_BACKEND = ("jax",)  # JAX joins this module's backends; Dask's gradient checks: test_dask.py

EPS = 1e-5  # truncation ~ε² and round-off ~1e-16 |L| / ε both stay near 1e-8 of a gradient
TOL = 1e-6  # largest relative error along random directions (`directional_check`)
# nk.gradcheck checks small arrays element by element: through saturated gates a few entries
# are ~1e-4, where the difference quotient's round-off (~1e-10) is 1e-6 of the entry itself.
# A wrong or missing term gives errors of 1e-3 and more.
TOL_ELEMENTWISE = 1e-5
B, N_IN, H = 3, 3, 4

CELLS = {
    "rnn_tanh": lambda n, h, **kw: nk.RNN(n, h, **kw),
    "rnn_relu": lambda n, h, **kw: nk.RNN(n, h, activation="relu", **kw),
    "lstm": lambda n, h, **kw: nk.LSTM(n, h, **kw),
    "gru": lambda n, h, **kw: nk.GRU(n, h, **kw),
}


def probe(y, t, *, members=False):
    """L = Σ y ⊙ t: every output weighed differently."""
    xp = array_api_compat.array_namespace(y)
    return xp.sum(y * t), t


def gradcheck(backend, layers, T, seed=0):
    model = nk.Sequential(*layers, seed=seed, dtype="float64", backend=backend)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((B, T, N_IN))
    r = rng.standard_normal(model.forward(make(backend, x)).shape)
    assert nk.gradcheck(model, probe, x, make(backend, r), eps=EPS) < TOL_ELEMENTWISE


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gradients_of_every_parameter_and_the_input(backend, cell, bidirectional):
    layer = CELLS[cell](N_IN, 3, bidirectional=bidirectional, return_sequences=True)
    width = (2 if bidirectional else 1) * 3
    gradcheck(backend, [layer, nk.Dense(width, 2)], T=3)  # Dense folds over (B, T, width)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_gradients_of_one_step_and_of_the_final_state_output(backend, cell):
    gradcheck(backend, [CELLS[cell](N_IN, H, bidirectional=True)], T=1)
    gradcheck(backend, [CELLS[cell](N_IN, H), nk.Dense(H, 2)], T=3)  # y = the last step


def test_stacked_layers_differentiate_through_each_other(backend):
    gradcheck(backend, [nk.GRU(N_IN, 2, bidirectional=True, return_sequences=True),
                        nk.LSTM(4, 2, bidirectional=True)], T=2)


# -- lengths, initial and final states through `apply` ----------------------------------------
def directional_check(loss_and_grads, inputs, rng, eps=EPS, directions=3):
    """Compare ⟨∇L, v⟩ with (L(a + εv) − L(a − εv)) / 2ε for each input array a."""
    _, grads = loss_and_grads(inputs)
    for name, value in inputs.items():
        for _ in range(directions):
            v = rng.standard_normal(value.shape)
            plus = loss_and_grads({**inputs, name: value + eps * v})[0]
            minus = loss_and_grads({**inputs, name: value - eps * v})[0]
            numeric = (plus - minus) / (2 * eps)
            exact = float(np.sum(grads[name] * v))
            assert abs(exact - numeric) <= TOL * max(abs(exact), abs(numeric), 1e-8), name


def state_names(layer):
    return ["h0", "c0"] if isinstance(layer, nk.LSTM) else ["h0"]


def apply_loss(backend, layer, lengths, T, seed=0):
    """L = Σ y ⊙ R + Σ final ⊙ S with ``apply``; returns (loss(inputs) -> (L, grads), inputs)."""
    rng = np.random.default_rng(seed)
    D = 2 if layer.bidirectional else 1
    model = nk.Sequential(layer, dtype="float64", backend=backend, seed=seed)
    inputs = {n: host(model.params[f"0.{n}"]) for n in layer.param_names}
    inputs["x"] = rng.standard_normal((B, T, N_IN))
    for n in state_names(layer):
        inputs[n] = rng.standard_normal((D, B, H))
    out_shape = (B, T, D * H) if layer.return_sequences else (B, D * H)
    R = rng.standard_normal(out_shape)
    S = [rng.standard_normal((D, B, H)) for _ in state_names(layer)]

    def loss(values):
        arr = {k: make(backend, v) for k, v in values.items()}
        state = tuple(arr[n] for n in state_names(layer))
        y, final, backprop = layer.apply(
            {n: arr[n] for n in layer.param_names}, arr["x"], lengths=lengths,
            initial_state=state if len(state) > 1 else state[0])
        final = final if isinstance(final, tuple) else (final,)
        value = float(np.sum(host(y) * R)) + sum(float(np.sum(host(f) * s))
                                                for f, s in zip(final, S, strict=True))
        d_final = tuple(make(backend, s) for s in S)
        dx, d_initial, grads = backprop(make(backend, R),
                                        d_final if len(S) > 1 else d_final[0])
        d_initial = d_initial if isinstance(d_initial, tuple) else (d_initial,)
        out = {n: host(g) for n, g in grads.items()}
        out["x"] = host(dx)
        out.update({n: host(d) for n, d in zip(state_names(layer), d_initial, strict=True)})
        return value, out

    return loss, inputs


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("sequences", [True, False], ids=["sequences", "last"])
def test_gradients_with_lengths_initial_and_final_state(backend, cell, sequences):
    layer = CELLS[cell](N_IN, H, bidirectional=True, return_sequences=sequences)
    loss, inputs = apply_loss(backend, layer, np.array([4, 1, 3]), T=4)
    directional_check(loss, inputs, np.random.default_rng(5))


def test_gradients_with_a_zero_length_sequence():
    layer = nk.LSTM(N_IN, H, bidirectional=True, return_sequences=True)
    loss, inputs = apply_loss("numpy", layer, np.array([0, 2, 3]), T=3)
    directional_check(loss, inputs, np.random.default_rng(6))
    _, grads = loss(inputs)
    # nothing of sequence 0 is read: its dx is 0 and its initial state's gradient is S
    assert np.all(grads["x"][0] == 0.0)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_padded_steps_change_no_output_and_no_gradient(cell):
    layer = CELLS[cell](N_IN, H, bidirectional=True, return_sequences=True)
    model = nk.Sequential(layer, dtype="float64", seed=1)
    rng = np.random.default_rng(2)
    lengths = np.array([5, 2, 3])
    x = rng.standard_normal((B, 5, N_IN))
    dy = rng.standard_normal((B, 5, 2 * H))
    runs = []
    for padding in (0.0, 1e3, np.nan):
        xp_ = x.copy()
        for b, n in enumerate(lengths):
            xp_[b, n:] = padding
        dyp = dy.copy()
        dyp[1, 2:] = padding   # dy at padded steps goes nowhere either
        y = model.forward(xp_, train=True, lengths=lengths)
        dx = model.backward(dyp)
        runs.append((y, dx, {k: g.copy() for k, g in model.grads.items()}))
    for y, dx, grads in runs[1:]:
        np.testing.assert_array_equal(y, runs[0][0])
        np.testing.assert_array_equal(dx, runs[0][1])
        for k in grads:
            np.testing.assert_array_equal(grads[k], runs[0][2][k])
    y, dx, _ = runs[0]
    assert np.all(y[1, 2:] == 0.0) and np.all(dx[1, 2:] == 0.0)
    # each sequence alone, cut to its length, gives the same outputs and final state
    for b, n in enumerate(lengths):
        alone = model(x[b:b + 1, :n])
        np.testing.assert_allclose(y[b:b + 1, :n], alone, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.predict(x, batch_size=2, lengths=lengths), y, rtol=1e-12,
                               atol=1e-14)  # BLAS may block a smaller batch differently


def test_device_lengths_need_no_host_read(backend):
    layer = nk.GRU(N_IN, H, bidirectional=True, return_sequences=True)
    model = nk.Sequential(layer, dtype="float64", backend=backend)
    x = np.random.default_rng(0).standard_normal((B, 4, N_IN))
    on_host = model(make(backend, x), lengths=np.array([4, 2, 1]))
    on_device = model(make(backend, x), lengths=make(backend, np.array([4, 2, 1])))
    np.testing.assert_array_equal(host(on_host), host(on_device))


def test_jax_runs_the_reference_loops():
    jax_or_skip()
    x = np.random.default_rng(0).standard_normal((B, 4, N_IN))
    outs = []
    for backend in ("numpy", "jax"):
        model = nk.Sequential(nk.GRU(N_IN, H, bidirectional=True, return_sequences=True),
                              nk.LSTM(2 * H, 2), dtype="float64", backend=backend, seed=0)
        y = model.forward(make(backend, x), train=True, lengths=np.array([4, 1, 2]))
        dx = model.backward(make(backend, np.ones((B, 2))))
        outs.append([host(y), host(dx), *(host(g) for g in model.grads.values())])
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# -- states in a model: RecurrentState, truncated BPTT ----------------------------------------
def two_layer_model(backend="numpy"):
    return nk.Sequential(nk.LSTM(N_IN, H, return_sequences=True),
                         nk.GRU(H, 3, return_sequences=True), nk.Dense(3, 2),
                         dtype="float64", backend=backend, seed=3)


def test_windows_carrying_the_state_equal_the_whole_sequence(backend):
    model = two_layer_model(backend)
    x = make(backend, np.random.default_rng(0).standard_normal((B, 7, N_IN)))
    whole = host(model(x))
    state = nk.RecurrentState()
    first = host(model(x[:, :3, :], initial_state=state))
    assert sorted(state.final) == ["0", "1"]  # by layer path
    h, c = state.final["0"]
    assert tuple(h.shape) == tuple(c.shape) == (1, B, H)
    state = state.next()
    second = host(model(x[:, 3:, :], initial_state=state))
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12,
                               atol=1e-14)


def test_the_gradient_of_a_window_stops_at_its_initial_state(backend):
    """Truncated BPTT: the second window's gradients treat the carried state as a constant,
    and dL/d(initial state) lands in ``state.grads``."""
    model = two_layer_model(backend)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, 5, N_IN))
    carry = nk.RecurrentState()
    model(make(backend, x[:, :2]), initial_state=carry)
    start = carry.next()
    r = rng.standard_normal((B, 3, 2))

    def loss(initial):
        s = nk.RecurrentState(initial)
        y = model.forward(make(backend, x[:, 2:]), train=True, initial_state=s)
        model.backward(make(backend, r))
        return float(np.sum(host(y) * r)), s

    value, s = loss(start.initial)
    assert sorted(s.grads) == ["0", "1"]
    v = rng.standard_normal((1, B, 3))
    h1 = start.initial["1"]
    plus = loss({**start.initial, "1": h1 + make(backend, 1e-6 * v)})[0]
    minus = loss({**start.initial, "1": h1 - make(backend, 1e-6 * v)})[0]
    numeric = (plus - minus) / 2e-6
    exact = float(np.sum(host(s.grads["1"]) * v))
    assert abs(exact - numeric) < TOL * max(abs(exact), 1e-8)
    dc = host(s.grads["0"][1])  # the LSTM's (dh0, dc0)
    assert dc.shape == (1, B, H) and np.abs(dc).max() > 0


# -- the NumPy twin is the reference ----------------------------------------------------------
REF, TWIN = Kernels(np_compat), NumpyKernels(np_compat)
RTOL = {"float32": 2e-6, "float64": 1e-14}


def step_inputs(rng, G, dtype, masked):
    xw = rng.standard_normal((B, 9, G * H)).astype(dtype)[:, 4, :]  # a strided step, as in
    hh = rng.standard_normal((B, G * H)).astype(dtype)              # the loop
    states = [rng.standard_normal((B, H)).astype(dtype) for _ in range(4)]
    keep = np.array([[True], [False], [True]]) if masked else None
    return xw, hh, states, keep


def same(a, b, dtype):
    assert a is None and b is None or (a.dtype == b.dtype and a.shape == b.shape)
    if a is not None:
        np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_numpy_twin_steps_equal_the_reference(cell, dtype, masked):
    rng = np.random.default_rng(0)
    G = {"lstm": 4, "gru": 3}.get(cell, 1)
    xw, hh, (h, c, dh, dc), keep = step_inputs(rng, G, dtype, masked)
    dy = rng.standard_normal((B, H)).astype(dtype)
    b_hn = rng.standard_normal(H).astype(dtype)
    inputs = [xw, h, c, dh, dc, dy, b_hn]
    before = [a.copy() for a in inputs]
    for dy_ in (dy, None):
        outs = []
        for k in (REF, TWIN):
            if cell.startswith("rnn"):
                act = cell[4:]
                h1, saved = k.rnn_step(xw, hh.copy(), h, keep, act)
                outs.append((h1, *k.rnn_step_backward(dh, dy_, saved, keep, act)))
            elif cell == "lstm":
                h1, c1, saved = k.lstm_step(xw, hh.copy(), h, c, keep)
                outs.append((h1, c1, *k.lstm_step_backward(dh, dy_, dc, saved, c, keep)))
            else:
                h1, saved = k.gru_step(xw, hh.copy(), h, b_hn, keep)
                outs.append((h1, *k.gru_step_backward(dh, dy_, saved, h, keep)))
        for a, b in zip(*outs, strict=True):
            same(a, b, dtype)
    for a, b in zip(inputs, before, strict=True):  # only hh, the loop's own product, is written
        np.testing.assert_array_equal(a, b)


def test_a_float32_model_stays_float32_and_matches_float64():
    x = np.random.default_rng(0).standard_normal((B, 6, N_IN))
    outs = {}
    for dt in ("float32", "float64"):
        model = nk.Sequential(nk.LSTM(N_IN, H, bidirectional=True), dtype=dt, seed=0)
        y = model.forward(x, train=True, lengths=np.array([6, 3, 1]))
        dx = model.backward(np.ones_like(y))
        assert y.dtype == dx.dtype == model.grads["0.Wh"].dtype == np.dtype(dt)
        outs[dt] = (y, dx, model.grads["0.Wx_reverse"])
    for a, b in zip(outs["float32"], outs["float64"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# -- CuPy's Python paths (the double runs the reference kernels) -----------------------------
@pytest.mark.usefixtures("fake_cupy")
def test_layers_run_on_cupy_through_the_double():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, 4, N_IN))
    lengths = np.array([4, 2, 3])
    results = []
    for backend in ("numpy", "cupy"):
        model = nk.Sequential(nk.GRU(N_IN, H, bidirectional=True, return_sequences=True),
                              nk.LSTM(2 * H, H, return_sequences=True), nk.RNN(H, 2),
                              dtype="float64", backend=backend, seed=4)
        state = nk.RecurrentState()
        y = model.forward(make(model.backend, x), train=True, lengths=lengths,
                          initial_state=state)
        dx = model.backward(make(model.backend, np.ones((B, 2))))
        results.append([host(y), host(dx), host(state.final["1"][1]),
                        host(state.grads["0"]), *(host(g) for g in model.grads.values())])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# -- configuration, checkpoints and errors ----------------------------------------------------
def test_config_round_trip_and_parameter_layout():
    for layer in (nk.RNN(5, 3, "relu", bidirectional=True), nk.LSTM(5, 3, return_sequences=True),
                  nk.GRU(5, 3, bidirectional=True)):
        again = layer_from_config(layer.config())
        assert type(again) is type(layer) and again.config() == layer.config()
    gru = nk.Sequential(nk.GRU(5, 3, bidirectional=True), seed=0)
    assert {k: tuple(v.shape) for k, v in gru.params.items()} == {
        "0.Wx": (5, 9), "0.Wh": (3, 9), "0.b": (9,), "0.b_hn": (3,),
        "0.Wx_reverse": (5, 9), "0.Wh_reverse": (3, 9), "0.b_reverse": (9,),
        "0.b_hn_reverse": (3,)}
    assert nk.Sequential(nk.LSTM(5, 3), seed=0).output_shape == (3,)
    assert nk.Sequential(nk.LSTM(5, 3, bidirectional=True, return_sequences=True),
                         seed=0).output_shape == (None, 6)
    w = host(nk.Sequential(nk.LSTM(5, 100), seed=0, dtype="float64").params["0.Wh"])
    assert 0.09 < np.abs(w).max() <= 0.1  # torch's U(−1/√H, 1/√H)


def test_model_saves_and_loads(tmp_path):
    model = nk.Sequential(nk.GRU(N_IN, H, bidirectional=True, return_sequences=True),
                          nk.LSTM(2 * H, H), nk.Dense(H, 2), seed=5)
    nk.save(model, tmp_path / "m.npz")
    loaded = nk.load(tmp_path / "m.npz")
    x = np.random.default_rng(0).standard_normal((B, 4, N_IN)).astype(np.float32)
    np.testing.assert_array_equal(model(x, lengths=np.array([4, 1, 2])),
                                  loaded(x, lengths=np.array([4, 1, 2])))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ConfigError, match="ensemble"):
        nk.Sequential(nk.LSTM(3, 4), ensemble=2)
    with pytest.raises(ConfigError, match="activation"):
        nk.RNN(3, 4, activation="sigmoid")
    with pytest.raises(ConfigError, match="bidirectional"):
        nk.GRU(3, 4, bidirectional="yes")
    with pytest.raises(ConfigError, match="hidden"):
        nk.LSTM(3, 0)
    with pytest.raises(ShapeError, match="sequences"):
        nk.Sequential(nk.Dense(3, 4), nk.LSTM(4, 2))  # (4,) per sample is not a sequence
    with pytest.raises(ShapeError, match="receives"):
        nk.Sequential(nk.LSTM(3, 4, return_sequences=True), nk.LSTM(5, 2))
    model = nk.Sequential(nk.LSTM(3, 4), seed=0)
    x = np.zeros((2, 5, 3), dtype=np.float32)
    for lengths, err, text in (([1, 6], ShapeError, "0..5"), ([1, 2, 3], ShapeError, r"\(2,\)"),
                               (np.array([1.0, 2.0]), DTypeError, "integers")):
        with pytest.raises(err, match=text):
            model(x, lengths=lengths)
    with pytest.raises(ShapeError, match="T ≥ 1"):
        model(np.zeros((2, 0, 3), dtype=np.float32))
    with pytest.raises(ConfigError, match="RecurrentState"):
        model(x, initial_state={"0": None})
    bad = nk.RecurrentState({"0": (np.zeros((1, 2, 4), np.float32),)})
    with pytest.raises(ConfigError, match=r"\(h, c\)"):
        model(x, initial_state=bad)
    wrong = nk.RecurrentState({"0": (np.zeros((2, 2, 4), np.float32),) * 2})
    with pytest.raises(ShapeError, match=r"\(1, 2, 4\)"):
        model(x, initial_state=wrong)
    with pytest.raises(ConfigError, match="whole batch"):
        model.predict(x, batch_size=1, initial_state=nk.RecurrentState())
    with pytest.raises(ConfigError, match=r"take: initial_state, lengths\)"):
        model(x, length=[1, 2])
