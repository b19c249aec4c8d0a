"""The Keras-named callbacks: ModelCheckpoint, CSVLogger, ReduceLROnPlateau, TerminateOnNaN.

ReduceLROnPlateau is compared with torch.optim.lr_scheduler.ReduceLROnPlateau on
the same metric sequences; the checkpoints are read back with nk.load.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

import nnkernel as nk
from nnkernel.errors import ConfigError, NonFiniteError
from nnkernel.train import CSVLogger, ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN


def blobs(n=200, d=6, c=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return rng.normal(size=(n, d)) * noise + np.eye(c, d)[y], y


def mlp(seed=0, **kw):
    return nk.Sequential(nk.Dense(6, 12), nk.ReLU(), nk.Dense(12, 3), seed=seed, **kw)


class Snapshots(nk.Callback):
    """Every epoch's parameters, as the other callbacks see them at that epoch's end."""

    def on_train_begin(self, run):
        self.arrays = []

    def on_epoch_end(self, run, logs):
        self.arrays.append(run.model.arrays())


# -- ModelCheckpoint -----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_model_checkpoint_keeps_the_best_epoch_by_a_metric(tmp_path, suffix):
    X, y = blobs()
    Xv, yv = blobs(90, seed=1, noise=2.0)  # noisy: the best epoch is not simply the last
    path = tmp_path / f"best{suffix}"
    snaps, ckpt = Snapshots(), ModelCheckpoint(path, monitor="val_f1_macro")
    model = mlp(seed=1)
    hist = nk.fit(model, X[:80], y[:80], epochs=12, batch_size=16, validation_data=(Xv, yv),
                  metrics=["f1_macro"], callbacks=[snaps, ckpt], progress=False,
                  optimizer=nk.optim.Adam(lr=0.05))
    f1 = hist["val_f1_macro"]
    best = int(np.argmax(f1))  # the first of equal maxima: a tie is no improvement
    assert ckpt.best_epoch == best and ckpt.best_value == pytest.approx(f1[best])
    improvements = sum(1 for e in range(len(f1)) if f1[e] > max(f1[:e], default=-np.inf))
    assert len(ckpt.saved) == improvements
    loaded = nk.load(path)
    for key, value in snaps.arrays[best].items():
        np.testing.assert_array_equal(loaded.arrays()[key], value, err_msg=key)
    assert best < len(f1) - 1 and improvements > 1  # so the last epoch's weights differ:
    assert not np.array_equal(loaded.arrays()["0.W"], model.arrays()["0.W"])


def test_model_checkpoint_every_epoch_with_a_keras_file_pattern(tmp_path):
    X, y = blobs()
    pattern = tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.npz"
    snaps, ckpt = Snapshots(), ModelCheckpoint(pattern, save_best_only=False)
    hist = nk.fit(mlp(), X, y, epochs=3, validation_split=0.2, callbacks=[snaps, ckpt],
                  progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"ckpt-{e + 1:02d}-{v:.3f}.npz" for e, v in enumerate(hist["val_loss"])]
    for e, name in enumerate(names):
        np.testing.assert_array_equal(nk.load(tmp_path / name).arrays()["2.W"],
                                      snaps.arrays[e]["2.W"])


def test_model_checkpoint_of_an_ensemble_and_bad_monitors(tmp_path):
    X, y = blobs()
    ckpt = ModelCheckpoint(tmp_path / "ens.npz", monitor="val_loss")
    nk.fit(mlp(ensemble=2), X, y, epochs=2, validation_split=0.2, callbacks=[ckpt],
           progress=False)
    assert nk.load(tmp_path / "ens.npz").ensemble == 2
    with pytest.raises(ConfigError, match="val_loss.*validation_data or validation_split"):
        nk.fit(mlp(), X, y, epochs=1, callbacks=[ModelCheckpoint(tmp_path / "x.npz")],
               progress=False)
    with pytest.raises(ConfigError, match="not a number"):
        nk.fit(mlp(), X, y, epochs=1, validation_split=0.2, metrics=["confusion_matrix"],
               callbacks=[ModelCheckpoint(tmp_path / "x.npz", monitor="val_confusion_matrix")],
               progress=False)


# -- CSVLogger -----------------------------------------------------------------------------------
def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_writes_one_row_per_epoch_and_appends(tmp_path):
    X, y = blobs()
    path = tmp_path / "log.csv"
    model, opt = mlp(), nk.optim.Adam(lr=0.01)
    hist = nk.fit(model, X, y, optimizer=opt, epochs=3, validation_split=0.25,
                  metrics=["f1_macro", "confusion_matrix"], callbacks=[CSVLogger(path)],
                  progress=False)
    rows = read_csv(path)
    header = rows[0]
    assert header == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "val_f1_macro",
                      "val_confusion_matrix", "seconds", "samples_per_second"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    for e, row in enumerate(rows[1:]):
        for col in ("loss", "accuracy", "val_loss", "val_f1_macro"):
            assert float(row[header.index(col)]) == pytest.approx(hist[col][e], rel=1e-5)
        assert json.loads(row[header.index("val_confusion_matrix")]) == \
            hist["val_confusion_matrix"][e]
    # append: a second fit continues the file under the same header
    nk.fit(model, X, y, optimizer=opt, epochs=5, initial_epoch=3, validation_split=0.25,
           metrics=["f1_macro", "confusion_matrix"], callbacks=[CSVLogger(path, append=True)],
           progress=False, history=hist)
    rows = read_csv(path)
    assert rows[0] == header and [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    assert float(rows[5][1]) == pytest.approx(hist["loss"][4], rel=1e-5)
    # without append the file starts again
    nk.fit(mlp(), X, y, epochs=1, callbacks=[CSVLogger(path)], progress=False)
    rows = read_csv(path)
    assert rows[0] == ["epoch", "loss", "accuracy", "seconds", "samples_per_second"]
    assert len(rows) == 2


def test_csv_logger_for_an_ensemble_and_a_separator(tmp_path):
    X, y = blobs()
    path = tmp_path / "log.tsv"
    hist = nk.fit(mlp(ensemble=3), X, y, epochs=2, callbacks=[CSVLogger(path, separator="\t")],
                  progress=False)
    rows = read_csv(path)
    rows = [r[0].split("\t") for r in rows]
    members = [float(v) for v in rows[2][1].split()]
    assert members == pytest.approx(hist["loss"][1], rel=1e-5) and len(members) == 3


# -- ReduceLROnPlateau against torch -------------------------------------------------------------
def ours(values, **kw):
    """The lr after each epoch, driving the callback with a metric sequence."""
    cb = ReduceLROnPlateau(monitor="val_loss", **kw)
    run = SimpleNamespace(optimizer=nk.optim.SGD(lr=1.0), epoch=0)
    cb.on_train_begin(run)
    lrs = []
    for epoch, v in enumerate(values):
        run.epoch = epoch
        cb.on_epoch_end(run, {"val_loss": v})
        lrs.append(run.optimizer.lr)
    return lrs, cb


def theirs(values, *, factor, patience, cooldown, min_lr, min_delta):
    """torch's scheduler with the Keras counting: patience N there is N + 1 here.

    Keras (and nnkernel) reduce once `patience` epochs have passed without
    improvement; torch once more than `patience` have. Keras counts the last
    epoch of a cooldown as waiting again, torch does not: so Keras' cooldown c
    is torch's c − 1.
    """
    import torch

    torch.set_num_threads(1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=factor, patience=patience - 1, cooldown=max(cooldown - 1, 0),
        min_lr=min_lr, threshold=min_delta, threshold_mode="abs", eps=0.0)
    lrs = []
    for v in values:
        sched.step(v)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize("seed", range(40))
def test_reduce_lr_on_plateau_matches_torch(seed):
    pytest.importorskip("torch", reason="torch not installed")
    rng = np.random.default_rng(seed)
    # a noisy, mostly flat loss: long plateaus with an improvement now and then
    values = list(np.round(np.cumsum(rng.choice([0.0, 0.0, 0.0, -0.05, 0.02], 60)), 4) + 1.0)
    kw = dict(factor=float(rng.choice([0.1, 0.5, 0.8])), patience=int(rng.integers(1, 5)),
              cooldown=int(rng.integers(0, 4)), min_lr=float(rng.choice([0.0, 1e-3, 0.3])),
              min_delta=float(rng.choice([0.0, 1e-4, 0.03])))
    lrs, cb = ours(values, **kw)
    np.testing.assert_allclose(lrs, theirs(values, **kw), rtol=1e-12, err_msg=str(kw))
    assert cb.reductions and min(lrs) >= kw["min_lr"]
    assert all(lr > kw["min_lr"] for _, lr in cb.reductions[:-1])  # none at the floor


def test_reduce_lr_on_plateau_patience_min_lr_and_cooldown_by_hand():
    flat = [1.0] * 12
    lrs, cb = ours(flat, factor=0.5, patience=2)
    # epoch 0 sets the best; epochs 1, 2 wait -> reduced at 2, then every 2 epochs
    assert lrs[:7] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    lrs, cb = ours(flat, factor=0.5, patience=1, min_lr=0.2)
    assert lrs == [1.0, 0.5, 0.25, 0.2] + [0.2] * 8 and len(cb.reductions) == 3
    lrs, _ = ours(flat, factor=0.5, patience=1, cooldown=3)
    assert lrs[:9] == [1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125]


def test_reduce_lr_on_plateau_in_fit_changes_the_optimizer():
    X, y = blobs()
    opt = nk.optim.Adam(lr=0.01)
    cb = ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=10.0,
                           min_lr=0.002)  # nothing is an improvement of 10: it stalls
    nk.fit(mlp(), X, y, optimizer=opt, epochs=6, validation_split=0.2, callbacks=[cb],
           progress=False)
    assert [e for e, _ in cb.reductions] == [1, 2, 3]
    assert opt.lr == pytest.approx(0.002) and opt.current_lr == pytest.approx(0.002)
    ens_opt = nk.optim.Adam(lr=[0.01, 0.004])
    nk.fit(mlp(ensemble=2), X, y, optimizer=ens_opt, epochs=2, validation_split=0.2,
           callbacks=[ReduceLROnPlateau(factor=0.5, patience=1, min_delta=10.0, min_lr=0.003)],
           progress=False)
    np.testing.assert_allclose(ens_opt.lr, [0.005, 0.003])  # each member floored on its own


# -- TerminateOnNaN ------------------------------------------------------------------------------
def diverging():
    """A regression whose learning rate grows 10% a step: it diverges in epoch 7 of 50."""
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(64, 4)), rng.normal(size=(64, 1))
    model = nk.Sequential(nk.Dense(4, 8), nk.Dense(8, 1), seed=0, dtype="float32")
    return model, X, Y, nk.optim.SGD(lr=0.01, schedule=lambda t: 1.1 ** t)


def test_terminate_on_nan_returns_the_history_of_a_diverging_run():
    model, X, Y, opt = diverging()
    kw = dict(loss="mse", epochs=50, batch_size=8, progress=False)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(NonFiniteError,
                                                                     match="epoch 7"):
        nk.fit(model, X, Y, optimizer=opt, **kw)
    model, X, Y, opt = diverging()
    seen = []

    class Ends(nk.Callback):
        def on_train_end(self, run):
            seen.append(run.epoch)

    with np.errstate(over="ignore", invalid="ignore"):
        hist = nk.fit(model, X, Y, optimizer=opt, callbacks=[TerminateOnNaN(), Ends()], **kw)
    assert isinstance(hist, nk.History) and hist.epochs == [0, 1, 2, 3, 4, 5]
    assert all(np.isfinite(hist["loss"]))  # the epochs it logged were whole and finite
    assert seen == [6]  # on_train_end ran, in the epoch that diverged (from 0)


def test_terminate_on_nan_also_when_only_the_parameters_overflow():
    """A loss that is finite at the last step while the update made the weights Inf."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(32, 6)), rng.integers(0, 3, 32)
    kw = dict(epochs=3, batch_size=32, progress=False)
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(NonFiniteError, match="parameters"):
            nk.fit(mlp(dtype="float32"), X, y, optimizer=nk.optim.SGD(lr=1e39), **kw)
        hist = nk.fit(mlp(dtype="float32"), X, y, optimizer=nk.optim.SGD(lr=1e39),
                      callbacks=[TerminateOnNaN()], **kw)
    assert hist.epochs == []
