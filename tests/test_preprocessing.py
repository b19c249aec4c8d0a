"""Dataset.preprocessing: what each loader did to the raw features, for saved models."""

import struct

import numpy as np

from nnkernel.io import datasets


def test_loaders_record_their_preprocessing(tmp_path):
    digits = datasets.load("digits")
    assert digits.preprocessing == {"divide_by": 16.0}
    assert digits.X_train.max() == 1.0  # 16 / 16: the raw counts are 0..16
    assert datasets.load("moons").preprocessing == {}
    np.savez(tmp_path / "pixels.npz", X=np.arange(40, dtype=np.uint8).reshape(10, 4),
             y=np.arange(10) % 2)
    assert datasets.load(str(tmp_path / "pixels.npz")).preprocessing == {"divide_by": 255.0}
    np.savez(tmp_path / "floats.npz", X=np.ones((10, 4), np.float32), y=np.arange(10) % 2)
    assert datasets.load(str(tmp_path / "floats.npz")).preprocessing == {}
    (tmp_path / "t.csv").write_text("a,b,label\n" + "".join(f"{i},{i},{i % 2}\n"
                                                             for i in range(10)))
    assert datasets.load(str(tmp_path / "t.csv")).preprocessing == {}


def test_idx_loader_records_divide_by_255(tmp_path):
    rng = np.random.default_rng(0)
    for stem, shape in {"train-images-idx3-ubyte": (4, 28, 28), "train-labels-idx1-ubyte": (4,),
                        "t10k-images-idx3-ubyte": (2, 28, 28),
                        "t10k-labels-idx1-ubyte": (2,)}.items():
        arr = rng.integers(0, 10, shape).astype(np.uint8)
        header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        (tmp_path / stem).write_bytes(header + arr.tobytes())
    ds = datasets.load("fashion-mnist", data_dir=tmp_path, download=False)
    assert ds.preprocessing == {"divide_by": 255.0}


def test_the_record_reproduces_the_features_exactly(tmp_path):
    """{"divide_by": d} means float32(raw) / d: applying it to the raw file gives X bit for bit."""
    rng = np.random.default_rng(1)
    raw = {"X_train": rng.integers(0, 256, (12, 5), dtype=np.uint8), "y_train": np.arange(12) % 3,
           "X_test": rng.integers(0, 256, (4, 5), dtype=np.uint8), "y_test": np.arange(4) % 3}
    np.savez(tmp_path / "split.npz", **raw)
    ds = datasets.load(str(tmp_path / "split.npz"))
    d = ds.preprocessing["divide_by"]
    np.testing.assert_array_equal(ds.X_train, raw["X_train"].astype(np.float32) / np.float32(d))
    np.testing.assert_array_equal(ds.X_test, raw["X_test"].astype(np.float32) / np.float32(d))
