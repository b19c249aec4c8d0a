"""MultiHeadAttention and the transformer pieces around it, checked by finite differences.

float64 central differences on every backend: attention causal and not, T = 1,
heads = 1 and heads = C, dropout with its fixed mask, leading axes other than
(B, T); Residual around an attention block and around a ResNet-style conv block;
LayerNorm, Dense and GELU on (B, T, C); a whole `nk.gpt`. The twins' attention
kernels are compared with the reference (tests/test_gpt_torch.py compares with
PyTorch).

Why a check of our own beside `nk.gradcheck`: attention's key bias gets no gradient
(softmax does not change when a row of scores shifts by a constant, and q·b_k is
such a shift), so a per-element relative error there is round-off over zero. Here
each parameter's error is relative to that parameter's largest gradient entry.
"""

from __future__ import annotations

import array_api_compat
import array_api_compat.numpy as np_compat
import numpy as np
import pytest
from conftest import CPU_BACKENDS, host, make

import nnkernel as nk
from nnkernel.backend import to_numpy
from nnkernel.kernels.numpy import NumpyKernels
from nnkernel.kernels.reference import Kernels

EVERY_BACKEND = ("jax",)  # JAX joins this module's backends; Dask's gradient checks: test_dask.py

TOL = 1e-7
EPS = 1e-5


def probe(y, t, *, members=False):
    """L = Σ y ⊙ t; dL/dy = t."""
    xp = array_api_compat.array_namespace(y)
    return xp.sum(y * t), t


def randomize(model, rng, scale=0.5):
    """Parameters of order one, so every path carries a gradient well above round-off."""
    for key in model.params:
        model.params[key] = rng.standard_normal(tuple(model.params[key].shape)) * scale


def fd_check(model, x, t, loss=probe, train=True, seed=0):
    """The worst error of dL/dθ (each parameter) and dL/dx against central differences,
    relative to the largest entry of that gradient (at least 0.01: the losses here are of
    order 1-10, their round-off over 2·EPS ~1e-10); returns (worst, analytic gradients)."""
    be = model.backend

    def value(xin):
        model.reseed((seed, 1))  # the same dropout masks in every evaluation
        v, dy = loss(model.forward(xin, train=train, record=True), t)
        return float(v), dy

    _, dy = value(x)
    dx = model.backward(dy)
    analytic = {k: to_numpy(g).copy() for k, g in model.grads.items()}
    if dx is not None:
        analytic["x"] = to_numpy(dx).copy()
    worst = 0.0
    for key, grad in analytic.items():
        base = to_numpy(x if key == "x" else model.params[key]).astype(np.float64)
        numeric = np.zeros_like(base)
        for i in range(base.size):
            step = np.zeros(base.size)
            step[i] = EPS
            step = step.reshape(base.shape)
            values = []
            for shifted in (base + step, base - step):
                if key == "x":
                    values.append(value(be.asarray(shifted, dtype=model.dtype))[0])
                else:
                    model.params[key] = shifted
                    values.append(value(x)[0])
            numeric.flat[i] = (values[0] - values[1]) / (2 * EPS)
        if key != "x":
            model.params[key] = base
        scale = max(np.abs(numeric).max(), 1e-2)  # a zero gradient: round-off ~1e-10 apart
        worst = max(worst, np.abs(grad - numeric).max() / scale)
    return worst, analytic


def attention_model(backend, dim=8, heads=2, causal=False, dropout=0.0, seed=0):
    model = nk.Sequential(nk.MultiHeadAttention(dim, heads, causal=causal, dropout=dropout),
                          seed=seed, dtype="float64", backend=backend)
    randomize(model, np.random.default_rng(seed + 1))
    return model


def inputs(backend, shape, seed=2):
    rng = np.random.default_rng(seed)
    return make(backend, rng.standard_normal(shape)), make(backend, rng.standard_normal(shape))


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("T,heads", [(4, 2), (1, 2), (3, 1), (3, 8)],
                         ids=["T4", "T1", "heads1", "headsC"])
def test_attention_gradients(backend, causal, T, heads):
    model = attention_model(backend, heads=heads, causal=causal)
    x, r = inputs(backend, (2, T, 8))
    worst, grads = fd_check(model, x, r)
    assert worst < TOL
    # the key bias's gradient is zero (a per-row shift of the scores), the others are not
    C = 8
    assert np.abs(grads["0.bqkv"][C:2 * C]).max() < 1e-12
    assert np.abs(grads["0.bqkv"][:C]).max() > 1e-3 or T == 1
    assert np.abs(grads["0.bqkv"][2 * C:]).max() > 1e-3


def test_attention_with_dropout_uses_its_fixed_mask(backend):
    model = attention_model(backend, causal=True, dropout=0.3)
    x, r = inputs(backend, (2, 4, 8))
    assert model.stochastic
    worst, _ = fd_check(model, x, r)
    assert worst < TOL
    # the mask really drops: two training passes differ, evaluation is deterministic
    first = host(model.forward(x, train=True))
    assert not np.allclose(first, host(model.forward(x, train=True)))
    np.testing.assert_array_equal(host(model(x)), host(model(x)))


@pytest.mark.parametrize("shape", [(3,), (2, 2, 3)], ids=["unbatched", "two_lead_axes"])
def test_attention_on_other_leading_axes(shape):
    """Ids of any shape (..., T) reach attention as (..., T, C): each sequence on its own."""
    model = nk.Sequential(nk.Embedding(5, 8), nk.MultiHeadAttention(8, 2, causal=True),
                          dtype="float64")
    randomize(model, np.random.default_rng(1))
    ids = np.random.default_rng(2).integers(0, 5, shape)
    r = np.random.default_rng(3).standard_normal((*shape, 8))
    worst, _ = fd_check(model, ids, r)
    assert worst < TOL
    flat = model(np.reshape(ids, (-1, 3)))
    np.testing.assert_allclose(model(ids), np.reshape(flat, (*shape, 8)), rtol=1e-13,
                               atol=1e-14)


def test_causal_attention_never_looks_ahead(backend):
    model = attention_model(backend, causal=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 8))
    later = x.copy()
    later[:, 3:] += rng.standard_normal((2, 2, 8))
    y, y_later = host(model(make(backend, x))), host(model(make(backend, later)))
    np.testing.assert_allclose(y[:, :3], y_later[:, :3], rtol=1e-13, atol=1e-14)
    assert not np.allclose(y[:, 3:], y_later[:, 3:])


def test_attention_equals_its_definition_per_head():
    """y = concat_h softmax(q_h k_hᵀ/√D + mask) v_h · Wo + bo, head h = columns h·D…(h+1)·D−1
    of each of the q | k | v blocks of x·Wqkv + bqkv (nanoGPT's layout), written out."""
    C, H, T = 8, 2, 4
    D = C // H
    model = attention_model("numpy", heads=H, causal=True)
    p = {k.split(".")[1]: np.asarray(v) for k, v in model.params.items()}
    x = np.random.default_rng(3).standard_normal((2, T, C))
    qkv = x @ p["Wqkv"] + p["bqkv"]
    heads = []
    for h in range(H):
        q, k, v = (qkv[..., b * C + h * D:b * C + (h + 1) * D] for b in range(3))
        s = q @ np.swapaxes(k, -1, -2) / np.sqrt(D)
        s = np.where(np.tril(np.ones((T, T))) > 0, s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        heads.append((e / e.sum(-1, keepdims=True)) @ v)
    want = np.concatenate(heads, axis=-1) @ p["Wo"] + p["bo"]
    np.testing.assert_allclose(model(x), want, rtol=1e-12, atol=1e-13)


def test_attention_refuses_what_it_cannot_do():
    with pytest.raises(nk.ConfigError, match="heads=3 must divide dim=8"):
        nk.MultiHeadAttention(8, 3)
    with pytest.raises(nk.ConfigError, match="dropout"):
        nk.MultiHeadAttention(8, 2, dropout=1.0)
    with pytest.raises(nk.ConfigError, match="does not support ensembles"):
        nk.Sequential(nk.MultiHeadAttention(8, 2), ensemble=2)
    with pytest.raises(nk.ShapeError, match=r"takes \(T, 8\)"):
        nk.Sequential(nk.Dense(4, 6), nk.MultiHeadAttention(8, 2))
    model = nk.Sequential(nk.MultiHeadAttention(8, 2), dtype="float64")
    with pytest.raises(nk.ShapeError, match=r"expects \(\.\.\., None, 8\)|shape"):
        model(np.zeros((2, 3, 5)))


# -- the rest of a transformer on (B, T, C) ------------------------------------------------
def test_attention_block_in_a_residual(backend):
    block = nk.Residual(nk.LayerNorm(8), nk.MultiHeadAttention(8, 2, causal=True),
                        nk.Dropout(0.2))
    model = nk.Sequential(block, nk.Residual(nk.LayerNorm(8), nk.Dense(8, 16), nk.GELU(),
                                             nk.Dense(16, 8)),
                          seed=0, dtype="float64", backend=backend, input_shape=(None, 8))
    randomize(model, np.random.default_rng(1))
    assert list(model.params)[:4] == ["0.0.gamma", "0.0.beta", "0.1.Wqkv", "0.1.bqkv"]
    x, r = inputs(backend, (2, 3, 8))
    worst, _ = fd_check(model, x, r)
    assert worst < TOL


def test_dense_layernorm_gelu_fold_leading_axes(backend):
    """On (B, T, C) each row (b, t) is an independent sample: the output equals the 2-D
    model's on the (B·T, C) rows, and the gradients check out."""
    layers = [nk.LayerNorm(6), nk.Dense(6, 5), nk.GELU(), nk.Dense(5, 4)]
    model = nk.Sequential(*layers, seed=0, dtype="float64", backend=backend)
    randomize(model, np.random.default_rng(1))
    x, _ = inputs(backend, (2, 3, 6))
    r = make(backend, np.random.default_rng(4).standard_normal((2, 3, 4)))
    rows = host(model(make(backend, host(x).reshape(6, 6))))
    np.testing.assert_allclose(host(model(x)), rows.reshape(2, 3, 4), rtol=1e-13, atol=1e-14)
    worst, _ = fd_check(model, x, r)
    assert worst < TOL


def test_residual_around_a_conv_block(backend):
    """A ResNet block, y = x + conv(relu(bn(conv(x)))), with BatchNorm in training mode."""
    block = nk.Residual(nk.Conv2D(2, 3, 3, padding=1), nk.BatchNorm2D(3), nk.ReLU(),
                        nk.Conv2D(3, 2, 3, padding=1))
    model = nk.Sequential(block, nk.Flatten(), nk.Dense(2 * 4 * 4, 3), seed=0, dtype="float64",
                          backend=backend, input_shape=(2, 4, 4))
    assert list(model.params)[:4] == ["0.0.W", "0.0.b", "0.1.gamma", "0.1.beta"]
    rng = np.random.default_rng(3)
    x = make(backend, rng.standard_normal((3, 2, 4, 4)))
    r = make(backend, rng.standard_normal((3, 3)))
    worst, grads = fd_check(model, x, r)  # (the first conv's bias feeds BatchNorm: no gradient)
    assert worst < TOL
    assert np.abs(grads["0.0.b"]).max() < 1e-12 < np.abs(grads["0.3.b"]).max()


# -- a whole GPT ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_gpt_gradients(backend, tie):
    model = nk.gpt(7, 4, 4, 2, 1, dropout=0.1, tie_weights=tie, seed=0, dtype="float64",
                   backend=backend)
    randomize(model, np.random.default_rng(1), scale=0.4)
    rng = np.random.default_rng(2)
    ids = make(backend, rng.integers(0, 7, (2, 3)))
    targets = make(backend, rng.integers(0, 7, (2, 3)))
    worst, grads = fd_check(model, ids, targets, loss=nk.losses.cross_entropy)
    assert worst < TOL
    assert "x" not in grads  # token ids carry no gradient


def test_gpt_trains_in_a_compiled_jax_step_as_on_numpy():
    """Under jax.jit the id check steps aside (a traced id has no value) and the reference
    scatter-add and ignore_index run traced: the same losses as NumPy's eager steps."""
    from conftest import jax_or_skip

    jax_or_skip()
    from nnkernel.train.compiled import CompiledStep
    from nnkernel.train.step import train_step

    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 7, (3, 4)), rng.integers(0, 7, (3, 4))) for _ in range(3)]

    def loss(y, t, **kw):
        return nk.losses.cross_entropy(y, t, ignore_index=0, **kw)

    values = {}
    for backend in ("numpy", "jax"):
        model = nk.gpt(7, 4, 8, 2, 1, seed=0, dtype="float64", backend=backend)
        opt = nk.optim.AdamW(lr=1e-2)
        step = CompiledStep(model, loss, opt) if backend == "jax" else (
            lambda batch, model=model, opt=opt: train_step(model, loss, opt, batch))
        be = model.backend
        values[backend] = [float(step((be.asarray(x), be.asarray(t)))[0]) for x, t in batches]
    np.testing.assert_allclose(values["jax"], values["numpy"], rtol=1e-12)


# -- kernels: the NumPy twin against the reference -------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_numpy_attention_twin_matches_reference(causal, dtype, dropout):
    ref, twin = Kernels(np_compat), NumpyKernels(np_compat)
    rng = np.random.default_rng(0)
    q, k, v, do = (rng.standard_normal((2, 3, 5, 4)).astype(dtype) for _ in range(4))
    be = nk.Backend("numpy")
    outs = []
    for kern in (ref, twin):
        random = be.random(7)  # the same mask for both
        o, saved = kern.attention(q, k, v, causal, dropout, random if dropout else None)
        outs.append((o, *kern.attention_backward(q, k, v, o, saved, do)))
    tol = {"rtol": 2e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-13}
    for got, want in zip(outs[1], outs[0], strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_causal_softmax_rows_sum_to_one_and_ignore_the_future(backend):
    be = nk.Backend(backend)
    s = make(backend, np.random.default_rng(1).standard_normal((2, 2, 4, 4)) * 10)
    P = host(be.kernels.attention_softmax(s, 0.5, True))
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-14)
    assert (P[..., np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]] == 0).all()
    assert P[..., 0, 0].min() == 1.0
