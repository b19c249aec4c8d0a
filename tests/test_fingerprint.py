"""The training data's fingerprint, and dataset paths that survive a change of directory."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from nnkernel.io.fingerprint import (
    absolute_dataset_spec,
    check_fingerprint,
    data_fingerprint,
    sampled_rows,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((1000, 12)).astype(np.float32), rng.integers(0, 3, 1000)


def test_sampled_rows():
    assert sampled_rows(0) == [] and sampled_rows(1) == [0] and sampled_rows(3) == [0, 1, 2]
    rows = sampled_rows(60_000)
    assert rows[0] == 0 and rows[-1] == 59_999 and 30_000 in rows and len(rows) == 65
    assert len(sampled_rows(10)) == 10


def test_equal_data_give_equal_fingerprints(data):
    X, y = data
    f = data_fingerprint(X, y)
    assert f == data_fingerprint(X.copy(), y.copy())
    assert f == data_fingerprint(X.astype(">f4"), y.astype(">i8"))  # byte order is not data
    assert check_fingerprint(f, data_fingerprint(X, y)) is None
    assert f["n_samples"] == 1000 and f["n_features"] == 12 and f["dtype"] == "float32"
    assert f["y_dtype"] == "int64" and f["y_shape"] == []


@pytest.mark.parametrize(("change", "needle"), [
    (lambda X, y: (X[:900], y[:900]), "1000 samples then, 900 now"),
    (lambda X, y: (X[:, :10], y), "12 features then, 10 now"),
    (lambda X, y: (X.astype(np.float64), y), "float32 feature dtype then, float64 now"),
    (lambda X, y: (X, np.eye(3)[y]), "[] target shape then, [3] now"),
    (lambda X, y: (X[::-1].copy(), y[::-1].copy()), "other values in the sampled rows"),
    (lambda X, y: (X + np.float32(1e-3) * (np.arange(1000) == 500)[:, None], y),
     "other values"),
])
def test_what_differs_is_said(data, change, needle):
    X, y = data
    saved = data_fingerprint(X, y)
    message = check_fingerprint(saved, data_fingerprint(*change(X, y)))
    assert message is not None and message.startswith("the training data differ")
    assert needle in message


def test_runs_without_a_fingerprint_cannot_be_checked(data):
    current = data_fingerprint(*data)
    assert check_fingerprint(None, current) is None
    assert check_fingerprint({"scheme": "other"}, current) is None
    assert "damaged" in check_fingerprint("abc", current)


def test_cheap_on_fashion_mnist_sized_data():
    X = np.zeros((60_000, 784), dtype=np.float32)
    y = np.zeros(60_000, dtype=np.int64)
    data_fingerprint(X, y)
    start = time.perf_counter()
    data_fingerprint(X, y)
    assert time.perf_counter() - start < 0.05


def test_file_datasets_become_absolute_and_names_stay(tmp_path):
    spec = {"name": "data/train.csv", "data_dir": "idx", "target": "label"}
    out = absolute_dataset_spec(spec, cwd=tmp_path)
    assert out == {"name": str(tmp_path / "data" / "train.csv"), "data_dir": str(tmp_path / "idx"),
                   "target": "label"}
    assert spec["name"] == "data/train.csv"  # a copy
    assert absolute_dataset_spec({"name": "../x.NPZ", "data_dir": None}, cwd=tmp_path)["name"] \
        == str(tmp_path.parent / "x.NPZ")
    assert absolute_dataset_spec({"name": "digits", "data_dir": None}) == \
        {"name": "digits", "data_dir": None}
    assert absolute_dataset_spec({"name": "/abs/t.csv"})["name"] == "/abs/t.csv"
    assert absolute_dataset_spec({"name": "fashion-mnist", "data_dir": "d"})["data_dir"] == \
        os.path.join(os.getcwd(), "d")
