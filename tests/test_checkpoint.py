"""Atomic, pickle-free checkpoint IO: round trips, crashes, damaged and hostile files."""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from nnkernel import checkpoint
from nnkernel.errors import CheckpointError, DTypeError
from nnkernel.io.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_arrays,
    read_json,
    save_arrays,
)


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "0.W": rng.normal(size=(3, 4)).astype(np.float32),
        "0.b": np.zeros(4, dtype=np.float64),
        "step": np.array(7, dtype=np.int64),  # 0-d
        "mask": np.array([True, False, True]),
        "1.gamma": np.ones((2, 0), dtype=np.float32),  # empty
        "file": np.arange(3),  # would clash with np.savez(file, **kwds)
    }


def _leftovers(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_round_trip_keeps_names_dtypes_shapes_and_values(tmp_path):
    path = tmp_path / "weights.npz"
    arrays = _arrays()
    save_arrays(path, arrays)
    loaded = load_arrays(path)
    assert list(loaded) == list(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value)
    # Readable by plain NumPy too: the format is np.savez's.
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(arrays)
    assert _leftovers(tmp_path) == []


def test_save_overwrites_previous_file(tmp_path):
    path = tmp_path / "w.npz"
    save_arrays(path, {"a": np.zeros(2)})
    save_arrays(path, {"b": np.ones(3)})
    assert list(load_arrays(path)) == ["b"]


def test_save_refuses_object_arrays(tmp_path):
    path = tmp_path / "w.npz"
    with pytest.raises(DTypeError, match="'bad'"):
        save_arrays(path, {"bad": np.array([{"a": 1}], dtype=object)})
    assert not path.exists()


def test_json_round_trip_is_sorted_and_indented(tmp_path):
    path = tmp_path / "config.json"
    atomic_write_json(path, {"b": [1, 2], "a": {"lr": 0.1}})
    assert read_json(path) == {"a": {"lr": 0.1}, "b": [1, 2]}
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') and '\n  "a"' in text


def test_atomic_write_sets_usual_permissions(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"x")
    assert path.stat().st_mode & 0o777 == 0o644 or os.name != "posix"


@pytest.mark.parametrize("stage", ["write", "replace"])
def test_crash_while_writing_leaves_old_file_and_no_temp(tmp_path, monkeypatch, stage):
    path = tmp_path / "w.npz"
    save_arrays(path, {"a": np.arange(5)})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if stage == "write":
        monkeypatch.setattr(checkpoint.os, "fsync", boom)
    else:
        monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(CheckpointError, match="No space left"):
        save_arrays(path, {"a": np.arange(1000)})
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_interrupt_while_writing_removes_temp_and_propagates(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    atomic_write_json(path, {"v": 1})

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"v": 2})
    assert read_json(path) == {"v": 1}
    assert _leftovers(tmp_path) == []


def test_write_into_missing_directory_names_it(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        atomic_write_bytes(tmp_path / "missing" / "f.bin", b"x")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_arrays(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="not found"):
        read_json(tmp_path / "nope.json")


def test_every_truncation_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "w.npz"
    save_arrays(path, {"0.W": np.arange(12.0).reshape(3, 4), "0.b": np.ones(4)})
    data = path.read_bytes()
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match="w.npz"):
            load_arrays(path)


def test_random_bytes_are_a_checkpoint_error(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(CheckpointError, match="w.npz"):
        load_arrays(path)


def test_corrupted_member_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "w.npz"
    save_arrays(path, {"a": np.arange(100)})
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the array data: the zip CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="w.npz"):
        load_arrays(path)


def test_zip_member_that_is_not_an_array_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match="not a .npy"):
        load_arrays(path)


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_npz(marker) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, W=np.array([_Payload(marker)], dtype=object))
    return buf.getvalue()


def test_payload_really_runs_when_unpickled(tmp_path):
    # Guard for the test below: the payload is live when pickle is allowed.
    marker = tmp_path / "pwned"
    with np.load(io.BytesIO(_hostile_npz(marker)), allow_pickle=True) as npz:
        npz["W"][0].close()  # the payload's result: an open file
    assert marker.exists()


def test_pickled_object_array_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.npz"
    path.write_bytes(_hostile_npz(marker))
    with pytest.raises(CheckpointError, match="hostile.npz"):
        load_arrays(path)
    assert not marker.exists()


def test_plain_pickle_file_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.npz"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="hostile.npz"):
        load_arrays(path)
    assert not marker.exists()


@pytest.mark.parametrize("text", ['{"a": 1', "", "[1, 2]", "\xff\xfe"])
def test_corrupt_json_is_a_checkpoint_error(tmp_path, text):
    path = tmp_path / "c.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match="c.json"):
        read_json(path)


def test_unserializable_json_is_a_checkpoint_error_and_writes_nothing(tmp_path):
    path = tmp_path / "c.json"
    with pytest.raises(CheckpointError, match="JSON"):
        atomic_write_json(path, {"x": object()})
    assert not path.exists()
