"""The command line's ecosystem commands, end to end through nnkernel.cli.main:
``nnkernel export`` run in onnxruntime, ``evaluate``'s F1 macro and confusion matrix
against scikit-learn, ``predict --proba``, ``--version``, and the curves.png figure.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnkernel as nk
from nnkernel import datasets
from nnkernel.cli import main
from nnkernel.io import run_dir

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")
safetensors = pytest.importorskip("safetensors", reason="safetensors not installed")

SMALL = ["--hidden", "16", "--batch-size", "64", "--lr", "1e-2", "--epochs", "3"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("eco") / "run"
    assert main(["train", *SMALL, "--out", str(out), "--quiet"]) == 0
    return out


def onnx_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# -- nnkernel export -----------------------------------------------------------------------------
def test_export_onnx_safetensors_npz_and_run_them(capsys, trained, tmp_path):
    files = {fmt: tmp_path / f"digits.{fmt}" for fmt in ("onnx", "safetensors", "npz")}
    code, out, err = run(capsys, "export", trained, *(a for fmt, p in files.items()
                                                      for a in (f"--{fmt}", p)))
    assert code == 0, err
    assert err.splitlines() == [f"wrote {p} ({fmt})" for fmt, p in files.items()] and out == ""
    data = datasets.load("digits")
    x = data.X_test.astype(np.float32)
    model = run_dir.load(trained).build_model()
    session = onnx_session(files["onnx"])
    y_onnx = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(y_onnx, model(x), atol=1e-5)
    for fmt in ("safetensors", "npz"):
        loaded = nk.load(files[fmt])
        np.testing.assert_array_equal(loaded(x), model(x))
        assert nk.io.saving.read_metadata(files[fmt])["preprocessing"] == {"divide_by": 16.0}
    # the preprocessing in the ONNX metadata is what turns raw 0..16 pixels into the input
    meta = session.get_modelmeta().custom_metadata_map
    divide = json.loads(meta["preprocessing"])["divide_by"]
    raw = np.round(x * 16.0)
    np.testing.assert_allclose(session.run(None, {"x": (raw / divide).astype(np.float32)})[0],
                               y_onnx, atol=1e-6)
    # and the safetensors file is plain safetensors: its tensors are the model's arrays
    from safetensors.numpy import load_file

    tensors = load_file(files["safetensors"])
    assert set(tensors) == set(model.arrays())
    np.testing.assert_array_equal(tensors["0.W"], model.arrays()["0.W"])
    assert np.mean(np.argmax(y_onnx, 1) == data.y_test) > 0.5  # a trained model, not noise


def test_export_json_and_quiet(capsys, trained, tmp_path):
    code, out, err = run(capsys, "export", trained, "--onnx", tmp_path / "m.onnx", "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == {"run": str(trained), "epoch": 3,
                               "preprocessing": {"divide_by": 16.0},
                               "onnx": str(tmp_path / "m.onnx")}
    code, out, err = run(capsys, "export", trained, "--npz", tmp_path / "m.npz", "--quiet")
    assert (code, out, err) == (0, "", "")


def test_an_ensemble_run_exports_to_onnx(capsys, tmp_path):
    out = tmp_path / "ens"
    assert main(["train", *SMALL, "--ensemble", "2", "--out", str(out), "--quiet"]) == 0
    assert main(["export", str(out), "--onnx", str(tmp_path / "e.onnx"), "--quiet"]) == 0
    x = datasets.load("digits").X_test[:50].astype(np.float32)
    y = onnx_session(tmp_path / "e.onnx").run(None, {"x": x})[0]
    assert y.shape == (2, 50, 10)
    np.testing.assert_allclose(y, run_dir.load(out).build_model()(x), atol=1e-5)


@pytest.mark.parametrize("argv, needle, status", [
    ([], "give at least one of --onnx", 2),
    (["--safetensors", "{tmp}/m.bin"], "must end in .safetensors", 2),
    (["--npz", "{tmp}/m.npz", "--onnx", "{tmp}/m.npz"], "same file", 2),
    (["--npz", "{run}/model.npz"], "replace one of the run's own files", 2),
    (["--opset", "0", "--onnx", "{tmp}/m.onnx"], "positive integer", 2),
])
def test_export_refusals_are_one_line(capsys, trained, tmp_path, argv, needle, status):
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    argv = [a.format(tmp=tmp_path, run=trained) for a in argv]
    code, out, err = run(capsys, "export", trained, *argv)
    assert code == status and needle in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("nnkernel: error: ")
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before
    assert not any(p.suffix in (".onnx", ".bin", ".npz") for p in tmp_path.iterdir())


def test_export_of_a_missing_run(capsys, tmp_path):
    code, _, err = run(capsys, "export", tmp_path / "nope", "--onnx", tmp_path / "m.onnx")
    assert code == 1 and "does not exist" in err


# -- nnkernel evaluate: F1 macro and the confusion matrix ----------------------------------------
def test_evaluate_prints_the_confusion_matrix_and_f1(capsys, trained):
    data = datasets.load("digits")
    pred = np.argmax(run_dir.load(trained).build_model()(data.X_test), axis=1)
    want = sk.confusion_matrix(data.y_test, pred, labels=np.arange(10))
    code, out, _ = run(capsys, "evaluate", trained, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["confusion_matrix"] == want.tolist()
    assert result["f1_macro"] == pytest.approx(sk.f1_score(data.y_test, pred, average="macro"))
    assert result["test_accuracy"] == pytest.approx(np.trace(want) / want.sum())
    code, out, _ = run(capsys, "evaluate", trained)
    lines = out.splitlines()
    assert lines[1] == f"F1 macro {result['f1_macro']:.4f}"
    assert lines[2].startswith("confusion matrix (rows: true class, columns: predicted")
    assert lines[3].split() == [str(j) for j in range(10)]
    for i, row in enumerate(lines[4:14]):
        assert [int(v) for v in row.split()] == [i, *want[i]]


def test_evaluate_an_ensemble_counts_its_mean_probabilities(capsys, tmp_path,
                                                            monkeypatch):
    out = tmp_path / "ens"
    assert main(["train", *SMALL, "--ensemble", "3", "--out", str(out), "--quiet"]) == 0
    data = datasets.load("digits")
    probs = nk.mean_probabilities(run_dir.load(out).build_model()(data.X_test))
    want = sk.confusion_matrix(data.y_test, probs.argmax(1), labels=np.arange(10))
    rows = []
    original = nk.Sequential.run

    def counted(self, run, x, train, side=None):
        rows.append(x.shape[-2])
        return original(self, run, x, train, side)

    monkeypatch.setattr(nk.Sequential, "run", counted)
    code, text, _ = run(capsys, "evaluate", out, "--json")
    result = json.loads(text)
    assert result["confusion_matrix"] == want.tolist()
    assert result["test_accuracy"] == pytest.approx(np.trace(want) / want.sum())
    assert sum(rows) == result["n_test"] == len(data.y_test)  # one pass over the test rows


def test_a_regression_run_has_no_confusion_matrix(capsys, tmp_path):
    out = tmp_path / "lin"
    assert main(["train", "--dataset", "linear", "--epochs", "2", "--out", str(out),
                 "--quiet"]) == 0
    code, text, _ = run(capsys, "evaluate", out, "--json")
    assert code == 0 and "confusion_matrix" not in json.loads(text)


# -- predict --proba, --version ------------------------------------------------------------------
def test_predict_proba_is_the_softmax_and_agrees_with_predict(capsys, trained, tmp_path):
    data = datasets.load("digits")
    np.save(tmp_path / "x.npy", data.X_test[:40] * 16)  # raw: predict divides by 16
    code, labels, _ = run(capsys, "predict", trained, tmp_path / "x.npy")
    code2, proba, _ = run(capsys, "predict", trained, tmp_path / "x.npy", "--proba")
    assert code == code2 == 0
    p = np.array([[float(v) for v in line.split(",")] for line in proba.splitlines()])
    assert p.shape == (40, 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    model = run_dir.load(trained).build_model()
    np.testing.assert_allclose(p, softmax(np.asarray(model(data.X_test[:40]), np.float64)),
                               rtol=1e-5, atol=1e-7)
    assert [int(v) for v in labels.split()] == list(p.argmax(axis=1))
    np.testing.assert_allclose(model.predict_proba(data.X_test[:40]), p, rtol=1e-5, atol=1e-7)


def test_version(capsys):
    from importlib.metadata import version

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"nnkernel {version('nnkernel')}\n" == "nnkernel 0.1.0\n"


# -- curves.png ----------------------------------------------------------------------------------
def test_curves_figure_has_integer_ticks_a_title_and_the_test_point():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    hist = nk.History()
    for e, (loss, acc) in enumerate([(1.0, 0.5), (0.6, 0.7), (0.4, 0.8)]):
        hist.append(e, {"loss": loss, "accuracy": acc, "val_loss": loss + 0.1,
                        "val_accuracy": acc - 0.1})
    fig = run_dir.curves_figure(hist, "digits: run-7", {"loss": 0.55, "accuracy": 0.75})
    fig.canvas.draw()  # the tick locator runs at draw time, as when saved
    assert fig._suptitle.get_text() == "digits: run-7"
    loss_ax, acc_ax = fig.axes
    for ax, test in ((loss_ax, 0.55), (acc_ax, 0.75)):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert len(stars) == 1
        assert list(stars[0].get_xdata()) == [3] and list(stars[0].get_ydata()) == [test]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["train", "validation", f"test {test:.4f}"]
    plt.close(fig)


def test_train_writes_curves_png_named_after_the_run(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.image

    drawn = []
    original = run_dir.curves_figure

    def keep(history, title=None, test=None, members=None):
        fig = original(history, title, test, members)
        drawn.append((title, test, fig))
        return fig

    monkeypatch.setattr(run_dir, "curves_figure", keep)
    out = tmp_path / "run-42"
    code, text, _ = run(capsys, "train", *SMALL, "--out", out, "--json", "--quiet")
    result = json.loads(text)
    (title, test, fig), = drawn
    assert title == "digits: run-42"
    assert test == {"loss": result["test_loss"], "accuracy": result["test_accuracy"]}
    image = matplotlib.image.imread(out / "curves.png")
    assert image.shape[:2] == (360, 1000)  # two panels, 10 x 3.6 inches at 100 dpi
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())
