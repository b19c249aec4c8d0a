"""Embedding, PositionEmbedding and TiedOutput: gradients, scatter-adds, ties, refusals.

float64 finite differences (`nk.gradcheck`, which keeps token ids integers) on every
backend, with repeated ids; the reference's two scatter-adds (one-hot product, sort +
running sums) and the NumPy twin against a plain loop; the tied output's gradient as
the sum of both uses; out-of-range ids, long sequences and ensembles refused by name.
"""

from __future__ import annotations

import array_api_compat
import array_api_compat.numpy as np_compat
import numpy as np
import pytest
from conftest import CPU_BACKENDS, host, make

import nnkernel as nk
from nnkernel.kernels.numpy import NumpyKernels
from nnkernel.kernels.reference import Kernels

EVERY_BACKEND = ("jax",)  # JAX joins this module's backends; Dask's gradient checks: test_dask.py

TOL = 1e-6
EPS = 1e-5


def probe(y, t, *, members=False):
    xp = array_api_compat.array_namespace(y)
    return xp.sum(y * t), t


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for key in model.params:
        model.params[key] = rng.standard_normal(tuple(model.params[key].shape))


def check(backend, layers, ids, out_dim, seed=0):
    model = nk.Sequential(*layers, seed=seed, dtype="float64", backend=backend)
    randomize(model)
    r = np.random.default_rng(seed + 7).standard_normal((*np.shape(ids), out_dim))
    err = nk.gradcheck(model, probe, make(backend, ids), make(backend, r), eps=EPS)
    assert err < TOL
    return model


REPEATED = np.array([[1, 3, 1, 1], [0, 3, 4, 1]])  # id 1 four times, id 3 twice, 2 never


def test_embedding_gradients_with_repeated_ids(backend):
    check(backend, [nk.Embedding(5, 3), nk.Dense(3, 2)], REPEATED, 2)


def test_repeated_ids_sum_and_unused_ids_get_zero(backend):
    model = nk.Sequential(nk.Embedding(5, 3), dtype="float64", backend=backend)
    dy = np.random.default_rng(0).standard_normal((2, 4, 3))
    model.forward(make(backend, REPEATED), train=True)
    assert model.backward(make(backend, dy)) is None  # ids have no gradient
    want = np.zeros((5, 3))
    for (b, t), v in np.ndenumerate(REPEATED):
        want[v] += dy[b, t]
    np.testing.assert_allclose(host(model.grads["0.W"]), want, rtol=1e-14, atol=1e-15)
    assert not host(model.grads["0.W"])[2].any()


def test_embedding_forward_gathers_rows(backend):
    model = nk.Sequential(nk.Embedding(5, 3), dtype="float64", backend=backend)
    W = host(model.params["0.W"])
    y = host(model(make(backend, REPEATED)))
    np.testing.assert_array_equal(y, W[REPEATED])
    assert y.shape == (2, 4, 3)
    np.testing.assert_array_equal(host(model(make(backend, np.array([4, 0])))), W[[4, 0]])


def test_position_embedding_gradients(backend):
    check(backend, [nk.Embedding(5, 3), nk.PositionEmbedding(6, 3), nk.Dense(3, 2)], REPEATED,
          2)


def test_position_embedding_adds_positions_and_leaves_later_ones_without_gradient(backend):
    model = nk.Sequential(nk.Embedding(5, 3), nk.PositionEmbedding(6, 3), dtype="float64",
                          backend=backend)
    tok, pos = host(model.params["0.W"]), host(model.params["1.W"])
    y = host(model.forward(make(backend, REPEATED), train=True))
    np.testing.assert_allclose(y, tok[REPEATED] + pos[:4], rtol=1e-15)
    dy = np.random.default_rng(0).standard_normal((2, 4, 3))
    model.backward(make(backend, dy))
    g = host(model.grads["1.W"])
    np.testing.assert_allclose(g[:4], dy.sum(0), rtol=1e-14)
    assert not g[4:].any()


def test_a_sequence_longer_than_max_len_is_refused_by_name(backend):
    model = nk.Sequential(nk.Embedding(5, 3), nk.PositionEmbedding(4, 3), backend=backend)
    model(make(backend, np.zeros((2, 4), dtype=np.int64)))  # exactly max_len is fine
    with pytest.raises(nk.ShapeError, match="5 positions is longer than .*max_len=4"):
        model(make(backend, np.zeros((2, 5), dtype=np.int64)))
    with pytest.raises(nk.ShapeError, match="max_len=4"):
        nk.Sequential(nk.PositionEmbedding(4, 3), input_shape=(6, 3))


@pytest.mark.parametrize("bad", [-1, 5, 17])
def test_out_of_range_ids_are_refused(backend, bad):
    model = nk.Sequential(nk.Embedding(5, 3), backend=backend)
    ids = REPEATED.copy()
    ids[1, 2] = bad
    with pytest.raises(nk.ShapeError, match=r"token ids must be in \[0, 4\], found values in"):
        model(make(backend, ids))


def test_float_ids_are_refused(backend):
    model = nk.Sequential(nk.Embedding(5, 3), backend=backend)
    with pytest.raises(nk.DTypeError, match="integer ids"):
        model(make(backend, REPEATED.astype(np.float32), dtype="float32"))


def test_tied_output_gradients(backend):
    tok = nk.Embedding(6, 4)
    check(backend, [tok, nk.PositionEmbedding(4, 4), nk.LayerNorm(4), nk.TiedOutput(tok)],
          REPEATED, 6)


def test_tied_gradient_is_the_sum_of_both_uses(backend):
    """The tied model's dW equals the embedding's dW plus the output's dWᵀ-use of an
    untied copy with the same numbers (its own Dense output weight, W transposed)."""
    tok = nk.Embedding(6, 4)
    tied = nk.Sequential(tok, nk.LayerNorm(4), tok.output(), dtype="float64", backend=backend)
    assert list(tied.params) == ["0.W", "1.gamma", "1.beta"]  # one W, no output weight
    randomize(tied)
    untied = nk.Sequential(nk.Embedding(6, 4), nk.LayerNorm(4), nk.Dense(4, 6), dtype="float64",
                           backend=backend)
    W = host(tied.params["0.W"])
    untied.params["0.W"] = W
    untied.params["2.W"] = W.T.copy()
    untied.params["2.b"] = np.zeros(6)
    for key in ("1.gamma", "1.beta"):
        untied.params[key] = host(tied.params[key])
    dy = np.random.default_rng(3).standard_normal((2, 4, 6))
    ys = []
    for model in (tied, untied):
        ys.append(host(model.forward(make(backend, REPEATED), train=True)))
        model.backward(make(backend, dy))
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-13)
    want = host(untied.grads["0.W"]) + host(untied.grads["2.W"]).T
    np.testing.assert_allclose(host(tied.grads["0.W"]), want, rtol=1e-12, atol=1e-14)
    # and the output's own use is not zero: the sum is a real sum
    assert np.abs(host(untied.grads["2.W"])).max() > 1e-3


def test_tied_model_copies_saves_and_keeps_its_tie(tmp_path):
    tok = nk.Embedding(6, 4)
    model = nk.Sequential(tok, nk.PositionEmbedding(4, 4), nk.TiedOutput(tok), seed=3)
    cfg = model.config()
    assert cfg["layers"][2] == {"type": "TiedOutput", "tied_to": 0}
    twin = model.copy()
    assert twin.layers[2].embedding is twin.layers[0]
    assert list(twin.params) == ["0.W", "1.W"]
    nk.save(model, tmp_path / "m.npz")
    loaded = nk.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded(REPEATED), model(REPEATED))


def test_tied_output_needs_its_embedding_earlier():
    tok = nk.Embedding(6, 4)
    with pytest.raises(nk.ConfigError, match="does not come before it"):
        nk.Sequential(nk.Embedding(6, 4), nk.TiedOutput(tok))
    with pytest.raises(nk.ConfigError, match="ties to an Embedding"):
        nk.TiedOutput(nk.Dense(4, 6))


def test_embedding_layers_refuse_ensembles():
    with pytest.raises(nk.ConfigError, match="Embedding does not support ensembles"):
        nk.Sequential(nk.Embedding(6, 4), ensemble=3)
    with pytest.raises(nk.ConfigError, match="does not support ensembles"):
        nk.gpt(11, 4, 8, 2, 1, ensemble=2)


def test_bad_configuration_is_refused():
    with pytest.raises(nk.ConfigError, match="num_embeddings"):
        nk.Embedding(0, 4)
    with pytest.raises(nk.ConfigError, match="std"):
        nk.Embedding(3, 4, std=-1.0)
    with pytest.raises(nk.ConfigError, match="max_len"):
        nk.PositionEmbedding(2.5, 4)


# -- kernels: the scatter-adds and the twin -----------------------------------------------
def loop_scatter(ids, rows, V):
    out = np.zeros((V, rows.shape[-1]))
    for i, v in enumerate(ids):
        out[v] += rows[i]
    return out


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["torch"])
@pytest.mark.parametrize("id_dtype", ["int32", "int64"])
def test_reference_scatter_adds_equal_a_loop(backend, id_dtype):
    if backend == "torch":
        pytest.importorskip("torch")
    be = nk.Backend(backend)
    k = be.kernels
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 9, 50).astype(id_dtype)
    ids[:5] = 8  # the last id, repeated
    rows = rng.standard_normal((50, 3))
    want = loop_scatter(ids, rows, 12)  # ids 9..11 never occur
    x_ids, x_rows = be.asarray(ids), make(be, rows)
    for fn in (k.scatter_add_one_hot, k.scatter_add_sorted):
        np.testing.assert_allclose(host(fn(x_ids, x_rows, 12)), want, rtol=1e-13, atol=1e-14)
    got = k.embedding_backward(be.asarray(ids.reshape(5, 10)), make(be, rows.reshape(5, 10, 3)),
                               12)
    np.testing.assert_allclose(host(got), want, rtol=1e-13, atol=1e-14)


def test_large_vocabularies_take_the_sorted_path(monkeypatch):
    from nnkernel.kernels.reference import embedding

    ref = Kernels(np_compat)
    called = []
    monkeypatch.setattr(Kernels, "scatter_add_sorted",
                        lambda self, *a: called.append(a) or embedding.EmbeddingKernels
                        .scatter_add_sorted(self, *a))
    ids, dy = np.array([[3, 3]]), np.ones((1, 2, 2))
    ref.embedding_backward(ids, dy, 8)
    assert not called
    monkeypatch.setattr(embedding, "ONE_HOT_LIMIT", 1)
    np.testing.assert_array_equal(ref.embedding_backward(ids, dy, 8)[3], [2.0, 2.0])
    assert called


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_twin_matches_reference(dtype):
    ref, twin = Kernels(np_compat), NumpyKernels(np_compat)
    rng = np.random.default_rng(1)
    W = rng.standard_normal((7, 4)).astype(dtype)
    ids = rng.integers(0, 7, (3, 5))
    dy = rng.standard_normal((3, 5, 4)).astype(dtype)
    x = rng.standard_normal((3, 5, 4)).astype(dtype)
    dl = rng.standard_normal((3, 5, 7)).astype(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-13, "atol": 1e-14}
    np.testing.assert_array_equal(twin.embedding(W, ids), ref.embedding(W, ids))
    got = twin.embedding_backward(ids, dy, 7)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref.embedding_backward(ids, dy, 7), **tol)
    buf = np.full((7, 4), np.nan, dtype=dtype)  # a stale gradient buffer is overwritten
    assert twin.embedding_backward(ids, dy, 7, out=buf) is buf
    np.testing.assert_allclose(buf, got, **tol)
    np.testing.assert_allclose(twin.unembed(x, W), ref.unembed(x, W), **tol)
    buf = np.full((7, 4), np.nan, dtype=dtype)
    for (dx_t, dW_t), (dx_r, dW_r) in [(twin.unembed_backward(x, W, dl, True, buf),
                                        ref.unembed_backward(x, W, dl, True))]:
        assert dW_t is buf
        np.testing.assert_allclose(dW_t, dW_r, **tol)
        np.testing.assert_allclose(dx_t, dx_r, **tol)


@pytest.mark.parametrize("bad", [-1, 5])
def test_fit_refuses_out_of_range_ids_once_per_dataset_on_every_backend(backend, bad):
    """fit checks the ids when it moves the data: a step on a GPU (or in a compiled JAX
    program) does not read them, and a gather there would clamp or wrap a bad id."""
    model = nk.Sequential(nk.Embedding(5, 3), nk.Dense(3, 2), backend=backend)
    before = host(model.store.flat).copy()
    X = np.tile(np.arange(4), (6, 1))
    X[4, 1] = bad
    with pytest.raises(nk.ShapeError, match=r"training data: ids must be in \[0, 4\]"):
        nk.fit(model, X, np.zeros((6, 4), dtype=np.int64), epochs=1, batch_size=3,
               progress=False)
    np.testing.assert_array_equal(host(model.store.flat), before)
