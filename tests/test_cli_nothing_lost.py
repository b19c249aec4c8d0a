"""Issue 16 through `nnkernel.cli.main`, in process: divergence, interrupted epochs, BatchNorm's
last batch, memory, run directories, and the files predict reads and writes.

Ctrl-C is a real SIGINT raised after a chosen step (`interrupt_at`, as tests/test_cli.py
does), so where it lands is exact. Each test names the defect it reproduces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import nnkernel.cli.build as build_cli
import nnkernel.cli.train as train_cli
import nnkernel.train as train_module
from nnkernel.cli import main
from nnkernel.io import checkpoint, run_dir

SMALL = ["--hidden", "16", "--batch-size", "64", "--lr", "1e-2", "--quiet"]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file semantics")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnkernel: error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def interrupt_at(monkeypatch, epoch: int, steps_done: int, signum=signal.SIGINT):
    """A real SIGINT (or ``signum``) after `steps_done` steps of `epoch` (from 0)."""
    original = train_module.Progress.step

    def step_then_interrupt(self, e, step, *rest):
        original(self, e, step, *rest)
        if (e, step) == (epoch, steps_done):
            signal.raise_signal(signum)

    monkeypatch.setattr(train_module.Progress, "step", step_then_interrupt)


def all_finite(directory: Path) -> bool:
    return all(np.isfinite(a).all() for a in checkpoint.load_arrays(directory / "model.npz")
               .values())


# ----------------------------------------------------------------- High 2: non-finite weights

def test_the_issues_weight_decay_divergence_saves_nothing_and_says_so(capsys, tmp_path):
    # The loss was finite when the update of the epoch's only step made the weights Inf;
    # only the loss was checked, so the Inf weights were saved as "the last good" checkpoint.
    out = tmp_path / "W"
    code, _, err = run(capsys, "train", "--optimizer", "sgd", "--weight-decay", "1e300",
                       "--batch-size", "1437", "--epochs", "4", "--out", out)
    assert code == 1
    one_line(err.splitlines()[-1] + "\n", "the parameters became NaN/Inf at epoch 1, step 1",
             "nothing was saved (no checkpoint had been written yet)")
    assert run_dir.existing_run_files(out) == []


def test_a_diverged_epoch_is_never_saved_over_the_last_good_one(capsys, tmp_path):
    # A linear model whose weights grow by ~1e20 per SGD step: after epoch 1 they are ~1e19
    # (the loss is still finite), epoch 2's only update makes them Inf, with a finite loss.
    out = tmp_path / "W"
    code, _, err = run(capsys, "train", "--hidden", "none", "--optimizer", "sgd",
                       "--weight-decay", "1e23", "--batch-size", "1437", "--epochs", "4",
                       "--out", out, "--quiet")
    assert code == 1
    one_line(err, "the parameters became NaN/Inf at epoch 2, step 1",
             f"kept the last good checkpoint (end of epoch 1) in {out}")
    saved = run_dir.load(out)
    assert (saved.epoch, saved.step) == (1, 0) and all_finite(out)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == [0]
    code, _, err = run(capsys, "evaluate", out, "--quiet")  # what is kept is usable
    assert code == 0, err


def test_a_divergence_after_a_mid_epoch_resume_names_the_mid_epoch_checkpoint(
        capsys, tmp_path, monkeypatch):
    # "no epoch finished, so no checkpoint was saved" was printed though a mid-epoch
    # checkpoint was on disk. With lr 10 this linear regression overflows at epoch 2, step 6.
    out = tmp_path / "L"
    flags = ["--dataset", "linear", "--hidden", "none", "--optimizer", "sgd", "--lr", "10",
             "--batch-size", "16", "--epochs", "3", "--quiet"]
    interrupt_at(monkeypatch, epoch=1, steps_done=3)
    code, _, err = run(capsys, "train", *flags, "--out", out)
    assert code == 130, err
    monkeypatch.undo()
    code, _, err = run(capsys, "train", "--resume", out, "--quiet")
    assert code == 1
    one_line(err, "loss became NaN/Inf at epoch 2, step 6",
             f"kept the last good checkpoint (epoch 2, step 3) in {out}")
    saved = run_dir.load(out)
    assert (saved.epoch, saved.step) == (1, 3) and all_finite(out)


# ----------------------------------------------- Low: an interrupted epoch's metrics, BatchNorm

def test_an_interrupted_then_resumed_epoch_reports_the_whole_epoch(capsys, tmp_path,
                                                                    monkeypatch):
    # metrics.json covered only the steps after the resume (loss 0.0538 against 0.0937).
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(straight)]) == 0
    interrupt_at(monkeypatch, epoch=1, steps_done=7)
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(split)]) == 130
    partial = json.loads((split / "metrics.json").read_text())["partial_epoch"]
    assert (partial["epoch"], partial["step"], partial["seen"]) == (1, 7, 7 * 64)
    monkeypatch.undo()
    assert main(["train", "--resume", str(split), "--quiet"]) == 0
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, split))
    assert b["epochs"] == [0, 1] and "partial_epoch" not in b
    assert a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"]  # bit for bit
    capsys.readouterr()


def test_batchnorm_never_gets_a_last_batch_of_one_row(capsys, tmp_path):
    # 1437 % 4 == 1: BatchNorm failed at the end of epoch 1 and saved nothing. The single
    # row joins the batch before it, so an epoch has 359 steps, the last of 5 rows.
    out = tmp_path / "bn"
    code, _, err = run(capsys, "train", "--batchnorm", "--hidden", "16", "--batch-size", "4",
                       "--epochs", "2", "--out", out, "--quiet")
    assert code == 0, err
    saved = run_dir.load(out)
    assert (saved.epoch, saved.optimizer_t) == (2, 2 * 359)
    assert all_finite(out)


def test_plan_batches_merges_only_a_single_last_row_and_only_for_batchnorm():
    from nnkernel.train.data import plan_batches

    assert plan_batches(9, 4, merge_single=True) == [(0, 4), (4, 9)]
    assert plan_batches(9, 4, merge_single=False) == [(0, 4), (4, 8), (8, 9)]
    assert plan_batches(10, 4, merge_single=True) == [(0, 4), (4, 8), (8, 10)]
    assert plan_batches(1, 1, merge_single=True) == [(0, 1)]


# ---------------------------------------------------------------- Low: --ensemble 100000

def test_an_ensemble_that_cannot_fit_is_refused_with_the_figure_before_allocating(
        capsys, tmp_path, monkeypatch):
    # It allocated for 100 s, ignored two Ctrl-Cs and left an empty run directory.
    monkeypatch.setattr(build_cli, "_available_memory", lambda: 8 << 30)
    out = tmp_path / "E"
    code, _, err = run(capsys, "train", "--ensemble", "100000", "--out", out)
    assert code == 2
    one_line(err, "this network needs about 147.6 GiB (8,500,200,000 parameters",
             "but 8.0 GiB of memory is available", "--ensemble")
    assert not out.exists()


# ----------------------------------------------------- runs/<time> without --out: no races

def test_two_runs_in_the_same_second_get_two_directories(tmp_path, monkeypatch):
    # The name was chosen by exists() and then created: two runs interrupted in the same
    # second both chose runs/<time>, and the second mkdir failed after its training.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_cli.time, "strftime", lambda fmt: "20250101-120000")
    (tmp_path / "runs" / "20250101-120000").mkdir(parents=True)  # the other run, just now
    monkeypatch.setattr(Path, "exists", lambda self: False)  # ...but not yet when looked at
    assert train_cli.new_run_dir() == Path("runs/20250101-120000-2")


def test_concurrent_new_run_dirs_are_distinct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_cli.time, "strftime", lambda fmt: "20250101-120000")
    barrier, made = threading.Barrier(8), []

    def claim():
        barrier.wait()
        made.append(train_cli.new_run_dir())

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)


def test_ctrl_c_without_out_keeps_both_runs_of_the_same_second(capsys, tmp_path,
                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_cli.time, "strftime", lambda fmt: "20250101-120000")
    interrupt_at(monkeypatch, epoch=0, steps_done=2)
    for seed in ("1", "2"):
        assert main(["train", *SMALL, "--epochs", "1", "--seed", seed]) == 130
    runs = sorted((tmp_path / "runs").iterdir())
    assert [p.name for p in runs] == ["20250101-120000", "20250101-120000-2"]
    assert [json.loads((p / "config.json").read_text())["seed"] for p in runs] == [1, 2]
    capsys.readouterr()


# -------------------------------------------------------------- the files predict touches

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    return out


@posix_only
@pytest.mark.parametrize("kind", ["fifo.npy", "fifo.csv", "zero.npy"])
def test_predict_refuses_a_fifo_or_a_device_as_input_at_once(trained, tmp_path, kind):
    # `nnkernel predict RUN fifo.npy` hung for ever in np.load: a subprocess, so that the
    # defect fails the test by its timeout instead of hanging the suite.
    path = tmp_path / kind
    if kind.startswith("fifo"):
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    p = subprocess.Popen([sys.executable, "-m", "nnkernel", "predict", str(trained), str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    one_line(err, str(path), "not a regular file; refusing to read it",
             "FIFO" if kind.startswith("fifo") else "character device")


def test_predict_refuses_a_npy_whose_header_claims_more_than_it_holds(capsys, trained,
                                                                      tmp_path):
    # np.load would allocate the declared 2.5 GB before finding the data missing.
    path = tmp_path / "claims.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (9999999, 64)})
        f.write(np.zeros((2, 64), dtype="<f4").tobytes())
    code, _, err = run(capsys, "predict", trained, path)
    assert code == 1
    one_line(err, "declares shape (9999999, 64)", "truncated or damaged")


@posix_only
@pytest.mark.parametrize("dangling", [False, True])
def test_predict_output_through_a_symlink_writes_the_file_it_points_at(capsys, trained,
                                                                       tmp_path, dangling):
    # --output dangling.csv replaced the symlink itself with a regular file.
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, 64), dtype=np.float32))
    target, link = tmp_path / "real" / "pred.csv", tmp_path / "pred.csv"
    target.parent.mkdir()
    if not dangling:
        target.write_text("old\n")
    link.symlink_to(target)
    code, _, err = run(capsys, "predict", trained, x, "--output", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 3


@posix_only
def test_predict_output_to_a_device_or_a_missing_directory_is_refused_first(capsys, trained,
                                                                            tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 64), dtype=np.float32))
    link = tmp_path / "null.csv"
    link.symlink_to("/dev/null")
    code, _, err = run(capsys, "predict", trained, x, "--output", link)
    assert code == 2 and os.path.islink(link)
    one_line(err, f"--output {link} (a symlink to /dev/null) is not a regular file")
    code, _, err = run(capsys, "predict", trained, x, "--output", tmp_path / "no" / "p.csv")
    assert code == 2
    one_line(err, f"the directory {tmp_path / 'no'} does not exist")


# ------------------------------------------- beyond the list: early stopping across a resume

@pytest.mark.parametrize("lr", ["3e-2", "1e-2,3e-2,1e-1"], ids=["single", "ensemble"])
def test_early_stopping_stops_alike_after_an_interruption(capsys, tmp_path, monkeypatch, lr):
    # Found probing: its best value, epochs waited and best weights were not saved, so a
    # run interrupted in epoch 10 and resumed counted afresh and trained to epoch 18
    # where the uninterrupted run stopped (restoring its best weights) at epoch 11.
    flags = ["--hidden", "16", "--batch-size", "64", "--lr", lr, "--early-stopping", "2",
             "--epochs", "60", "--quiet"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *flags, "--out", str(straight)]) == 0
    interrupt_at(monkeypatch, epoch=9, steps_done=3)
    assert main(["train", *flags, "--out", str(split)]) == 130
    kept = run_dir.load(split).early_stopping
    assert kept["wait"].shape == (() if "," not in lr else (3,)) and "model/0.W" in kept
    monkeypatch.undo()
    assert main(["train", "--resume", str(split), "--quiet"]) == 0
    a, b = (json.loads((d / "config.json").read_text()) for d in (straight, split))
    assert a["stopped_early_at_epoch"] == b["stopped_early_at_epoch"] == a["epoch"] > 10
    wa, wb = (checkpoint.load_arrays(d / "model.npz") for d in (straight, split))
    assert wa.keys() == wb.keys()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    capsys.readouterr()


def test_an_early_stopped_run_given_more_epochs_trains_on_with_patience_afresh(capsys, tmp_path):
    # A finished run is a model: --epochs N trains on from its saved (best) weights as a new
    # fit, early stopping counting afresh (Keras's fit again), not as the longer run would
    out = tmp_path / "es"
    flags = ["--hidden", "16", "--batch-size", "64", "--lr", "3e-2", "--early-stopping", "2",
             "--quiet"]
    assert main(["train", *flags, "--epochs", "60", "--out", str(out)]) == 0
    stopped = json.loads((out / "config.json").read_text())["stopped_early_at_epoch"]
    assert stopped is not None and stopped < 58
    saved = run_dir.load(out)
    assert saved.early_stopping == {}  # the best weights are the model now
    best = saved.build_model().arrays()
    code, _, err = run(capsys, "train", "--resume", out)  # no --epochs: nothing left
    assert code == 0 and "nothing left to train" in err
    assert main(["train", "--resume", str(out), "--epochs", str(stopped + 10), "--quiet"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["epoch"] >= stopped + 3  # a fresh best, then 2 epochs of patience
    history = json.loads((out / "metrics.json").read_text())
    assert len(history["loss"]) == config["epoch"]
    after = run_dir.load(out).build_model().arrays()
    assert any(not np.array_equal(best[k], after[k]) for k in best)


def test_early_stopping_state_is_checked_against_the_layout(capsys, tmp_path, monkeypatch):
    from nnkernel.io.validate import expected_run_arrays

    out = tmp_path / "es"
    interrupt_at(monkeypatch, epoch=2, steps_done=1)
    assert main(["train", *SMALL, "--early-stopping", "3", "--epochs", "5", "--out",
                 str(out)]) == 130
    expected = expected_run_arrays(json.loads((out / "config.json").read_text()))
    arrays = checkpoint.load_arrays(out / "model.npz")
    assert {k for k in arrays if k.startswith("early_stopping/")} == {
        k for k in expected if k.startswith("early_stopping/")}
    for key, value in arrays.items():
        assert value.shape == expected[key][0] and value.dtype.kind in expected[key][1], key
    arrays["early_stopping/model/0.W"] = np.zeros((3, 3), np.float32)
    checkpoint.save_arrays(out / "model.npz", arrays)
    with pytest.raises(Exception, match=r"early_stopping/model/0.W' has shape \(3, 3\)"):
        run_dir.load(out)
    capsys.readouterr()


# ------------------------------------- beyond the list: a save cut short between its files

def test_a_save_cut_short_between_its_files_resumes_with_each_epoch_once(capsys, tmp_path,
                                                                          monkeypatch):
    # Found probing (disk full in a small tmpfs): model.npz was written first, so a save
    # stopped after it left metrics.json one epoch behind the weights, and the resumed run's
    # metrics skipped that epoch. Now model.npz is written last and load() drops metrics
    # past the position. Here the second file of epoch 2's save fails (disk full).
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert main(["train", *SMALL, "--epochs", "3", "--out", str(straight)]) == 0
    real, calls = checkpoint.atomic_write_bytes, []

    def disk_full_at_the_fifth_write(path, data):
        calls.append(Path(path).name)
        if len(calls) == 5:  # save 1: 3 files; save 2: its second file
            raise checkpoint.CheckpointError(f"cannot write {path}: No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", disk_full_at_the_fifth_write)
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "3", "--out", cut)
    assert code == 1 and "No space left on device" in err
    assert calls[:3] == ["metrics.json", "config.json", "model.npz"]  # model.npz last
    monkeypatch.undo()
    assert run_dir.load(cut).epoch == 1 and run_dir.load(cut).history.epochs == [0]
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, cut))
    assert b["epochs"] == [0, 1, 2] and a["loss"] == b["loss"]
    wa, wb = (checkpoint.load_arrays(d / "model.npz") for d in (straight, cut))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)


def test_predict_on_zero_rows_says_so(capsys, trained, tmp_path):
    x = tmp_path / "none.npy"
    np.save(x, np.zeros((0, 64), dtype=np.float32))
    code, _, err = run(capsys, "predict", trained, x)
    assert code == 1
    one_line(err, "none.npy has no rows (shape (0, 64)); nothing to predict")


def test_curves_of_a_large_ensemble_are_a_band_not_a_line_per_member(tmp_path, monkeypatch):
    # --ensemble 100000 spent minutes drawing 100000 lines and their legend.
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    from nnkernel.train import History

    history = History()
    rng = np.random.default_rng(0)
    for e in range(3):
        history.append(e, {"loss": rng.random(5000).tolist(),
                           "accuracy": rng.random(5000).tolist()})
    drawn = []
    real = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **k: drawn.append(1) or real(self, *a,
                                                                                       **k))
    assert run_dir.save_curves(tmp_path, history, title="ü 中文 run") is None
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert len(drawn) <= 4  # a mean line per panel (and no test point here)


# ------------------------------------------------------ beyond the list: a hang-up (SIGHUP)

@pytest.fixture
def default_sighup():
    if not hasattr(signal, "SIGHUP"):
        pytest.skip("no SIGHUP here")
    old = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, old)


def test_a_hang_up_saves_like_ctrl_c(capsys, tmp_path, monkeypatch, default_sighup):
    # Found probing: closing the terminal or ssh session killed the run (SIGHUP's default),
    # losing the partial epoch.
    interrupt_at(monkeypatch, epoch=0, steps_done=4, signum=signal.SIGHUP)
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "2", "--out", tmp_path / "h")
    assert code == 129
    assert f"hung up at epoch 1 step 4; resume with: nnkernel train --resume {tmp_path / 'h'}" \
        in err
    assert (run_dir.load(tmp_path / "h").epoch, run_dir.load(tmp_path / "h").step) == (0, 4)


def test_under_nohup_a_hang_up_does_not_stop_training(capsys, tmp_path, monkeypatch,
                                                      default_sighup):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does
    interrupt_at(monkeypatch, epoch=0, steps_done=4, signum=signal.SIGHUP)
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "1", "--out", tmp_path / "n")
    assert code == 0, err
    assert run_dir.load(tmp_path / "n").epoch == 1


# ---------------------------------------------- Medium 7: paths that hold from anywhere

def test_resume_and_evaluate_from_another_directory(capsys, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rng = np.random.default_rng(0)
    data = rng.random((60, 3)).astype(np.float32)
    np.savez(tmp_path / "a" / "d.npz", X=data, y=(data[:, 0] > 0.5).astype(np.int64))
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", "--dataset", "d.npz", "--hidden", "4", "--batch-size", "8",
                 "--epochs", "1", "--out", "../run", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path / "b")  # d.npz is not here: the run recorded it absolute
    assert main(["train", "--resume", "../run", "--epochs", "2", "--quiet"]) == 0
    assert main(["evaluate", "../run", "--quiet"]) == 0
    assert run_dir.load(tmp_path / "run").epoch == 2
    capsys.readouterr()


def test_a_mid_epoch_position_past_an_edited_batch_size_is_refused(capsys, tmp_path,
                                                                   monkeypatch):
    out = tmp_path / "r"
    interrupt_at(monkeypatch, epoch=0, steps_done=20)
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    config["hyperparameters"]["batch_size"] = 512  # by hand: 3 steps per epoch now
    (out / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run(capsys, "train", "--resume", out, "--quiet")
    assert code == 2
    one_line(err, "stopped at step 20 of epoch 1, but an epoch of digits has 3 steps; the "
             "data or the batch size in config.json changed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_batchnorm_with_batches_of_one_row_is_refused_before_anything_is_written(capsys,
                                                                                 tmp_path):
    out = tmp_path / "bn1"
    code, _, err = run(capsys, "train", "--batchnorm", "--batch-size", "1", "--hidden", "8",
                       "--epochs", "1", "--out", out)
    assert code == 2
    one_line(err, "--batch-size 1 with --batchnorm: BatchNorm needs at least 2 rows per batch")
    assert not out.exists()


def test_unicode_and_spaces_in_paths(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    data = tmp_path / "données ü 中文.csv"
    data.write_text("a,b,label\n" + "".join(f"{x:.3f},{1 - x:.3f},{int(x > 0.5)}\n"
                                            for x in rng.random(40)), encoding="utf-8")
    out = tmp_path / "run ü 中文"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "--dataset", str(data), "--hidden", "4", "--batch-size", "8",
                     "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert (out / "curves.png").exists()
    assert not [w for w in caught if "Glyph" in str(w.message)]  # they went to stderr
    assert capsys.readouterr().err == ""
    assert main(["evaluate", str(out), "--quiet"]) == 0
