"""The NumPy twins of the sequence kernels against the reference: self-attention on the fused
projection (scores kept transposed, heads read and written in place), forward and backward,
with and without the causal mask and dropout; the embedding's scatter-add by sorting; and a
GPT step on the twins against the reference kernels."""

from __future__ import annotations

import array_api_compat.numpy as np_compat
import numpy as np
import pytest

import nnkernel as nk
from nnkernel.kernels import Kernels
from nnkernel.kernels.numpy import NumpyKernels

TOL = {"float32": {"rtol": 2e-5, "atol": 2e-6}, "float64": {"rtol": 1e-12, "atol": 1e-13}}


@pytest.mark.parametrize("lead", [(), (3,), (2, 2)], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_self_attention_twin_matches_reference(lead, causal, dtype, dropout):
    ref, twin = Kernels(np_compat), NumpyKernels(np_compat)
    rng = np.random.default_rng(0)
    H, T, D = 3, 5, 4
    qkv = (rng.standard_normal((*lead, T, 3 * H * D)) * 2).astype(dtype)
    do = rng.standard_normal((*lead, T, H * D)).astype(dtype)
    before = qkv.copy(), do.copy()
    be = nk.Backend("numpy")
    outs = []
    for kern in (ref, twin):
        random = be.random(7)  # the same dropout mask for both
        o, saved = kern.self_attention(qkv, H, causal, dropout, random if dropout else None)
        outs.append((o, kern.self_attention_backward(qkv, H, saved, do)))
    for got, want in zip(outs[1], outs[0], strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **TOL[dtype])
    np.testing.assert_array_equal(qkv, before[0])
    np.testing.assert_array_equal(do, before[1])
    if causal:  # the last position's q, k, v reach no earlier output
        o, _ = twin.self_attention(qkv, H, True)
        later = qkv.copy()
        later[..., -1, :] += 1.0
        np.testing.assert_array_equal(twin.self_attention(later, H, True)[0][..., :-1, :],
                                      o[..., :-1, :])


def test_a_gpt_step_on_the_twin_is_the_reference_step():
    """Logits, loss and every gradient of nk.gpt with the NumPy twin kernels equal those of
    the reference kernels (array_api_strict runs the reference), in float64."""
    models = [nk.gpt(vocab_size=11, max_len=8, dim=12, heads=3, layers=2, dtype="float64",
                     backend=b, seed=1) for b in ("numpy", "array_api_strict")]
    ids = np.random.default_rng(2).integers(0, 11, (3, 8))
    grads = []
    for model in models:
        be = model.backend
        x = be.asarray(ids)
        logits = model.forward(x, train=True)
        _, dy = nk.losses.cross_entropy(logits, x)
        model.backward(dy, input_grad=False)
        grads.append({k: np.asarray(v) for k, v in model.grads.items()})
    for key, g in grads[0].items():
        np.testing.assert_allclose(g, grads[1][key], rtol=1e-10, atol=1e-13, err_msg=key)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ids_shape, V", [((3, 40), 7), ((0,), 5), ((1,), 1), ((2, 3, 4), 50)],
                         ids=str)
def test_embedding_scatter_add_twin_matches_a_loop(dtype, ids_shape, V):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, ids_shape)
    if ids.size > 3:
        ids.reshape(-1)[:3] = V - 1  # the last id, repeated
    dy = rng.standard_normal((*ids_shape, 6)).astype(dtype)
    want = np.zeros((V, 6))
    for i, v in enumerate(ids.reshape(-1)):
        want[v] += dy.reshape(-1, 6)[i]
    twin = NumpyKernels(np_compat)
    buf = np.full((V, 6), np.nan, dtype=dtype)  # a stale gradient buffer is overwritten
    got = twin.embedding_backward(ids, dy, V, out=buf)
    assert got is buf and got.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-13, "atol": 1e-13}
    np.testing.assert_allclose(got, want, **tol)
    np.testing.assert_allclose(twin.embedding_backward(ids, dy, V), want, **tol)
