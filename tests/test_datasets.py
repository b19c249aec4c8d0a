"""Dataset loaders: embedded digits, IDX files, search order, downloads, toy sets, CSV, NPZ.

No test reaches the network except a server of its own on 127.0.0.1, and none
reads the real home directory or $NNKERNEL_DATA.
"""

import functools
import gzip
import hashlib
import http.server
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnkernel import datasets
from nnkernel.errors import ConfigError, DatasetError, DTypeError, NonFiniteError
from nnkernel.io import dataset
from nnkernel.io.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    Dataset,
    Source,
    download,
    find_idx_dir,
    load,
    load_csv,
    load_idx,
    load_npz,
    one_hot,
    train_val_split,
)

REAL_SYSTEM_DIRS = list(datasets.SYSTEM_DATA_DIRS)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fake home, no $NNKERNEL_DATA, no system dirs, no proxies."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NNKERNEL_DATA", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dataset, "SYSTEM_DATA_DIRS", [])
    return home


# ----------------------------------------------------------------------------- helpers

def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_idx_dir(directory: Path, n_train=6, n_test=3, gz=True, seed=0) -> dict:
    """The four (Fashion-)MNIST files with tiny random contents."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for role, stem in datasets.IDX_FILES.items():
        write_idx(directory / (stem + (".gz" if gz else "")), arrays[role])
    return arrays


# ------------------------------------------------------------------------------ digits

def test_digits_is_the_default_and_loads_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("digits must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)  # wherever it is called from
    assert DEFAULT_DATASET == "digits" and DEFAULT_DATASET in DATASETS
    ds = load("digits")
    assert isinstance(ds, Dataset)
    assert ds.X_train.shape == (1437, 64) and ds.X_test.shape == (360, 64)
    assert ds.y_train.shape == (1437,) and ds.y_test.shape == (360,)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.task == "classification" and ds.n_classes == 10 and ds.n_features == 64
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0 and ds.X_test.max() <= 1.0
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # Fixed split: the same every time, whatever the seed.
    again = load("digits", seed=123)
    np.testing.assert_array_equal(again.X_test, ds.X_test)


def test_digits_needs_only_numpy():
    code = ("import sys\n"
            "for m in ('sklearn', 'torch', 'scipy', 'requests'): sys.modules[m] = None\n"
            "from nnkernel.io.datasets import load\n"
            "print(load('digits').X_train.shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1437, 64)" in out.stdout


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError, match="digits, fashion-mnist, mnist, xor"):
        load("cifar-10")


# --------------------------------------------------------------------------- IDX files

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, suffix):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    got_images = load_idx(write_idx(tmp_path / f"img{suffix}", images))
    got_labels = load_idx(write_idx(tmp_path / f"lab{suffix}", labels))
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 4, 3)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    got_images[0, 0, 0] = 7  # a normal, writable array


@settings(max_examples=50, deadline=None)
@given(shape=st.sampled_from([(0,), (7,), (2, 3, 4), (1, 28, 28)]), gz=st.booleans(),
       cut=st.floats(0.0, 0.999), data=st.data())
def test_idx_round_trip_and_any_truncation_property(tmp_path_factory, shape, gz, cut, data):
    values = data.draw(st.lists(st.integers(0, 255), min_size=int(np.prod(shape)),
                                max_size=int(np.prod(shape))))
    array = np.array(values, dtype=np.uint8).reshape(shape)
    path = tmp_path_factory.mktemp("idx") / ("f.gz" if gz else "f")
    write_idx(path, array)
    np.testing.assert_array_equal(load_idx(path), array)
    blob = idx_bytes(array)
    blob = blob[: int(len(blob) * cut)]
    path.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(DatasetError, match="f"):
        load_idx(path)


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx"
    path.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)  # float dtype code 0x0D
    with pytest.raises(DatasetError, match=r"bad-idx.*magic 00000d03"):
        load_idx(path)
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(DatasetError, match="magic"):
        load_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated(tmp_path, suffix):
    data = idx_bytes(np.ones((4, 28, 28)))
    path = tmp_path / f"images{suffix}"
    for cut in (6, len(data) - 1):
        blob = data[:cut]
        path.write_bytes(gzip.compress(blob) if suffix else blob)
        with pytest.raises(DatasetError, match=f"images{suffix}.*truncated"):
            load_idx(path)


def test_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones((4, 28, 28))))[:-20])
    with pytest.raises(DatasetError, match="images.gz.*gzip"):
        load_idx(path)


def test_idx_trailing_garbage(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.arange(5)) + b"\x00")
    with pytest.raises(DatasetError, match="expected"):
        load_idx(path)


def test_idx_count_mismatch_between_images_and_labels(tmp_path):
    make_idx_dir(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte.gz", np.zeros(5))
    with pytest.raises(DatasetError, match="6 images but .*5 labels"):
        load("mnist", data_dir=tmp_path / "d", download=False)


def test_idx_images_and_labels_swapped(tmp_path):
    arrays = make_idx_dir(tmp_path / "d")
    write_idx(tmp_path / "d" / "t10k-images-idx3-ubyte.gz", arrays["test_labels"])
    with pytest.raises(DatasetError, match="swapped"):
        load("mnist", data_dir=tmp_path / "d", download=False)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_from_data_dir(tmp_path, gz):
    arrays = make_idx_dir(tmp_path / "d", gz=gz)
    ds = load("mnist", data_dir=tmp_path / "d", download=False)
    assert ds.X_train.shape == (6, 784) and ds.X_test.shape == (3, 784)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() <= 1.0
    np.testing.assert_allclose(ds.X_train[0], arrays["train_images"][0].ravel() / 255, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.n_classes == 10 and ds.task == "classification"


# ------------------------------------------------------------------------ search order

def test_search_order(tmp_path, monkeypatch, isolated):
    given, env = tmp_path / "given", tmp_path / "env"
    make_idx_dir(given)
    make_idx_dir(env / "mnist")
    monkeypatch.setenv("NNKERNEL_DATA", str(env))
    assert find_idx_dir("mnist", given) == given  # data_dir beats $NNKERNEL_DATA
    assert find_idx_dir("mnist") == env / "mnist"  # $NNKERNEL_DATA/<name>
    make_idx_dir(env)
    assert find_idx_dir("mnist") == env  # $NNKERNEL_DATA itself before its <name>
    monkeypatch.delenv("NNKERNEL_DATA")
    assert find_idx_dir("mnist") is None
    cache = isolated / ".cache" / "nnkernel" / "mnist"
    make_idx_dir(cache)
    assert find_idx_dir("mnist") == cache
    system = tmp_path / "system"
    make_idx_dir(system / "fashion-mnist")
    monkeypatch.setattr(dataset, "SYSTEM_DATA_DIRS", [system])
    assert find_idx_dir("fashion-mnist") == system / "fashion-mnist"


def test_incomplete_directory_is_skipped(tmp_path):
    make_idx_dir(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert find_idx_dir("mnist", tmp_path / "d") is None


def test_missing_without_download_says_where_it_looked(tmp_path, isolated):
    with pytest.raises(DatasetError) as info:
        load("fashion-mnist", data_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert str(isolated / ".cache" / "nnkernel" / "fashion-mnist") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message and "NNKERNEL_DATA" in message


# ------------------------------------------------------------------------- downloading

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tiny IDX files; yields (base_url, files)."""
    root = tmp_path / "served"
    make_idx_dir(root)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _sha256s(root: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.glob("*.gz")}


def _dead_url() -> str:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_download_verifies_and_saves(tmp_path, server, monkeypatch):
    url, root = server
    monkeypatch.setitem(datasets.SOURCES, "mnist", Source("http://unused.invalid/", "sha256",
                                                          _sha256s(root)))
    dest = tmp_path / "dl"
    assert download("mnist", dest, base_url=url) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(_sha256s(root))
    ds = load("mnist", data_dir=dest, download=False)
    assert ds.X_train.shape == (6, 784)
    # Intact files are not fetched again: this would fail if it tried.
    download("mnist", dest, base_url=_dead_url())


def test_load_downloads_into_the_cache(tmp_path, server, monkeypatch, isolated):
    url, root = server
    monkeypatch.setitem(datasets.SOURCES, "mnist", Source(url, "sha256", _sha256s(root)))
    ds = load("mnist")
    assert ds.X_test.shape == (3, 784)
    assert find_idx_dir("mnist") == isolated / ".cache" / "nnkernel" / "mnist"


def test_download_checksum_mismatch_leaves_nothing(tmp_path, server, monkeypatch):
    url, root = server
    sums = _sha256s(root)
    sums["t10k-images-idx3-ubyte.gz"] = "0" * 64
    monkeypatch.setitem(datasets.SOURCES, "mnist", Source(url, "sha256", sums))
    dest = tmp_path / "dl"
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz: sha256 checksum"):
        download("mnist", dest)
    names = [p.name for p in dest.iterdir()]
    assert "t10k-images-idx3-ubyte.gz" not in names
    assert not [n for n in names if n.endswith(".part")]


def test_download_md5_as_published(tmp_path, server, monkeypatch):
    url, root = server
    md5s = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in root.glob("*.gz")}
    monkeypatch.setitem(datasets.SOURCES, "fashion-mnist", Source(url, "md5", md5s))
    assert find_idx_dir("fashion-mnist", download("fashion-mnist", tmp_path / "dl"))


@pytest.mark.parametrize("where", ["404", "unreachable"])
def test_download_failure_says_where_it_looked(tmp_path, server, where, isolated):
    url, _ = server
    base = url + "missing/" if where == "404" else _dead_url()
    dest = tmp_path / "dl"
    with pytest.raises(DatasetError) as info:
        download("fashion-mnist", dest, base_url=base, timeout=5)
    message = str(info.value)
    assert "could not download" in message and base in message
    assert ("HTTP 404" in message) == (where == "404")
    assert str(dest) in message and str(isolated / ".cache" / "nnkernel") in message
    assert "apt-get install dataset-fashion-mnist" in message and "NNKERNEL_DATA" in message
    assert not [p for p in dest.iterdir()]  # no partial files


def test_download_unknown_name():
    with pytest.raises(ConfigError, match="fashion-mnist, mnist"):
        download("digits", "/nonexistent")


def test_published_checksums_are_complete():
    for name, source in datasets.SOURCES.items():
        assert sorted(source.checksums) == sorted(s + ".gz" for s in datasets.IDX_FILES.values())
        assert all(len(v) == 32 for v in source.checksums.values()), name  # MD5 hex


# ------------------------------------------------------------------ real Fashion-MNIST

@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.setattr(dataset, "SYSTEM_DATA_DIRS", REAL_SYSTEM_DIRS)
    assert find_idx_dir("fashion-mnist") == FASHION_DIR
    start = time.process_time()  # CPU time: a busy machine does not make it flaky
    ds = load("fashion-mnist", download=False)
    elapsed = time.process_time() - start
    assert ds.X_train.shape == (60000, 784) and ds.X_test.shape == (10000, 784)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert elapsed < 5, f"loading took {elapsed:.1f} s of CPU; it should take about 1 s"


# -------------------------------------------------------------------------- toy sets

@pytest.mark.parametrize("name, n_train, n_test, n_features, task, n_classes", [
    ("xor", 4, 4, 2, "regression", None),
    ("spirals", 240, 60, 2, "classification", 3),
    ("moons", 400, 100, 2, "classification", 2),
    ("linear", 160, 40, 1, "regression", None),
])
def test_toy_sets(name, n_train, n_test, n_features, task, n_classes):
    ds = load(name)
    assert ds.X_train.shape == (n_train, n_features) and ds.X_test.shape == (n_test, n_features)
    assert (ds.task, ds.n_classes) == (task, n_classes)
    assert ds.X_train.dtype == np.float32
    if task == "regression":
        assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (n_train, 1)
    else:
        assert ds.y_train.dtype == np.int64 and set(ds.y_train) == set(range(n_classes))
    same, other = load(name, seed=1), load(name, seed=2)
    np.testing.assert_array_equal(same.X_train, load(name, seed=1).X_train)
    if name != "xor":
        assert not np.array_equal(same.X_train, other.X_train)


def test_xor_is_the_truth_table():
    ds = load("xor")
    assert ds.X_train.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert ds.y_train.ravel().tolist() == [0, 1, 1, 0]
    np.testing.assert_array_equal(ds.X_test, ds.X_train)


def test_linear_is_two_x_plus_one():
    ds = load("linear")
    slope, intercept = np.polyfit(ds.X_train.ravel(), ds.y_train.ravel(), 1)
    assert abs(slope - 2) < 0.05 and abs(intercept - 1) < 0.05


# ----------------------------------------------------------------------------- CSV, NPZ

def write_csv(path: Path, header: str, rows: list) -> Path:
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_classification(tmp_path):
    rows = [[i, i * 0.5, i % 3] for i in range(10)]
    path = write_csv(tmp_path / "data.csv", "a,b,label", rows)
    ds = load_csv(path)
    assert ds.X_train.shape == (8, 2) and ds.X_test.shape == (2, 2)
    assert ds.task == "classification" and ds.n_classes == 3 and ds.y_train.dtype == np.int64
    assert load(str(path)).X_train.tolist() == ds.X_train.tolist()  # load() takes paths too
    assert ds.name == "data"


def test_csv_regression_with_named_target(tmp_path):
    rows = [[i, i * 1.5 + 0.25] for i in range(20)]
    ds = load_csv(write_csv(tmp_path / "r.csv", "x,price", rows), target="price")
    assert ds.task == "regression" and ds.n_classes is None
    assert ds.y_train.shape == (16, 1) and ds.y_train.dtype == np.float32


def test_csv_missing_target_names_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", "a,b,c", [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(DatasetError, match=r"d.csv.*'label'.*available columns: a, b, c"):
        load_csv(path)


def test_csv_nan_is_non_finite_error(tmp_path):
    path = write_csv(tmp_path / "n.csv", "a,b,label", [[1, 2, 0], [1, "nan", 1], [3, 4, 0]])
    with pytest.raises(NonFiniteError, match=r"n.csv, line 3.*'b'"):
        load_csv(path)


@pytest.mark.parametrize("content, match", [
    ("", "empty"),
    ("a,label\n", "empty"),
    ("a,label\n1,0\n2\n", "line 3: 1 fields"),
    ("a,label\n1,0\nx,1\n", "line 3, column 'a': 'x' is not a number"),
    ("a,label\n1,0\n", "at least 2"),
])
def test_csv_bad_content(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_csv(path)


def test_npz_split_by_loader(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.integers(0, 256, (20, 4, 4), dtype=np.uint8), y=np.arange(20) % 4)
    ds = load_npz(path)
    assert ds.X_train.shape == (16, 16) and ds.X_test.shape == (4, 16)
    assert ds.X_train.max() <= 1.0  # uint8 pixels scaled
    assert ds.task == "classification" and ds.n_classes == 4


def test_npz_with_given_split(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X_train=np.ones((5, 3)), y_train=np.ones((5, 2)),
             X_test=np.zeros((2, 3)), y_test=np.zeros((2, 2)))
    ds = load(str(path))
    assert ds.X_train.shape == (5, 3) and ds.X_test.shape == (2, 3)
    assert ds.task == "regression" and ds.y_test.shape == (2, 2)


def test_npz_custom_keys_and_missing_keys(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, inputs=np.ones((10, 2)), targets=np.arange(10) % 2)
    assert load_npz(path, x="inputs", y="targets").n_classes == 2
    with pytest.raises(DatasetError, match="found: inputs, targets"):
        load_npz(path)


def test_npz_nan_and_pickle_and_garbage(tmp_path):
    path = tmp_path / "nan.npz"
    X = np.ones((10, 2))
    X[3, 1] = np.inf
    np.savez(path, X=X, y=np.arange(10) % 2)
    with pytest.raises(NonFiniteError, match="nan.npz"):
        load_npz(path)
    np.savez(path, X=np.array([object()] * 10, dtype=object), y=np.arange(10))
    with pytest.raises(DatasetError, match="nan.npz"):
        load_npz(path)
    path.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="nan.npz"):
        load_npz(path)


# ---------------------------------------------------------------------------- helpers

def test_train_val_split_is_fixed_disjoint_and_complete():
    X, y = np.arange(20).reshape(10, 2), np.arange(10)
    X_tr, y_tr, X_val, y_val = train_val_split(X, y, 0.3, seed=5)
    assert len(y_tr) == 7 and len(y_val) == 3
    assert sorted(np.concatenate([y_tr, y_val]).tolist()) == list(range(10))
    np.testing.assert_array_equal(X_val[:, 0] // 2, y_val)  # rows stay paired
    np.testing.assert_array_equal(train_val_split(X, y, 0.3, seed=5)[3], y_val)
    with pytest.raises(ConfigError):
        train_val_split(X, y, 1.0)


def test_one_hot():
    out = one_hot(np.array([2, 0]), 3)
    assert out.dtype == np.float32 and out.tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(DTypeError):
        one_hot(np.array([0.0, 1.0]), 2)
    with pytest.raises(DatasetError, match="outside 0..1"):
        one_hot(np.array([0, 2]), 2)


# ------------------------------------------ issue 22: IDX and .npy readers bounded by the file

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"


def traced_peak(fn) -> int:
    """Peak bytes allocated through Python's and NumPy's allocators while fn runs."""
    tracemalloc.start()
    try:
        fn()
    except DatasetError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_idx_with_dims_of_2_to_the_32_is_a_dataset_error():
    """Item 13: an OverflowError from zlib before (the inflate size did not fit ssize_t)."""
    path = CORPUS / "idx" / "finding_huge_dims.gz"
    with pytest.raises(DatasetError, match=r"finding_huge_dims.gz.*shape \(4294967295, "):
        load_idx(path)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_is_read_once_into_its_array(tmp_path, suffix):
    """Item 13: the old reader held a gzip stream twice, then copied it (~3x the array);
    a plain file was read, then copied (2x)."""
    images = np.zeros((2048, 64, 64), np.uint8)  # 8 MiB of zeros, gzipped ~8 KB
    path = write_idx(tmp_path / f"images{suffix}", images)
    loaded = []
    peak = traced_peak(lambda: loaded.append(load_idx(path)))
    assert peak < 1.25 * images.nbytes
    np.testing.assert_array_equal(loaded[0], images)


def gzip_claiming(n_images: int, content: bytes, trailer: int | None = None) -> bytes:
    """A gzipped IDX whose header claims n_images 64x64 images, holding ``content``."""
    header = b"\x00\x00\x08\x03" + struct.pack(">3I", n_images, 64, 64)
    blob = bytearray(gzip.compress(header + content, compresslevel=9))
    if trailer is not None:
        blob[-4:] = struct.pack("<I", trailer % 2**32)
    return bytes(blob)


def test_gzipped_idx_claiming_more_than_it_can_hold_is_refused_before_inflating(tmp_path):
    """Item 13: a header claiming 8 MiB over a stream of 4 MiB (its trailer says so), or
    over a stream whose trailer agrees but which deflate cannot make that large, is
    refused before a byte is inflated."""
    path = tmp_path / "images.gz"
    path.write_bytes(gzip_claiming(2048, bytes(4 << 20)))
    assert traced_peak(lambda: load_idx(path)) < 256 << 10
    with pytest.raises(DatasetError, match="trailer records 4,194,320 bytes inflated, expected "
                                           "8,388,624 for shape"):
        load_idx(path)
    declared = 16 + 2**20 * 64 * 64  # 4 GiB
    path.write_bytes(gzip_claiming(2**20, bytes(4 << 20), trailer=declared))
    assert traced_peak(lambda: load_idx(path)) < 256 << 10
    with pytest.raises(DatasetError, match="more than [\\d,]+ bytes of gzip can inflate to"):
        load_idx(path)


@pytest.mark.parametrize("name", ["syntax", "token", "overflow", "v2_huge_header"])
def test_a_damaged_npy_header_is_a_dataset_error_naming_the_file(name):
    """Item 16: SyntaxError, tokenize.TokenError, OverflowError and MemoryError came out of
    load_features (and so out of `nnkernel predict`, without the file's name)."""
    path = CORPUS / "npy" / f"finding_{name}.npy"
    peak = traced_peak(lambda: datasets.load_features(path))
    with pytest.raises(DatasetError) as info:
        datasets.load_features(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    assert peak < 1 << 20  # the 4 GiB header length is refused, not read


def test_npy_features_load_as_numpy_reads_them(tmp_path):
    for a in (np.arange(12, dtype=np.float64).reshape(4, 3),
              np.asfortranarray(np.arange(12, dtype=">f4").reshape(3, 4)),
              np.arange(6, dtype=np.uint8).reshape(2, 3)):
        np.save(tmp_path / "x.npy", a)
        np.testing.assert_array_equal(datasets.load_features(tmp_path / "x.npy"), a)
    np.save(tmp_path / "x.npy", np.zeros((2, 3), np.complex64))
    with pytest.raises(DatasetError, match="features must be numbers, found dtype complex64"):
        datasets.load_features(tmp_path / "x.npy")


def test_csv_readers_hold_numbers_not_strings(tmp_path):
    """A CSV is converted a row at a time (8 bytes a value), not held as lists of strings:
    the old readers peaked at 22x (load_csv) and 12x (load_features) the file's size,
    which the size limit (the memory available) did not allow for."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 10, size=(20000, 20))
    path = write_csv(tmp_path / "m.csv", ",".join(f"f{i}" for i in range(20)) + ",label",
                     [[*r, r[0] % 3] for r in X])
    size = path.stat().st_size
    loaded = []
    assert traced_peak(lambda: loaded.append(load_csv(path))) < 12 * size
    assert traced_peak(lambda: loaded.append(datasets.load_features(path))) < 8 * size
    np.testing.assert_array_equal(loaded[1][:, :20], X)
    assert loaded[0].n_features == 20 and loaded[0].n_classes == 3


def test_download_stops_a_server_that_sends_more_than_any_published_file(
        tmp_path, server, monkeypatch):
    from nnkernel.io import download as download_module

    url, root = server
    monkeypatch.setitem(datasets.SOURCES, "mnist", Source(url, "sha256", _sha256s(root)))
    monkeypatch.setattr(download_module, "MAX_DOWNLOAD_BYTES", 100)
    dest = tmp_path / "dl"
    with pytest.raises(DatasetError, match=r"ubyte.gz sent more than 100 bytes"):
        download("mnist", dest)
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]


def test_download_checks_a_file_already_there_a_chunk_at_a_time(tmp_path, server, monkeypatch):
    url, root = server
    monkeypatch.setitem(datasets.SOURCES, "mnist", Source(url, "sha256", _sha256s(root)))
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "train-images-idx3-ubyte.gz").write_bytes(bytes(16 << 20))  # damaged: replaced
    peak = traced_peak(lambda: download("mnist", dest))
    assert peak < 4 << 20
    assert _sha256s(dest) == _sha256s(root)
