"""Issue 25: what users of the command line tripped on. Each test names the defect.

predict skipped the run's preprocessing, a CSV still holding its target column was called
"a checkpoint of another architecture", evaluate scored a CSV run's training rows as "test",
an ensemble's lr column was empty in evaluate, curves.png did not pair a member's curves,
`| head` ended with "[Errno 32] Broken pipe", and `nnkernel info` imported every backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnkernel import datasets
from nnkernel.cli import main
from nnkernel.io import run_dir

SMALL = ["--hidden", "16", "--batch-size", "64", "--lr", "1e-2"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("usability") / "run"
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    return out


def write_csv(path: Path, header, rows) -> Path:
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


# ------------------------------------------------------------------ predict

def test_predict_applies_the_recorded_preprocessing(capsys, digits_run, tmp_path):
    # Raw digits (pixel counts 0..16) were fed to the model unscaled: saturated probabilities.
    data = datasets.load("digits")
    model = run_dir.load(digits_run).build_model()
    want = np.argmax(np.asarray(model(data.X_test[:50])), axis=-1)
    np.save(tmp_path / "raw.npy", data.X_test[:50] * 16)
    code, out, err = run(capsys, "predict", digits_run, tmp_path / "raw.npy")
    assert code == 0 and err == ""
    assert [int(v) for v in out.split()] == want.tolist()
    # features already scaled, as the dataset loader gives them
    np.save(tmp_path / "scaled.npy", data.X_test[:50])
    code, out, err = run(capsys, "predict", digits_run, tmp_path / "scaled.npy",
                         "--preprocessed")
    assert code == 0 and [int(v) for v in out.split()] == want.tolist()
    code, out, err = run(capsys, "predict", digits_run, tmp_path / "scaled.npy")
    assert code == 0 and "already scaled, pass --preprocessed" in err


def test_predict_help_says_what_it_does_with_the_input(capsys):
    assert main(["predict", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--preprocessed" in text and "recorded preprocessing" in text


def test_a_csv_with_its_target_column_is_told_to_drop_it(capsys, digits_run, tmp_path):
    data = datasets.load("digits")
    rows = [list(x * 16) + [int(t)] for x, t in zip(data.X_test[:5], data.y_test[:5],
                                                     strict=True)]
    csv_in = write_csv(tmp_path / "x.csv", [f"f{i}" for i in range(64)] + ["label"], rows)
    code, _, err = run(capsys, "predict", digits_run, csv_in)
    assert code == 1
    assert "still holds the target column 'label'" in err and "drop that column" in err
    assert "another architecture" not in err


# ------------------------------------------------------------------ evaluate

@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("csvrun")
    data = datasets.load("digits")
    rows = [list(x) + [int(t)] for x, t in zip(data.X_train[:300], data.y_train[:300],
                                               strict=True)]
    path = write_csv(directory / "table.csv", [f"f{i}" for i in range(64)] + ["label"], rows)
    out = directory / "run"
    assert main(["train", "--dataset", str(path), *SMALL, "--epochs", "3", "--out", str(out),
                 "--quiet"]) == 0
    return out, path


def test_evaluate_scores_the_held_out_split_of_a_csv_run(capsys, csv_run):
    # It scored all 300 rows, 240 of them training rows, and called it "test loss".
    out, path = csv_run
    held_out = datasets.load_csv(path).X_test.shape[0]
    code, text, _ = run(capsys, "evaluate", out, "--json")
    result = json.loads(text)
    assert code == 0 and result["rows"] == "test" and result["n_test"] == held_out < 300
    code, text, _ = run(capsys, "evaluate", out)
    assert f"({held_out} samples: the held-out test split of table; 300 rows in all)" in text
    code, text, _ = run(capsys, "evaluate", out, "--rows", "all")
    assert "(300 samples: all 300 rows of table, training rows included)" in text
    assert "test accuracy" not in text and "test loss" not in text
    # the run's own file named again: its held-out split; another file: its every row
    code, text, _ = run(capsys, "evaluate", out, "--dataset", path, "--json")
    assert json.loads(text)["rows"] == "test"
    other = path.with_name("other.csv")
    other.write_bytes(path.read_bytes())
    code, text, _ = run(capsys, "evaluate", out, "--dataset", other, "--json")
    result = json.loads(text)
    assert (result["rows"], result["n_test"]) == ("all", 300)
    assert result["scored"] == "all 300 rows of other"


def test_evaluate_of_an_ensemble_shows_each_members_lr(capsys, tmp_path):
    out = tmp_path / "e"
    assert main(["train", "--hidden", "16", "--batch-size", "64", "--epochs", "1", "--lr",
                 "1e-3,3e-2", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    code, text, _ = run(capsys, "evaluate", out)
    rows = [line.split() for line in text.splitlines() if line.strip()[:1] in ("0", "1")]
    assert code == 0 and rows[0][:2] == ["0", "0.001"] and rows[1][:2] == ["1", "0.03"]


# ------------------------------------------------------------------ curves.png

def test_ensemble_curves_pair_a_members_train_and_validation_with_its_lr():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from nnkernel.train import History

    history = History()
    for e in range(3):
        history.append(e, {"loss": [1.0 - e / 10, 0.9 - e / 10], "val_loss": [1.1, 1.0],
                           "accuracy": [0.5, 0.6], "val_accuracy": [0.4, 0.5]})
    fig = run_dir.curves_figure(history, "t", members=["lr 0.001", "lr 0.01"])
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["member 0 (lr 0.001) train", "member 0 (lr 0.001) validation",
                      "member 1 (lr 0.01) train", "member 1 (lr 0.01) validation"]
    lines = {line.get_label(): line for line in ax.get_lines()}
    for i, lr in enumerate(("0.001", "0.01")):
        train = lines[f"member {i} (lr {lr}) train"]
        val = lines[f"member {i} (lr {lr}) validation"]
        assert train.get_color() == val.get_color()  # one colour per member
        assert train.get_linestyle() == "-" and val.get_linestyle() == "--"
    plt.close(fig)


# ------------------------------------------------------------------ pipes and start-up

@pytest.mark.skipif(os.name != "posix", reason="POSIX pipes")
def test_a_closed_pipe_ends_quietly(tmp_path):
    # `nnkernel info | head` printed "nnkernel: error: [Errno 32] Broken pipe" and exited 1.
    read, write = os.pipe()
    os.close(read)  # the reader has left before the first line
    try:
        p = subprocess.run([sys.executable, "-m", "nnkernel", "info"], stdout=write,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert p.returncode == 141 and p.stderr == ""


def test_info_imports_no_backend_it_does_not_need():
    # `nnkernel info` imported torch, JAX, Dask and CuPy: 6.9 s.
    code = ("import sys; from nnkernel.cli import main; main(['info']); "
            "print([m for m in ('torch', 'jax', 'dask', 'cupy') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    *report, imported = p.stdout.strip().splitlines()
    assert imported == "[]"
    text = "\n".join(report)
    assert "threads (nnkernel train): " in text and "blas:" in text
    assert "--check" in text
