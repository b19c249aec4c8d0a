"""One label policy for every source (nnkernel.io.labels), and dataset files read safely.

Issue 16: CSV labels -1/0 trained a regression model while the same labels in an .npz
were refused; one CSV label of 1e9 ended in "out of memory"; uint64 labels said
"in 0..-9223372036854775808"; a non-zip .npz "contains pickled data".
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from nnkernel.cli import main
from nnkernel.errors import ConfigError, DatasetError, NonFiniteError
from nnkernel.io import datasets, labels, tabular

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file semantics")
N = 40
X = np.random.default_rng(0).random((N, 3)).astype(np.float32)


def as_csv(path: Path, y) -> Path:
    with open(path, "w") as f:
        f.write("a,b,c,label\n")
        for row, target in zip(X, y, strict=True):
            f.write(",".join(map(str, row)) + f",{target}\n")
    return path


def as_npz(path: Path, y) -> Path:
    np.savez(path, X=X, y=np.asarray(y))
    return path


WRITERS = {"csv": as_csv, "npz": as_npz}


def load(tmp_path, source, y, **kw):
    return datasets.load(str(WRITERS[source](tmp_path / f"d.{source}", y)), **kw)


def first_index(y, value) -> int:
    return int(np.flatnonzero(np.asarray(y) == value)[0])


def where(source, i) -> str:
    """How an error names value i of the target: CSV line (header is line 1) or y[i]."""
    return re.escape(f"line {i + 2}, column 'label'" if source == "csv" else f"y[{i}]")


BINARY = np.arange(N) % 2
SOURCES = ["csv", "npz"]


# ------------------------------------------------------------------ the same for every source

@pytest.mark.parametrize("source", SOURCES)
def test_negative_labels_are_refused_by_name_in_every_source(tmp_path, source):
    y = np.where(BINARY == 1, 0, -1)  # the issue's -1/0: regression from CSV, refused from NPZ
    with pytest.raises(DatasetError, match=rf"d\.{source}, {where(source, 0)}: label -1 is "
                       r"negative; class labels must be 0\.\.K-1"):
        load(tmp_path, source, y)


@pytest.mark.parametrize("source", SOURCES)
def test_one_stray_huge_label_is_refused_by_name_not_out_of_memory(tmp_path, source):
    y = BINARY.copy()
    y[17] = 1_000_000_000
    with pytest.raises(DatasetError, match=rf"{where(source, 17)}: label 1000000000 would make "
                       r"1,000,000,001 classes, but only 3 distinct labels occur"):
        load(tmp_path, source, y)


def test_uint64_labels_are_named_as_stored(tmp_path):
    y = np.full(N, 2**63, dtype=np.uint64)  # int64 would wrap to -9223372036854775808
    with pytest.raises(DatasetError, match=r"y\[0\]: label 9223372036854775808 would make "
                       r"9,223,372,036,854,775,809 classes, but only 1 distinct label occurs"):
        load(tmp_path, "npz", y)
    ds = load(tmp_path, "npz", BINARY.astype(np.uint64))
    assert ds.task == "classification" and ds.n_classes == 2 and ds.y_train.dtype == np.int64


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("y, task, k", [
    (BINARY, "classification", 2),
    (BINARY.astype(np.float32), "classification", 2),  # 0.0/1.0 floats are labels too
    (BINARY + 1, "classification", 3),  # 1-based labels: class 0 unused, accepted
    (np.arange(N) * 1000, "regression", None),  # whole but mostly distinct: prices, ids
    (np.linspace(0, 1, N), "regression", None),
])
def test_the_values_decide_the_task_not_the_format(tmp_path, source, y, task, k):
    ds = load(tmp_path, source, y)
    assert (ds.task, ds.n_classes) == (task, k)
    if task == "classification":
        assert ds.y_train.dtype == np.int64 and ds.y_train.ndim == 1
    else:
        assert ds.y_train.dtype == np.float32 and ds.y_train.shape[1] == 1


@pytest.mark.parametrize("source", SOURCES)
def test_task_overrides_the_guess_and_still_names_bad_labels(tmp_path, source):
    ds = load(tmp_path, source, BINARY, task="regression")
    assert ds.task == "regression" and ds.y_train.dtype == np.float32
    ds = load(tmp_path, source, np.arange(N) % 25, task="classification")  # 25 of 40 distinct
    assert (ds.task, ds.n_classes) == ("classification", 25)
    y = BINARY.astype(np.float64)
    y[5] = 0.5
    with pytest.raises(DatasetError, match=rf"{where(source, 5)}: label 0.5 is not a whole "
                       "number"):
        load(tmp_path, source, y, task="classification")


@pytest.mark.parametrize("source", SOURCES)
def test_a_saved_runs_class_count_bounds_the_labels(tmp_path, source):
    y = BINARY.copy()
    y[3] = 7
    with pytest.raises(DatasetError, match=rf"{where(source, 3)}: label 7 is not one of the "
                       r"run's classes 0\.\.4"):
        load(tmp_path, source, y, task="classification", n_classes=5)
    ds = load(tmp_path, source, np.arange(N) % 4, task="classification", n_classes=10)
    assert ds.n_classes == 10  # the run's, not this file's


@pytest.mark.parametrize("source", SOURCES)
def test_nan_target_is_named(tmp_path, source):
    y = np.linspace(0, 1, N)
    y[9] = np.nan
    with pytest.raises(NonFiniteError, match=rf"{where(source, 9)}: target nan is not a finite"):
        load(tmp_path, source, y)


def test_several_target_columns_are_regression_and_not_labels(tmp_path):
    y = np.stack([BINARY, BINARY], axis=1)
    assert load(tmp_path, "npz", y).y_train.shape == (32, 2)
    with pytest.raises(DatasetError, match=r"class labels must be one column, found shape "
                       r"\(40, 2\)"):
        load(tmp_path, "npz", y, task="classification")


def test_a_given_train_test_split_is_decided_together(tmp_path):
    path = tmp_path / "split.npz"
    np.savez(path, X_train=X[:30], y_train=np.arange(30) % 3, X_test=X[30:],
             y_test=np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, -1]))
    with pytest.raises(DatasetError, match=r"y_test\[9\]: label -1 is negative"):
        datasets.load_npz(path)


def test_named_datasets_have_their_own_task():
    assert datasets.load("digits", task="classification", n_classes=10).n_classes == 10
    with pytest.raises(ConfigError, match=r"digits is a classification dataset, not regression "
                       r"\(only the task of a .csv or .npz file can be chosen\)"):
        datasets.load("digits", task="regression")
    with pytest.raises(ConfigError, match="task must be one of classification, regression"):
        datasets.load("digits", task="clustering")


def test_idx_labels_out_of_range_are_named(tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    rng = np.random.default_rng(0)
    for stem, arr in (("train-images-idx3-ubyte", rng.integers(0, 255, (6, 28, 28))),
                      ("train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 11, 5])),
                      ("t10k-images-idx3-ubyte", rng.integers(0, 255, (2, 28, 28))),
                      ("t10k-labels-idx1-ubyte", np.array([0, 1]))):
        arr = np.asarray(arr, dtype=np.uint8)
        header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (d / stem).write_bytes(header + arr.tobytes())
    with pytest.raises(DatasetError, match=r"train labels, sample 4: label 11 is not one of the "
                       r"classes 0\.\.9"):
        datasets.load("mnist", data_dir=d, download=False)


# ------------------------------------------------------------------------- through the CLI

def test_cli_refuses_bad_labels_in_one_line_before_writing(tmp_path, capsys):
    data = as_csv(tmp_path / "neg.csv", np.where(BINARY == 1, 0, -1))
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--hidden", "4", "--batch-size", "8",
                 "--epochs", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"nnkernel: error: {data}, line 2, column 'label': label -1 is negative; "
                   "class labels must be 0..K-1 (relabel them, e.g. -1/1 as 0/1, or pass "
                   "--task regression)")
    assert not out.exists()


def test_cli_says_what_it_made_of_a_files_target_and_task_is_kept(tmp_path, capsys):
    data = as_csv(tmp_path / "bin.csv", BINARY)
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(data), "--hidden", "4", "--batch-size", "8"]
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "bin: column 'label' holds class labels 0..1 (2 classes); pass --task to change " \
           "it" in err
    assert main([*argv, "--epochs", "1", "--task", "regression", "--out",
                 str(tmp_path / "reg")]) == 0
    assert "holds regression targets (1 column); as --task says" in capsys.readouterr().err
    config = json.loads((tmp_path / "reg" / "config.json").read_text())
    assert config["dataset"]["task"] == "regression"
    assert main(["train", "--resume", str(out), "--epochs", "2", "--task", "regression"]) == 2
    assert "--task cannot be changed when resuming" in capsys.readouterr().err


def test_cli_evaluates_a_file_with_the_runs_classes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(as_csv(tmp_path / "four.csv", np.arange(N) % 4)),
                 "--hidden", "4", "--batch-size", "8", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    few = tmp_path / "few.csv"  # 4 rows, 4 distinct labels: alone it would look like regression
    few.write_text("a,b,c,label\n" + "".join(f"0.1,0.2,0.3,{i}\n" for i in range(4)))
    assert main(["evaluate", str(out), "--dataset", str(few), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_test"] == 4 and result["test_accuracy"] is not None


# ------------------------------------------------------------------ hostile dataset files

@pytest.mark.parametrize("content, kind", [
    (b"hello, this is not a zip archive", "not a zip archive"),
    (b"", "empty"),
    (b"\x93NUMPY\x01\x00" + b" " * 20, "a .npy file (a single array)"),
])
def test_a_non_zip_npz_says_what_it_is(tmp_path, content, kind):
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=rf"d\.npz is not an \.npz file: it is "
                       rf"{kind.replace('(', '.').replace(')', '.')}; save the features"):
        datasets.load_npz(path)


def test_pickled_npz_members_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.array([object()] * N, dtype=object))
    with pytest.raises(DatasetError, match="holds Python objects, which would need pickle"):
        datasets.load_npz(path)


def test_npz_deflate_bomb_is_refused_before_it_inflates(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((20_000, 64), np.float32), y=np.zeros(20_000, np.int64))
    assert path.stat().st_size < 100_000
    monkeypatch.setenv(tabular.MAX_DATA_BYTES_ENV, "1M")
    with pytest.raises(DatasetError, match=r"holds 5,280,\d+ bytes uncompressed, over the 0.0 "
                       r"GiB nnkernel may read .*NNKERNEL_MAX_DATA_BYTES"):
        datasets.load_npz(path)
    monkeypatch.setenv(tabular.MAX_DATA_BYTES_ENV, "lots")
    with pytest.raises(DatasetError, match="NNKERNEL_MAX_DATA_BYTES must be a positive number"):
        datasets.load_npz(path)


def test_a_csv_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = as_csv(tmp_path / "d.csv", BINARY)
    monkeypatch.setenv(tabular.MAX_DATA_BYTES_ENV, "100")
    with pytest.raises(DatasetError, match=rf"d\.csv is {path.stat().st_size:,} bytes, over"):
        datasets.load_csv(path)


def test_gzip_bomb_idx_is_inflated_no_further_than_its_header_says(tmp_path):
    images = np.zeros((1, 28, 28), np.uint8)
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", *images.shape)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(64 << 20), compresslevel=1))  # 64 MB inside
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=r"expected 800 for shape \(1, 28, 28\)"):
            datasets.load_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # not the 64 MB the stream holds
    path.write_bytes(gzip.compress(header + images.tobytes()))
    assert datasets.load_idx(path).shape == (1, 28, 28)


@posix_only
@pytest.mark.parametrize("name", ["fifo.csv", "fifo.npz"])
def test_train_on_a_fifo_dataset_is_refused_at_once(tmp_path, name):
    path = tmp_path / name
    os.mkfifo(path)
    p = subprocess.Popen([sys.executable, "-m", "nnkernel", "train", "--dataset", str(path),
                          "--epochs", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        _, err = p.communicate(timeout=60)  # open() and np.load blocked here for ever
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1
    assert err.strip() == (f"nnkernel: error: {path} is a FIFO (named pipe), not a regular "
                           "file; refusing to read it")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(DatasetError, match=f"CSV file not found: {tmp_path / 'no.csv'}"):
        datasets.load_csv(tmp_path / "no.csv")
    with pytest.raises(DatasetError, match=f"input file not found: {tmp_path / 'no.npy'}"):
        datasets.load_features(tmp_path / "no.npy")


def test_check_task_and_parts_api():
    assert labels.check_task(None) is None and labels.check_task("regression") == "regression"
    task, k, (y,) = labels.decide([labels.Part(np.array([2, 0, 1, 1, 0, 2]), "mem")])
    assert (task, k, y.tolist()) == ("classification", 3, [2, 0, 1, 1, 0, 2])
    task, k, (y,) = labels.decide([labels.Part(np.array([2, 0, 1, 3]), "mem")])  # 4 of 4
    assert (task, k, y.shape) == ("regression", None, (4, 1))


# ------------------------------------------------------- beyond the list: odd tabular files

def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("label,a\n" + "".join(f"{i % 2},{i / 10}\n" for i in range(10)),
                    encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    ds = datasets.load_csv(path)
    assert ds.task == "classification" and ds.n_features == 1


def test_a_column_named_twice_is_refused(tmp_path):
    path = tmp_path / "dup.csv"  # the second "label" became a feature
    path.write_text("a,label,label\n" + "".join(f"{i},{i % 2},{i % 2}\n" for i in range(10)))
    with pytest.raises(DatasetError, match="the header names 'label' more than once"):
        datasets.load_csv(path)


def test_values_too_large_for_float32_are_named_not_called_inf(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(9)) + "1e39,1\n")
    with pytest.raises(DatasetError, match=r"big.csv, line 11, column 'a': 1e\+39 is too large "
                       "for float32"):
        datasets.load_csv(path)
    np.savez(tmp_path / "big.npz", X=np.full((10, 2), 1e300), y=np.arange(10) % 2)
    with pytest.raises(DatasetError, match=r"feature 1e\+300 \(row 0, column 0\) is too large"):
        datasets.load_npz(tmp_path / "big.npz")
    np.savez(tmp_path / "bigy.npz", X=X, y=np.linspace(0.5, 1e300, N))
    with pytest.raises(DatasetError, match=r"y\[1\]: target .* is too large for float32"):
        datasets.load_npz(tmp_path / "bigy.npz")


def test_empty_parts_are_named(tmp_path):
    np.savez(tmp_path / "e.npz", X_train=X[:30], y_train=np.linspace(0, 1, 30),
             X_test=X[:0], y_test=np.zeros(0))
    with pytest.raises(DatasetError, match=r"a features array has no rows \(shape \(0, 3\)\)"):
        datasets.load_npz(tmp_path / "e.npz")
    path = tmp_path / "one.csv"
    path.write_text("a,label\n1,0\n")
    with pytest.raises(DatasetError, match="one.csv has 1 row; at least 2 are needed"):
        datasets.load_csv(path)
