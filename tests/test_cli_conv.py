"""`nnkernel train --conv`: a tiny CNN on the 8x8 digits, end to end.

Training, the checkpoint and its config, resume (bit-identical to a straight run),
evaluate, predict from flat rows (.npy, .csv) and from (N, C, H, W) images, export,
and the errors a conv run can meet.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import assert_one_line_error, load_model_arrays, run, run_json

import nnkernel as nk
from nnkernel.cli import main
from nnkernel.io import datasets, run_dir

TINY = ["--dataset", "digits", "--conv", "4", "--hidden", "16", "--batch-size", "64",
        "--lr", "1e-2"]


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "run"
    assert main(["train", *TINY, "--epochs", "3", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_builds_the_documented_blocks_and_learns(capsys, tmp_path):
    result = run_json(capsys, "train", *TINY, "--conv", "4,8", "--epochs", "3", "--out",
                      tmp_path / "run")
    assert result["test_accuracy"] > 0.6  # chance is 0.1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    layers = config["model"]["layers"]
    # ReLU after the pool: max commutes with it, so the same function on fewer values
    assert [layer["type"] for layer in layers] == ["Conv2D", "MaxPool2D", "ReLU", "Conv2D",
                                                  "MaxPool2D", "ReLU", "Flatten", "Dense",
                                                  "Dense"]
    first = layers[0]
    assert (first["in_channels"], first["out_channels"], first["kernel_size"],
            first["padding"], first["init"]) == (1, 4, 3, 1, "he_normal")
    assert layers[7]["n_in"] == 8 * 2 * 2  # 8x8 -> 4x4 -> 2x2 after two pools
    assert config["model"]["input_shape"] == [1, 8, 8]
    assert config["hyperparameters"]["conv"] == [4, 8]


def test_batchnorm_and_ensemble_conv_runs(capsys, tmp_path):
    result = run_json(capsys, "train", *TINY, "--batchnorm", "--ensemble", "2", "--epochs", "1",
                      "--out", tmp_path / "run")
    assert len(result["member_test_accuracy"]) == 2
    model = run_dir.load(tmp_path / "run").build_model()
    assert [type(layer).__name__ for layer in model.layers][:4] == ["Conv2D", "BatchNorm2D",
                                                                    "MaxPool2D", "ReLU"]
    assert model.ensemble == 2


def test_resume_is_bit_identical_to_an_uninterrupted_run(capsys, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", *TINY, "--epochs", "2", "--out", str(straight), "--quiet"]) == 0
    assert main(["train", *TINY, "--epochs", "1", "--out", str(split), "--quiet"]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2", "--quiet"]) == 0
    a, b = load_model_arrays(straight), load_model_arrays(split)
    assert a.keys() == b.keys() and any(k.endswith("0.W") for k in a)
    for key in a:
        assert np.array_equal(a[key], b[key]), key


def test_evaluate_reports_what_training_reported(capsys, tmp_path):
    trained = run_json(capsys, "train", *TINY, "--epochs", "2", "--out", tmp_path / "run")
    evaluated = run_json(capsys, "evaluate", tmp_path / "run")
    assert evaluated["test_accuracy"] == trained["test_accuracy"]
    assert evaluated["test_loss"] == pytest.approx(trained["test_loss"], rel=1e-6)


def test_predict_takes_flat_rows_or_images(capsys, conv_run, tmp_path):
    X = datasets.load("digits").X_test[:20]
    model = run_dir.load(conv_run).build_model()
    want = np.argmax(np.asarray(model(X.reshape(20, 1, 8, 8))), axis=-1)
    X = X * 16  # raw pixel counts: predict divides them by 16, as the dataset loader did
    np.save(tmp_path / "flat.npy", X)
    np.save(tmp_path / "images.npy", X.reshape(20, 1, 8, 8))
    np.savetxt(tmp_path / "flat.csv", X, delimiter=",")
    for name in ("flat.npy", "images.npy", "flat.csv"):
        code, out, err = run(capsys, "predict", conv_run, tmp_path / name)
        assert code == 0, err
        np.testing.assert_array_equal([int(v) for v in out.split()], want)


@pytest.mark.parametrize("shape, needles", [
    ((5, 63), ("takes images (1, 8, 8)", "64 values per row", "has 63")),
    ((5, 3, 8, 8), ("takes images (1, 8, 8)", "(5, 3, 8, 8)")),
    ((5, 8, 8), ("(samples, C, H, W)", "(5, 8, 8)")),
])
def test_predict_input_of_another_shape_is_one_line(capsys, conv_run, tmp_path, shape, needles):
    np.save(tmp_path / "x.npy", np.zeros(shape, dtype=np.float32))
    code, _, err = run(capsys, "predict", conv_run, tmp_path / "x.npy")
    assert code == 1
    assert_one_line_error(err, *needles)


def test_export_writes_an_onnx_graph_that_onnxruntime_runs(capsys, conv_run, tmp_path):
    pytest.importorskip("onnx", reason="onnx not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    path = tmp_path / "digits.onnx"
    code, _, err = run(capsys, "export", conv_run, "--onnx", path, "--npz", tmp_path / "m.npz")
    assert code == 0, err
    images = datasets.load("digits").X_test[:16].reshape(16, 1, 8, 8)
    model = run_dir.load(conv_run).build_model()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": images})[0]
    np.testing.assert_allclose(got, np.asarray(model(images)), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(nk.load(tmp_path / "m.npz")(images), model(images))


def test_conv_on_data_that_are_not_images_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--dataset", "xor", "--conv", "4", "--out",
                       tmp_path / "run")
    assert code == 2  # a configuration error
    assert_one_line_error(err, "--conv needs images", "xor")
    assert not (tmp_path / "run").exists()


def test_too_many_blocks_for_the_image_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "train", *TINY, "--conv", "4,4,4,4", "--out", tmp_path / "run")
    assert code == 1
    assert_one_line_error(err, "MaxPool2D", "does not fit")


def test_an_npz_of_images_keeps_its_image_shape(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (60, 6, 6), dtype=np.uint8)
    y = (X[:, :3].mean(axis=(1, 2)) > X[:, 3:].mean(axis=(1, 2))).astype(np.int64)
    np.savez(tmp_path / "imgs.npz", X=X, y=y)
    data = datasets.load(tmp_path / "imgs.npz")
    assert data.image_shape == (1, 6, 6) and data.X_train.shape[1] == 36
    result = run_json(capsys, "train", "--dataset", tmp_path / "imgs.npz", "--conv", "2",
                      "--hidden", "4", "--epochs", "1", "--batch-size", "16")
    assert result["n_test"] == 12
    assert datasets.load("digits").image_shape == (1, 8, 8)
    assert datasets.load("xor").image_shape is None


@pytest.mark.parametrize("layer, field, value, message", [
    (0, "kernel_size", "3", r"layers\[0\].kernel_size must be a positive integer"),
    (0, "padding", -1, r"layers\[0\].padding must be an integer >= 0"),
    (0, "in_channels", True, r"layers\[0\].in_channels must be a positive integer"),
    (0, "out_channels", 2**40, "more than a checkpoint may hold"),
    (0, "activation", "nope", r"layers\[0\].activation must be one of"),
    (1, "stride", 0, r"layers\[1\].stride must be a positive integer"),
    (0, "bogus", 1, r"layers\[0\] \(Conv2D\) has an unknown field 'bogus'"),
    (None, "input_shape", [1, "8", 8], "model.input_shape must be a list of positive sizes"),
])
def test_a_damaged_conv_config_is_refused_with_the_field_named(conv_run, layer, field, value,
                                                              message):
    import re

    from nnkernel.io.run_config import validate_run_config

    config = json.loads((conv_run / "config.json").read_text())
    assert validate_run_config(config) == []
    target = config["model"] if layer is None else config["model"]["layers"][layer]
    target[field] = value
    problems = validate_run_config(config)
    assert any(re.search(message, p) for p in problems), problems


@pytest.mark.parametrize("argv, hidden, epochs, schedule", [
    (["--dataset", "fashion-mnist", "--conv", "32,64"], [128], 6, "cosine"),
    (["--dataset", "fashion-mnist", "--conv", "8", "--epochs", "2", "--hidden", "32"], [32], 2,
     "cosine"),
    (["--dataset", "fashion-mnist"], [256, 256], 15, "cosine"),  # no --conv: the MLP's
    (["--dataset", "digits", "--conv", "4"], [128], 20, "constant"),
])
def test_conv_runs_take_the_conv_defaults(argv, hidden, epochs, schedule):
    from nnkernel.cli import build_parser
    from nnkernel.cli.settings import new_settings

    hyper = new_settings(build_parser().parse_args(["train", *argv]))["hyperparameters"]
    assert (hyper["hidden"], hyper["epochs"], hyper["schedule"]) == (hidden, epochs, schedule)
