"""The command line, run in-process through nnkernel.cli.main (plus one real subprocess).

Bad inputs must give one line on stderr, "nnkernel: error: ...", naming the
problem, the documented exit status, no traceback, and no file of an existing
run changed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import nnkernel as nk
import nnkernel.train as train_module
from nnkernel import checkpoint, datasets
from nnkernel.cli import main

SMALL = ["--hidden", "16", "--batch-size", "64", "--lr", "1e-2"]  # fast and quick to learn
JSON_KEYS = {"test_accuracy", "test_loss", "train_seconds", "epochs", "samples_per_second",
             "backend", "device", "dtype"}


def run(capsys, *argv):
    """(exit status, stdout, stderr) of `nnkernel argv...`."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv) -> dict:
    code, out, err = run(capsys, *argv, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def snapshot(directory: Path) -> dict:
    """Every file in a directory, by name, with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())} if directory.exists() \
        else {}


def assert_one_line_error(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    line = lines[0]
    assert line.startswith("nnkernel: error: "), line
    assert "Traceback" not in err
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def load_model_arrays(directory: Path) -> dict:
    return checkpoint.load_arrays(directory / "model.npz")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished digits run (2 epochs of a 64-16-10 MLP) and its --json result."""
    out = tmp_path_factory.mktemp("trained") / "run"
    code = main(["train", *SMALL, "--epochs", "2", "--out", str(out), "--json", "--quiet"])
    assert code == 0
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the finished run, free to be damaged."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def write_csv(path: Path, header, rows):
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def digits_csv(path: Path, labels=None, n=40):
    """A CSV with digits' 64 features and a label column (labels may be replaced)."""
    ds = datasets.load("digits")
    X, y = ds.X_test[:n], ds.y_test[:n] if labels is None else labels
    header = [f"f{i}" for i in range(64)] + ["label"]
    return write_csv(path, header, [list(map(float, x)) + [lab] for x, lab in zip(X, y,
                                                                                   strict=True)])


def write_idx(path: Path, array: np.ndarray, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def idx_dir(tmp_path: Path) -> Path:
    """A tiny but valid (Fashion-)MNIST directory: 20 train and 10 test images."""
    d = tmp_path / "idx"
    d.mkdir()
    rng = np.random.default_rng(0)
    write_idx(d / "train-images-idx3-ubyte", rng.integers(0, 255, (20, 28, 28)))
    write_idx(d / "train-labels-idx1-ubyte", rng.integers(0, 10, 20))
    write_idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 10))
    return d


def cupy_gpu_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return bool(cupy.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU too
        return False


def interrupt_at(monkeypatch, epoch: int, steps_done: int):
    """Press Ctrl-C (a real SIGINT) after `steps_done` steps of `epoch` (from 0)."""
    original = train_module.Progress.step

    def step_then_interrupt(self, e, step, *rest):
        original(self, e, step, *rest)
        if (e, step) == (epoch, steps_done):
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(train_module.Progress, "step", step_then_interrupt)


# ------------------------------------------------------------------------- training

def test_default_train_on_digits_prints_json(capsys):
    result = run_json(capsys, "train", "--epochs", "2")
    assert JSON_KEYS <= set(result)
    assert result["backend"] == "numpy" and result["device"] == "cpu"
    assert result["dtype"] == "float32" and result["dataset"] == "digits"
    assert result["epochs"] == 2 and result["n_train"] == 1437 and result["n_test"] == 360
    assert result["test_accuracy"] > 0.8  # two epochs of the default 64-256-256-10 MLP
    assert result["samples_per_second"] > 0


def test_progress_and_summary_go_to_stderr_and_stdout(capsys):
    code, out, err = run(capsys, "train", *SMALL, "--epochs", "2")
    assert code == 0
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "test accuracy" in out and "samples/s" in out


def test_quiet_prints_nothing_on_stderr(capsys):
    code, out, err = run(capsys, "train", *SMALL, "--epochs", "1", "--quiet")
    assert code == 0 and err == "" and out == ""


def test_out_dir_holds_checkpoint_config_metrics_curves(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"model.npz", "config.json", "metrics.json"} <= names
    if importlib.util.find_spec("matplotlib"):
        assert (trained_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((trained_run / "config.json").read_text())
    assert config["epoch"] == 2 and config["step"] == 0 and config["seed"] == 0
    assert config["nnkernel_version"] == nk.__version__
    assert config["dataset"]["name"] == "digits"
    assert [layer["type"] for layer in config["model"]["layers"]] == ["Dense", "Dense"]
    assert config["optimizer"]["name"] == "Adam" and config["optimizer"]["t"] == 2 * 23
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["epochs"] == [0, 1] and len(metrics["loss"]) == 2
    with np.load(trained_run / "model.npz", allow_pickle=False) as npz:
        assert {"model/0.W", "model/1.b", "optimizer/0.W/exp_avg", "progress/t"} <= set(npz)


def test_curves_skipped_without_matplotlib(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "1", "--out", tmp_path / "r")
    assert code == 0
    assert "skipped curves.png" in err and "matplotlib" in err
    assert not (tmp_path / "r" / "curves.png").exists()


def test_evaluate_and_predict_a_run(capsys, trained_run, tmp_path):
    result = run_json(capsys, "evaluate", trained_run)
    assert JSON_KEYS - {"train_seconds", "samples_per_second", "epochs"} <= set(result)
    assert result["n_test"] == 360 and 0.5 < result["test_accuracy"] <= 1.0

    ds = datasets.load("digits")
    np.save(tmp_path / "x.npy", ds.X_test * 16)  # raw pixel counts, as the dataset holds them
    code, out, err = run(capsys, "predict", trained_run, tmp_path / "x.npy")
    assert code == 0 and err == ""
    predicted = np.array([int(line) for line in out.split()])
    assert predicted.shape == (360,)
    assert np.mean(predicted == ds.y_test) == pytest.approx(result["test_accuracy"])

    # features already divided by 16, as the loader gives them: --preprocessed
    csv_in = write_csv(tmp_path / "x.csv", [f"f{i}" for i in range(64)], ds.X_test[:7].tolist())
    code, _, _ = run(capsys, "predict", trained_run, csv_in, "--output", tmp_path / "p.csv",
                     "--preprocessed")
    assert code == 0
    assert [int(v) for v in (tmp_path / "p.csv").read_text().split()] == predicted[:7].tolist()


def test_info_lists_versions_and_backends(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert f"nnkernel {nk.__version__}" in out
    assert re.search(r"numpy\s+available", out)
    assert f"numpy {np.__version__}" in out and "array-api-compat" in out and "blas" in out


def test_ensemble_json_has_per_member_lists(capsys):
    result = run_json(capsys, "train", *SMALL, "--epochs", "1", "--ensemble", "3")
    assert len(result["member_test_accuracy"]) == 3 and len(result["member_test_loss"]) == 3
    assert result["member_lr"] == [1e-2] * 3
    assert 0.0 <= result["test_accuracy"] <= 1.0
    # distinct initial weights: the members disagree
    assert len(set(result["member_test_loss"])) == 3


def test_learning_rate_list_is_one_member_per_value(capsys):
    flags = ["--hidden", "16", "--batch-size", "64", "--epochs", "1", "--lr", "1e-3,3e-3"]
    result = run_json(capsys, "train", *flags)
    assert result["member_lr"] == [1e-3, 3e-3]
    assert len(result["member_test_accuracy"]) == 2
    code, out, _ = run(capsys, "train", *flags)
    assert code == 0 and "member" in out and "ensemble (mean probabilities)" in out


def test_early_stopping_holds_out_validation_data(capsys, tmp_path):
    out = tmp_path / "run"
    result = run_json(capsys, "train", *SMALL, "--lr", "0.05", "--epochs", "60",
                      "--early-stopping", "2", "--out", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert "val_loss" in metrics and "val_accuracy" in metrics
    assert result["n_train"] == 1437 - 144  # 10% held out
    stopped = json.loads((out / "config.json").read_text())["stopped_early_at_epoch"]
    assert stopped == len(metrics["epochs"]) == result["epochs"] < 60


def test_regression_run_predicts_values(capsys, tmp_path):
    out = tmp_path / "run"
    result = run_json(capsys, "train", "--dataset", "linear", "--epochs", "30", "--out", out)
    assert result["test_accuracy"] is None and result["test_loss"] < 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["hyperparameters"]["loss"] == "mse"
    X = datasets.load("linear").X_test[:4]
    np.save(tmp_path / "x.npy", X)
    code, stdout, _ = run(capsys, "predict", out, tmp_path / "x.npy", "--output",
                          tmp_path / "p.npy")
    assert code == 0
    predicted = np.load(tmp_path / "p.npy")
    assert predicted.shape == (4, 1) and predicted.dtype == np.float32


def test_bench_gets_the_remaining_arguments(capsys, monkeypatch):
    seen = []
    fake = type(sys)("nnkernel.bench")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "nnkernel.bench", fake)
    monkeypatch.setattr(nk, "bench", fake, raising=False)
    assert main(["bench", "--quick", "--only", "mlp", "--json"]) == 3
    assert seen == [["--quick", "--only", "mlp", "--json"]]


def test_subprocess_python_m_nnkernel(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-m", "nnkernel", "train", "--epochs", "1",
                           "--quiet", "--json", *SMALL], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert JSON_KEYS <= set(json.loads(proc.stdout))


# ------------------------------------------------------------------- resume and Ctrl-C

def test_resume_is_bit_identical_to_an_uninterrupted_run(capsys, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = [*SMALL, "--quiet", "--json"]
    assert main(["train", *common, "--epochs", "4", "--out", str(straight)]) == 0
    assert main(["train", *common, "--epochs", "2", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "4", "--quiet", "--json"]) == 0
    capsys.readouterr()
    a, b = load_model_arrays(straight), load_model_arrays(split)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    metrics = json.loads((split / "metrics.json").read_text())
    assert metrics["epochs"] == [0, 1, 2, 3]


def test_ctrl_c_saves_and_mid_epoch_resume_is_bit_identical(capsys, tmp_path, monkeypatch):
    # Dropout and a cosine schedule make the result depend on (epoch, step) and optimizer.t.
    flags = ["--hidden", "16,16", "--batch-size", "100", "--dropout", "0.2", "--batchnorm",
             "--schedule", "cosine", "--epochs", "3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *flags, "--out", str(straight), "--quiet"]) == 0
    interrupt_at(monkeypatch, epoch=1, steps_done=5)
    code, _, err = run(capsys, "train", *flags, "--out", split, "--quiet")
    assert code == 130
    assert f"interrupted at epoch 2 step 5; resume with: nnkernel train --resume {split}" in err
    config = json.loads((split / "config.json").read_text())
    assert (config["epoch"], config["step"]) == (1, 5)
    assert config["optimizer"]["t"] == 15 + 5  # 15 steps per epoch
    monkeypatch.undo()
    code, _, err = run(capsys, "train", "--resume", split, "--quiet")
    assert code == 0, err
    a, b = load_model_arrays(straight), load_model_arrays(split)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_ctrl_c_without_out_saves_into_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    interrupt_at(monkeypatch, epoch=0, steps_done=3)
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "2", "--quiet")
    assert code == 130
    saved = list((tmp_path / "runs").iterdir())
    assert len(saved) == 1 and (saved[0] / "model.npz").exists()
    assert f"saved the interrupted run to runs{os.sep}{saved[0].name}" in err
    assert "interrupted at epoch 1 step 3; resume with: nnkernel train --resume runs" in err


def test_ctrl_c_in_the_last_step_finishes_the_epoch(capsys, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, epoch=0, steps_done=23)  # 1437 / 64: 23 steps
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "3", "--out", tmp_path / "r",
                       "--quiet")
    assert code == 130 and "interrupted at epoch 2 step 0" in err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (config["epoch"], config["step"]) == (1, 0)
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs"] == [0]


# -------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("flag, value, needles", [
    ("--activation", "swoosh", ["unknown activation", "'swoosh'", "relu", "tanh"]),
    ("--optimizer", "adamax", ["unknown optimizer", "'adamax'", "adam", "sgd"]),
    ("--loss", "hinge", ["unknown loss", "'hinge'", "cross_entropy", "mse"]),
    ("--dataset", "cifar", ["unknown dataset", "'cifar'", "digits", "fashion-mnist"]),
    ("--schedule", "cyclic", ["unknown schedule", "'cyclic'", "cosine", "warmup"]),
])
def test_unknown_names_list_the_valid_ones(capsys, tmp_path, flag, value, needles):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "train", *SMALL, flag, value, "--out", out)
    assert code == 2 and stdout == ""
    assert_one_line_error(err, *needles)
    assert not out.exists()  # nothing written before the inputs are checked


@pytest.mark.parametrize("argv, needles", [
    (["--batch-size", "0"], ["--batch-size", "positive integer", "0"]),
    (["--batch-size", "-3"], ["--batch-size", "positive integer", "-3"]),
    (["--batch-size", "5000"], ["batch-size 5000", "larger than the 1437 training samples"]),
    (["--hidden", "16,x"], ["--hidden", "16,x"]),
    (["--dropout", "1.5"], ["--dropout", "1.5"]),
    (["--lr", "-1"], ["--lr", "> 0"]),
    (["--device", "tpu"], ["--device", "tpu"]),
    (["--lr", "1e-3,2e-3", "--ensemble", "3"], ["--lr lists 2 values", "--ensemble is 3"]),
])
def test_bad_settings_are_usage_errors(capsys, tmp_path, argv, needles):
    out = tmp_path / "out"
    code, _, err = run(capsys, "train", "--hidden", "8", *argv, "--out", out)
    assert code == 2
    assert_one_line_error(err, *needles)
    assert not out.exists()


def test_existing_run_is_never_overwritten(capsys, run_copy, trained_run):
    before = snapshot(run_copy)
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "1", "--out", run_copy)
    assert code == 2
    assert_one_line_error(err, "already holds a run", "--resume")
    # continuing one run into another run's directory is refused too
    code, _, err = run(capsys, "train", "--resume", trained_run, "--epochs", "3",
                       "--out", run_copy)
    assert code == 2
    assert_one_line_error(err, "already holds a run")
    assert snapshot(run_copy) == before


def test_float_labels_with_cross_entropy(capsys, tmp_path):
    data = write_csv(tmp_path / "reg.csv", ["a", "b", "label"],
                     [[i, i * 2, i * 0.5 + 0.25] for i in range(30)])
    out = tmp_path / "out"
    code, _, err = run(capsys, "train", "--dataset", data, "--loss", "cross_entropy",
                       "--hidden", "4", "--batch-size", "4", "--out", out)
    assert code == 1
    assert_one_line_error(err, "cross_entropy needs integer class labels", "float")
    assert not out.exists()


def test_labels_out_of_range_for_the_model(capsys, run_copy, tmp_path):
    data = digits_csv(tmp_path / "d.csv", labels=[12] * 40)  # the model has 10 classes
    before = snapshot(run_copy)
    code, _, err = run(capsys, "evaluate", run_copy, "--dataset", data)
    assert code == 1
    assert_one_line_error(err, "d.csv, line 2, column 'label': label 12 is not one of the "
                          "run's classes 0..9")
    assert snapshot(run_copy) == before


def test_nan_in_training_inputs(capsys, tmp_path):
    rows = [[i, i + 1, i % 2] for i in range(30)]
    rows[7][1] = "nan"
    data = write_csv(tmp_path / "nan.csv", ["a", "b", "label"], rows)
    code, _, err = run(capsys, "train", "--dataset", data, "--hidden", "4", "--batch-size", "4")
    assert code == 1
    assert_one_line_error(err, "NaN or Inf", "line 9", "'b'")


def test_inf_in_predict_input(capsys, trained_run, tmp_path):
    X = np.zeros((3, 64), dtype=np.float32)
    X[1, 5] = np.inf
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "pred.csv"
    out.write_text("old\n")
    code, _, err = run(capsys, "predict", trained_run, tmp_path / "x.npy", "--output", out)
    assert code == 1
    assert_one_line_error(err, "NaN or Inf", "row 1", "column 5")
    assert out.read_text() == "old\n"


def test_empty_dataset(capsys, tmp_path):
    data = write_csv(tmp_path / "empty.csv", ["a", "b", "label"], [])
    code, _, err = run(capsys, "train", "--dataset", data)
    assert code == 1
    assert_one_line_error(err, "empty")


def test_truncated_idx_file(capsys, tmp_path):
    d = idx_dir(tmp_path)
    images = d / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    code, _, err = run(capsys, "train", "--dataset", "fashion-mnist", "--data-dir", d)
    assert code == 1
    assert_one_line_error(err, "train-images-idx3-ubyte", "truncated")


def test_corrupt_idx_magic(capsys, tmp_path):
    d = idx_dir(tmp_path)
    labels = d / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x12\x34" + labels.read_bytes()[2:])
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--data-dir", d)
    assert code == 1
    assert_one_line_error(err, "t10k-labels-idx1-ubyte", "not an IDX file", "magic")


def test_corrupt_checkpoint(capsys, run_copy):
    (run_copy / "model.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    before = snapshot(run_copy)
    code, _, err = run(capsys, "evaluate", run_copy)
    assert code == 1
    assert_one_line_error(err, "model.npz", "not an .npz")
    code, _, err = run(capsys, "train", "--resume", run_copy)
    assert code == 1
    assert_one_line_error(err, "model.npz")
    assert snapshot(run_copy) == before


class _MakeMarker:
    """Unpickling this runs os.mkdir(marker): proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_hostile_checkpoint_never_runs_code(capsys, run_copy, tmp_path):
    marker = tmp_path / "pwned"
    payload = np.array([_MakeMarker(marker)], dtype=object)
    hostile = tmp_path / "hostile.npz"
    np.savez(hostile, **{"model/0.W": payload})
    # The payload works: a careless np.load(allow_pickle=True) would run it.
    probe = tmp_path / "probe"
    with zipfile.ZipFile(hostile) as zf, zf.open("model/0.W.npy") as f:
        np.lib.format.read_array(f, allow_pickle=True)
    assert marker.exists()
    marker.rmdir()

    shutil.copy(hostile, run_copy / "model.npz")
    before = snapshot(run_copy)
    for argv in (["evaluate", run_copy], ["train", "--resume", run_copy],
                 ["predict", run_copy, probe]):
        code, _, err = run(capsys, *argv)
        assert code == 1
        assert_one_line_error(err, "model.npz")
        assert not marker.exists()
    assert snapshot(run_copy) == before


def test_checkpoint_of_another_architecture(capsys, run_copy, tmp_path):
    other = tmp_path / "other"
    assert main(["train", "--hidden", "32", "--batch-size", "64", "--epochs", "1", "--quiet",
                 "--out", str(other)]) == 0
    shutil.copy(other / "model.npz", run_copy / "model.npz")  # 32 wide, config says 16
    before = snapshot(run_copy)
    capsys.readouterr()
    code, _, err = run(capsys, "train", "--resume", run_copy, "--epochs", "3")
    assert code == 1
    assert_one_line_error(err, "does not match the architecture", "(64, 16)", "(64, 32)")
    assert snapshot(run_copy) == before


def test_features_of_another_width_for_predict(capsys, trained_run, tmp_path):
    data = write_csv(tmp_path / "x.csv", ["a", "b", "c", "d", "e"], [[1, 2, 3, 4, 5]] * 3)
    code, _, err = run(capsys, "predict", trained_run, data)
    assert code == 1
    assert_one_line_error(err, "takes 64 features", "has 5", "another architecture")


def test_dataset_of_another_width_for_evaluate(capsys, trained_run, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "ten.npz"
    np.savez(data, X=rng.random((50, 10)), y=rng.integers(0, 3, 50))
    code, _, err = run(capsys, "evaluate", trained_run, "--dataset", data)
    assert code == 1
    assert_one_line_error(err, "takes 64 features", "has 10")


def test_missing_resume_dir(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--resume", tmp_path / "nowhere")
    assert code == 1
    assert_one_line_error(err, "nowhere", "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_resume_refuses_changed_hyperparameters(capsys, run_copy):
    before = snapshot(run_copy)
    code, _, err = run(capsys, "train", "--resume", run_copy, "--lr", "0.1", "--hidden", "8")
    assert code == 2
    assert_one_line_error(err, "--hidden, --lr cannot be changed when resuming")
    assert snapshot(run_copy) == before


def test_gpu_without_cupy_or_gpu(capsys, tmp_path):
    if cupy_gpu_available():
        pytest.skip("CuPy sees a GPU here, so --device gpu is valid")
    code, _, err = run(capsys, "train", "--device", "gpu", "--out", tmp_path / "o")
    assert code == 1
    assert_one_line_error(err, "cupy")
    assert not (tmp_path / "o").exists()


def test_numpy_backend_on_gpu_is_refused(capsys):
    code, _, err = run(capsys, "train", "--device", "gpu:1", "--backend", "numpy")
    assert code == 2
    assert_one_line_error(err, "--backend numpy runs on the CPU only")


def test_torch_tensor_into_numpy_model():
    """Taken through DLPack without a copy (it lives on the model's device, the CPU)."""
    torch = pytest.importorskip("torch")
    model = nk.Sequential(nk.Dense(4, 3), seed=0)
    x = torch.randn(2, 4)
    out = model.forward(x)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, model.forward(x.numpy()))


def test_nan_loss_names_epoch_and_step_and_keeps_last_checkpoint(capsys, tmp_path):
    # Full-batch gradient descent with lr above 2/L on linear regression diverges
    # geometrically: the loss overflows float32 after a few dozen epochs.
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--dataset", "linear", "--hidden", "none",
                       "--optimizer", "sgd", "--lr", "2.0", "--batch-size", "160",
                       "--epochs", "200", "--out", out, "--quiet")
    assert code == 1
    line = assert_one_line_error(err, "NaN/Inf", "step 1", "kept the last good checkpoint")
    bad_epoch = int(re.search(r"epoch (\d+)", line).group(1))
    assert bad_epoch > 1
    config = json.loads((out / "config.json").read_text())
    assert config["epoch"] == bad_epoch - 1  # the epoch before the failure, intact
    arrays = load_model_arrays(out)
    assert int(arrays["progress/epoch"]) == bad_epoch - 1
    assert all(np.isfinite(a).all() for a in arrays.values())
    assert not (out / "curves.png").exists()


def test_predict_refuses_to_overwrite_its_input(capsys, trained_run, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 64), dtype=np.float32))
    before = x.read_bytes()
    code, _, err = run(capsys, "predict", trained_run, x, "--output", x)
    assert code == 2
    assert_one_line_error(err, "is the input file")
    assert x.read_bytes() == before


def test_bench_without_module_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nnkernel.bench", None)  # import fails
    monkeypatch.delattr(nk, "bench", raising=False)  # an earlier test may have imported it
    code, _, err = run(capsys, "bench", "--quick")
    assert code == 1
    assert_one_line_error(err, "bench", "nnkernel.bench")


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(nk.ConfigError, match="unknown activation"):
        main(["train", "--activation", "swoosh", "--debug"])
