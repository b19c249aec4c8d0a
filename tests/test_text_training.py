"""Language model training: token windows, gradient accumulation against one big batch, and
fit_lm (loss going down, every backend alike, an interrupt and resume bit for bit)."""

from __future__ import annotations

import importlib.util
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import BACKENDS, CPU_BACKENDS, host, torch_or_skip
from cupy_double import fake_cupy  # noqa: F401 - the fixture

import nnkernel as nk
from nnkernel.errors import ConfigError
from nnkernel.losses import cross_entropy
from nnkernel.nn.gpt import decay_keys
from nnkernel.train import lm
from nnkernel.train.accumulate import accumulate_step
from nnkernel.train.step import train_step
from nnkernel.train.windows import TokenWindows, window_loss

V, T = 9, 6


def ids_of(n=300, seed=0):
    """A text of n ids with structure to learn: mostly i -> i + 1, now and then a jump."""
    rng = np.random.default_rng(seed)
    out = [0]
    for _ in range(n - 1):
        out.append((out[-1] + 1) % V if rng.random() < 0.8 else int(rng.integers(V)))
    return np.array(out)


def model_and_optimizer(backend="numpy", dtype="float64", dropout=0.0):
    model = nk.gpt(V, T, 8, 2, 2, dropout=dropout, seed=0, dtype=dtype, backend=backend)
    sched = nk.optim.schedules.LinearWarmup(3, nk.optim.schedules.CosineDecay(20, 0.1))
    opt = nk.optim.AdamW(3e-3, betas=(0.9, 0.99), weight_decay=0.1, decay=decay_keys(model),
                         clip_norm=1.0, schedule=sched)
    return model, opt


def test_windows_are_shifted_by_one_and_drawn_from_the_seed():
    ids = ids_of(50)
    w = TokenWindows(nk.Backend("numpy"), ids, T)
    starts = w.random_starts(4, (0, 3, 0))
    assert np.array_equal(starts, w.random_starts(4, (0, 3, 0)))
    assert starts.min() >= 0 and starts.max() < 50 - T
    x, y = w.batch(starts)
    for row, s in enumerate(starts):
        assert np.array_equal(host(x)[row], ids[s:s + T])
        assert np.array_equal(host(y)[row], ids[s + 1:s + T + 1])
    fixed = w.fixed_starts()
    assert np.array_equal(fixed, np.arange(0, 50 - T, T))  # non-overlapping targets
    assert fixed[-1] + T < 50
    assert np.array_equal(w.fixed_starts(3), fixed[[0, 4, 7]])  # evenly spread (3.5 -> 4)
    with pytest.raises(ConfigError, match="has 6 tokens; windows of block size 6 need at "
                                          "least 7"):
        TokenWindows(nk.Backend("numpy"), ids[:6], T, "the text")


@pytest.mark.parametrize("backend", BACKENDS)
def test_accumulated_micro_batches_step_as_one_big_batch(backend):
    ids = ids_of(200)
    w_np = TokenWindows(nk.Backend("numpy"), ids, T)
    starts = w_np.random_starts(6, 1)
    big, big_opt = model_and_optimizer(backend)
    small, small_opt = model_and_optimizer(backend)
    w = TokenWindows(big.backend, ids, T)
    for _ in range(3):  # three updates, so Adam's moments and the clipping are compared too
        want, _ = train_step(big, cross_entropy, big_opt, w.batch(starts))
        parts = [w.batch(starts[a:b]) for a, b in ((0, 2), (2, 5), (5, 6))]  # 2 + 3 + 1 rows
        got, _ = accumulate_step(small, cross_entropy, small_opt, parts, seed=(0, 1))
        assert float(host(got)) == pytest.approx(float(host(want)), rel=1e-12)
    for key in big.params:
        np.testing.assert_allclose(host(small.params[key]), host(big.params[key]), rtol=1e-9,
                                   atol=1e-12, err_msg=key)


def test_accumulation_reseeds_dropout_per_micro_batch():
    model, opt = model_and_optimizer(dropout=0.3)
    w = TokenWindows(model.backend, ids_of(100), T)
    parts = [w.batch([0, 10]), w.batch([20, 30])]
    before = model.arrays()
    a, _ = accumulate_step(model, cross_entropy, opt, parts, seed=(0, 5))
    model.load_arrays(before)
    opt.reset()
    opt.t = 0
    b, _ = accumulate_step(model, cross_entropy, opt, parts, seed=(0, 5))
    assert float(host(a)) == float(host(b))  # the same masks from the same seed


def test_fit_lm_learns_and_reports_nats_and_bits():
    ids = ids_of(400)
    model, opt = model_and_optimizer()
    history = nk.fit_lm(model, ids[:340], val_ids=ids[340:], steps=20, block_size=T,
                        batch_size=8, optimizer=opt, eval_interval=10, progress=False)
    assert history.epochs == [0, 1] and history["step"] == [10, 20]
    assert history["val_loss"][-1] < history["val_loss"][0] < np.log(V) + 0.2
    assert history["bpc"][0] == pytest.approx(history["loss"][0] / np.log(2))
    val = TokenWindows(model.backend, ids[340:], T)
    assert history["val_loss"][-1] == pytest.approx(window_loss(model, val, val.fixed_starts()))
    assert set(history.history) == {"step", "loss", "bpc", "val_loss", "val_bpc", "lr",
                                    "seconds", "tokens_per_second"}


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["torch"])
def test_fit_lm_runs_alike_on_every_backend(backend):
    if backend == "torch":
        pytest.importorskip("torch")
    ids = ids_of(300)
    results = []
    for name in ("numpy", backend):
        model, opt = model_and_optimizer(name)
        nk.fit_lm(model, ids[:250], val_ids=ids[250:], steps=6, block_size=T, batch_size=4,
                  optimizer=opt, accumulate=2, eval_interval=3, progress=False)
        results.append(model.arrays())
    for key in results[0]:
        np.testing.assert_allclose(results[1][key], results[0][key], rtol=1e-8, atol=1e-11)


@pytest.mark.usefixtures("fake_cupy")
def test_fit_lm_on_the_cupy_double():
    model, opt = model_and_optimizer("cupy")
    history = nk.fit_lm(model, ids_of(200), steps=4, block_size=T, batch_size=4,
                        optimizer=opt, eval_interval=2, progress=False)
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"]).all()


def test_an_interrupt_mid_interval_then_resume_is_bit_identical(monkeypatch):
    ids = ids_of(400)
    settings = {"steps": 12, "block_size": T, "batch_size": 4, "accumulate": 2,
                "eval_interval": 5, "progress": False, "val_ids": ids[340:]}
    straight, opt = model_and_optimizer(dropout=0.2)
    want = nk.fit_lm(straight, ids[:340], optimizer=opt, **settings)

    model, opt = model_and_optimizer(dropout=0.2)
    real = lm.accumulate_step
    calls = []

    def signalled(*args, **kwargs):  # Ctrl-C arrives during step 7 (interval 1, step 2)
        calls.append(1)
        if len(calls) == 8:
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm, "accumulate_step", signalled)
    with pytest.raises(nk.TrainingInterrupted) as stop:
        nk.fit_lm(model, ids[:340], optimizer=opt, **settings)
    assert (stop.value.epoch, stop.value.step) == (1, 3)  # 5 + 3 = 8 steps done
    partial = stop.value.history.partial
    assert partial["epoch"] == 1 and partial["step"] == 3 and partial["seen"] == 3
    monkeypatch.setattr(lm, "accumulate_step", real)
    got = nk.fit_lm(model, ids[:340], optimizer=opt, initial_step=8,
                    history=stop.value.history, **settings)
    for key, value in straight.arrays().items():
        assert np.array_equal(model.arrays()[key], value), key
    assert got.history == want.history | {"seconds": got["seconds"],
                                          "tokens_per_second": got["tokens_per_second"]}


def test_fit_lm_refuses_ids_outside_the_vocabulary_and_short_texts():
    model, opt = model_and_optimizer()
    with pytest.raises(ConfigError, match=r"range over 0\.\.9, but the model predicts 9"):
        nk.fit_lm(model, np.arange(10), steps=1, block_size=T, optimizer=opt)
    with pytest.raises(ConfigError, match="held-out"):
        nk.fit_lm(model, ids_of(100), val_ids=ids_of(4), steps=1, block_size=T,
                  optimizer=opt, progress=False)


def test_the_torch_side_of_the_comparison_runs_the_same_architecture(tmp_path, capsys):
    torch_or_skip()
    path = Path(__file__).resolve().parent.parent / "bench" / "char_lm_torch.py"
    spec = importlib.util.spec_from_file_location("char_lm_torch", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh \n"), size=2000))
    (tmp_path / "t.txt").write_text(text)
    script.main(["--text", str(tmp_path / "t.txt"), "--steps", "2"])
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    vocab = len(set(text))
    assert result["parameters"] == nk.gpt(vocab, 64, 128, 4, 4).num_parameters()
    assert np.isfinite(result["val_loss"]) and result["val_loss"] < np.log(vocab) + 1
    # the same windows: the script draws its starts as TokenWindows does
    w = TokenWindows(nk.Backend("numpy"), np.zeros(1800, dtype=np.int64), 64)
    assert np.array_equal(np.random.default_rng((0, 5, 0)).integers(0, 1800 - 64, size=12),
                          w.random_starts(12, (0, 5, 0)))


@pytest.mark.parametrize("at, stops", [(5, (1, 0)), (12, None)])
def test_a_signal_in_an_intervals_last_step_stops_there_or_finishes(monkeypatch, at, stops):
    model, opt = model_and_optimizer()
    real, calls = lm.accumulate_step, []

    def signalled(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm, "accumulate_step", signalled)
    settings = {"steps": 12, "block_size": T, "batch_size": 2, "eval_interval": 5,
                "optimizer": opt, "progress": False}
    if stops is None:  # the run's last step: it is done, nothing to resume
        assert nk.fit_lm(model, ids_of(100), **settings)["step"] == [5, 10, 12]
        return
    with pytest.raises(nk.TrainingInterrupted) as stop:
        nk.fit_lm(model, ids_of(100), **settings)
    assert (stop.value.epoch, stop.value.step) == stops and stop.value.history["step"] == [5]
