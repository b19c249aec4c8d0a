"""nk.generate: seeded sampling, temperature and top-k, greedy decoding, the context cropped to
the model's max_len, batches, every backend, a recurrent model's carried state, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKENDS, host, make
from cupy_double import fake_cupy  # noqa: F401 - the fixture

import nnkernel as nk
from nnkernel.errors import ConfigError, NonFiniteError, ShapeError
from nnkernel.nn.generate import context_length, sample_next

V, T_MAX = 7, 8
PROMPT = np.array([1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5])  # longer than the context


def tiny_gpt(backend="numpy", dtype="float64", seed=0):
    return nk.gpt(V, T_MAX, 8, 2, 2, seed=seed, dtype=dtype, backend=backend)


def test_a_seed_gives_the_same_text_and_the_prompt_is_kept():
    model = tiny_gpt()
    a = nk.generate(model, PROMPT[:3], 20, temperature=1.5, seed=5)
    b = nk.generate(model, PROMPT[:3], 20, temperature=1.5, seed=5)
    c = nk.generate(model, PROMPT[:3], 20, temperature=1.5, seed=6)
    assert a.shape == (23,) and a.dtype == np.int64
    assert np.array_equal(a, b) and np.array_equal(a[:3], PROMPT[:3])
    assert not np.array_equal(a, c)  # another seed, another draw (20 draws of 7 ids)
    assert a.min() >= 0 and a.max() < V


def test_greedy_is_the_arg_max_of_the_last_position():
    model = tiny_gpt()
    greedy = nk.generate(model, PROMPT[:5], 6, temperature=0)
    assert np.array_equal(nk.generate(model, PROMPT[:5], 6, top_k=1, seed=3), greedy)
    seq = list(PROMPT[:5])
    for _ in range(6):  # the same loop written out
        logits = host(model(np.array([seq[-T_MAX:]])))
        seq.append(int(np.argmax(logits[0, -1])))
    assert greedy.tolist() == seq


def test_the_context_is_cropped_to_the_models_max_len():
    model = tiny_gpt()
    assert context_length(model) == T_MAX
    long = nk.generate(model, PROMPT, 5, temperature=0)  # 12 > 8: cropped, not refused
    short = nk.generate(model, PROMPT[-T_MAX:], 5, temperature=0)
    assert np.array_equal(long[len(PROMPT):], short[T_MAX:])


def test_a_batch_of_prompts_is_a_batch_of_sequences():
    model = tiny_gpt()
    prompts = np.stack([PROMPT[:4], PROMPT[4:8]])
    out = nk.generate(model, prompts, 5, temperature=0)
    assert out.shape == (2, 9)
    for row in range(2):
        assert np.array_equal(out[row], nk.generate(model, prompts[row], 5, temperature=0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_generates_what_numpy_does(backend):
    ids = [3, 1, 4, 1, 5]
    want = nk.generate(tiny_gpt(), ids, 8, temperature=0.9, top_k=4, seed=11)
    got = nk.generate(tiny_gpt(backend), make(backend, np.array(ids)), 8, temperature=0.9,
                      top_k=4, seed=11)  # the prompt an array of the model's library
    assert np.array_equal(got, want)  # float64 logits agree; the draws come from the seed


def test_sampling_follows_softmax_over_the_top_k():
    logits = np.array([[0.0, 1.0, 2.0, 3.0, -1.0, 2.5]])
    rng = np.random.default_rng(0)
    draws = np.array([sample_next(logits, 0.7, 3, rng)[0] for _ in range(20000)])
    top = [3, 5, 2]  # the three largest
    assert set(np.unique(draws)) <= set(top)
    z = logits[0, top] / 0.7
    p = np.exp(z - z.max())
    p /= p.sum()
    freq = np.array([(draws == i).mean() for i in top])
    assert np.abs(freq - p).max() < 0.015
    draws = [sample_next(logits, 1.0, None, rng)[0] for _ in range(4000)]
    assert 4 in draws  # without top_k every id can come (p[4] ≈ 1.3%)


def test_refusals():
    model = tiny_gpt()
    with pytest.raises(ShapeError, match="at least one token"):
        nk.generate(model, [], 3)
    with pytest.raises(ConfigError, match="tokens must be an integer >= 0"):
        nk.generate(model, [1], -1)
    with pytest.raises(ConfigError, match="temperature"):
        nk.generate(model, [1], 3, temperature=float("nan"))
    with pytest.raises(ConfigError, match="top_k must be an integer >= 1"):
        nk.generate(model, [1], 3, top_k=0)
    with pytest.raises(ConfigError, match="integer token ids"):
        nk.generate(model, [1.5], 3)
    with pytest.raises(NonFiniteError):
        sample_next(np.array([[0.0, np.nan]]), 1.0, None, np.random.default_rng(0))
    assert np.array_equal(nk.generate(model, [1, 2], 0), [1, 2])


def test_a_recurrent_model_carries_its_state_as_rereading_would():
    lstm = nk.Sequential(nk.Embedding(V, 6, std=1.0), nk.LSTM(6, 10, return_sequences=True),
                         nk.LSTM(10, 10, return_sequences=True), nk.Dense(10, V),
                         seed=0, dtype="float64")
    assert context_length(lstm) is None
    out = nk.generate(lstm, PROMPT[:4], 10, temperature=0)
    seq = list(PROMPT[:4])
    for _ in range(10):  # re-reading the whole sequence every step gives the same choices
        seq.append(int(np.argmax(host(lstm(np.array([seq])))[0, -1])))
    assert out.tolist() == seq


@pytest.mark.usefixtures("fake_cupy")
def test_generate_on_the_cupy_double():
    want = nk.generate(tiny_gpt(), [2, 3], 6, temperature=0.8, top_k=3, seed=2)
    model = tiny_gpt("cupy")
    assert model.backend.name == "cupy"
    assert np.array_equal(nk.generate(model, [2, 3], 6, temperature=0.8, top_k=3, seed=2), want)
