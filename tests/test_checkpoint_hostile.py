"""Hostile checkpoint files: FIFOs, devices, deflate bombs, lying headers, deep JSON, signals.

Each test reproduces a defect of the first loader (which read the whole file
with ``Path.read_bytes`` and let ``np.load`` inflate every member before any
check): a FIFO blocked forever, /dev/zero grew memory without bound, and a
small deflate bomb inflated to gigabytes before the shape check.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from nnkernel.errors import CheckpointError
from nnkernel.io import checkpoint
from nnkernel.io.checkpoint import load_arrays, read_json, save_arrays

posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs, devices and signals: POSIX")


@contextmanager
def within(seconds: float):
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""

    def timeout(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def npy_header(shape, dtype="<f8") -> bytes:
    """The bytes np.save writes before the data of an array of this shape and dtype."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def write_bomb(path: Path, key: str, n_bytes: int) -> None:
    """An .npz whose one member is a float64 vector of n_bytes / 8 zeros, deflated.

    Zeros compress about 1000:1, so the file stays small while loading it
    naively allocates n_bytes.
    """
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(key + ".npy", "w", force_zip64=True) as f:
            f.write(npy_header((n_bytes // 8,)))
            for _ in range(n_bytes // len(chunk)):
                f.write(chunk)


def write_member(path: Path, name: str, data: bytes, mode="w") -> None:
    with zipfile.ZipFile(path, mode) as zf:
        zf.writestr(name, data)


def peak_python_bytes(fn) -> int:
    """Peak bytes allocated through Python's allocators while fn runs (bytes objects included)."""
    tracemalloc.start()
    try:
        fn()
    except CheckpointError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# ----------------------------------------------------------------- not a regular file

@posix_only
def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "model.npz"
    os.mkfifo(path)
    with within(5), pytest.raises(CheckpointError, match=r"model.npz.*FIFO.*not a regular file"):
        load_arrays(path)


@posix_only
def test_fifo_config_json_is_refused_without_blocking(tmp_path):
    path = tmp_path / "config.json"
    os.mkfifo(path)
    with within(5), pytest.raises(CheckpointError, match=r"config.json.*FIFO"):
        read_json(path)


@posix_only
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_symlink_to_dev_zero_is_refused_before_reading(tmp_path):
    path = tmp_path / "model.npz"
    path.symlink_to("/dev/zero")
    with within(5), pytest.raises(CheckpointError, match=r"/dev/zero.*character device"):
        load_arrays(path)
    with within(5), pytest.raises(CheckpointError, match="character device"):
        read_json(path)


def test_directory_is_refused(tmp_path):
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(CheckpointError, match="directory"):
        load_arrays(tmp_path / "model.npz")


def test_symlink_to_a_regular_checkpoint_still_loads(tmp_path):
    real = tmp_path / "real.npz"
    save_arrays(real, {"a": np.arange(3.0)})
    (tmp_path / "model.npz").symlink_to(real)
    np.testing.assert_array_equal(load_arrays(tmp_path / "model.npz")["a"], np.arange(3.0))


# ----------------------------------------------------------------- size limits

def test_file_over_the_byte_limit_is_refused_with_how_to_raise_it(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save_arrays(path, {"a": np.zeros(1000)})
    with pytest.raises(CheckpointError, match=r"model.npz.*over the limit.*"
                       r"NNKERNEL_MAX_CHECKPOINT_BYTES"):
        load_arrays(path, max_bytes=1000)
    monkeypatch.setenv("NNKERNEL_MAX_CHECKPOINT_BYTES", "1000")
    with pytest.raises(CheckpointError, match="over the limit"):
        load_arrays(path)
    monkeypatch.setenv("NNKERNEL_MAX_CHECKPOINT_BYTES", "1M")
    assert load_arrays(path)["a"].shape == (1000,)


def test_bad_limit_in_the_environment_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save_arrays(path, {"a": np.zeros(3)})
    monkeypatch.setenv("NNKERNEL_MAX_CHECKPOINT_BYTES", "lots")
    with pytest.raises(CheckpointError, match="NNKERNEL_MAX_CHECKPOINT_BYTES.*'lots'"):
        load_arrays(path)


def test_deflate_bomb_is_refused_before_it_inflates(tmp_path):
    # 128 MiB of zeros in a file of ~0.5 MB; the old loader allocated all of it (and the
    # 2.1 MB bomb of the issue, 4.2 GB) before looking at the shape.
    path = tmp_path / "model.npz"
    write_bomb(path, "model/0.W", 128 << 20)
    assert path.stat().st_size < 2 << 20
    expected = {"model/0.W": ((64, 16), "f")}

    peak = peak_python_bytes(lambda: load_arrays(path, expected=expected))
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated: the bomb was inflated"
    with pytest.raises(CheckpointError,
                       match=r"'model/0.W' has shape \(16777216,\), expected \(64, 16\)"):
        load_arrays(path, expected=expected)


def test_deflate_bomb_over_the_byte_limit_is_refused_without_expected(tmp_path):
    path = tmp_path / "model.npz"
    write_bomb(path, "model/0.W", 64 << 20)
    peak = peak_python_bytes(lambda: load_arrays(path, max_bytes=32 << 20))
    assert peak < 8 << 20
    with pytest.raises(CheckpointError, match=r"uncompressed.*over the limit"):
        load_arrays(path, max_bytes=32 << 20)


def test_header_that_disagrees_with_the_member_size_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    # declares 1000 float64 (8000 bytes) but holds 16 bytes of data
    write_member(path, "a.npy", npy_header((1000,)) + bytes(16))
    with pytest.raises(CheckpointError, match=r"'a'.*declares.*8,000 bytes.*holds 16"):
        load_arrays(path)
    # and the other way: more data than the header says
    write_member(path, "a.npy", npy_header((2,)) + bytes(1 << 16))
    with pytest.raises(CheckpointError, match=r"'a'.*declares.*16 bytes.*holds 65,536"):
        load_arrays(path)


def test_expected_refuses_unknown_members_and_wrong_dtype_kinds(tmp_path):
    path = tmp_path / "model.npz"
    save_arrays(path, {"model/0.W": np.zeros((2, 3)), "extra": np.zeros(1)})
    with pytest.raises(CheckpointError, match="'extra' is not part of"):
        load_arrays(path, expected={"model/0.W": ((2, 3), "f")})
    save_arrays(path, {"model/0.W": np.zeros((2, 3), dtype=np.int64)})
    with pytest.raises(CheckpointError, match=r"'model/0.W'.*int64.*floating"):
        load_arrays(path, expected={"model/0.W": ((2, 3), "f")})


def test_expected_accepts_matching_arrays_and_absent_keys(tmp_path):
    path = tmp_path / "model.npz"
    arrays = {"model/0.W": np.ones((2, 3), dtype=np.float32),
              "progress/t": np.asarray(5, dtype=np.int64)}
    save_arrays(path, arrays)
    loaded = load_arrays(path, expected={"model/0.W": ((2, 3), "f"), "progress/t": ((), "iu"),
                                         "model/0.b": ((3,), "f")})
    assert loaded["model/0.W"].dtype == np.float32 and int(loaded["progress/t"]) == 5
    loaded["model/0.W"][0, 0] = 7.0  # writable, like np.load's arrays


def test_non_numeric_dtypes_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(["ab", "cd"]))
    write_member(path, "s.npy", buf.getvalue())
    with pytest.raises(CheckpointError, match=r"'s'.*<U2.*not a numeric"):
        load_arrays(path)


def test_fortran_order_and_big_endian_members_load_like_numpy(tmp_path):
    path = tmp_path / "model.npz"
    a = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    b = np.arange(4, dtype=">i4")
    np.savez(path, a=a, b=b)
    loaded = load_arrays(path)
    np.testing.assert_array_equal(loaded["a"], a)
    np.testing.assert_array_equal(loaded["b"], b)


def test_duplicate_member_names_are_refused(tmp_path):
    path = tmp_path / "model.npz"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(2))
    write_member(path, "a.npy", buf.getvalue())
    with pytest.warns(UserWarning, match="Duplicate name"):
        write_member(path, "a.npy", buf.getvalue(), mode="a")
    with pytest.raises(CheckpointError, match="'a' twice"):
        load_arrays(path)


def test_overlong_npy_header_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), " + b" " * 200_000 + b"}"
    write_member(path, "a.npy", b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little")
                 + header + bytes(8))
    with pytest.raises(CheckpointError, match="model.npz"):
        load_arrays(path)


# ----------------------------------------------------------------- JSON

@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_refused(tmp_path, depth):
    path = tmp_path / "config.json"
    path.write_text('{"a": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(CheckpointError, match=r"config.json.*nested"):
        read_json(path)


def test_json_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"pad": "x" * 5000}))
    with pytest.raises(CheckpointError, match=r"config.json.*over the limit"):
        read_json(path, max_bytes=4096)


def test_json_with_a_huge_integer_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"epochs": ' + "9" * 10_000 + "}")
    with pytest.raises(CheckpointError, match="config.json"):
        read_json(path)


# ----------------------------------------------------------------- signals during a write

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nnkernel.io import checkpoint

    target, ready = Path(sys.argv[1]), Path(sys.argv[2])
    real_fsync = checkpoint.os.fsync

    def slow_fsync(fd):
        ready.write_text("writing")  # the temporary file exists now
        time.sleep(30)
        real_fsync(fd)

    checkpoint.os.fsync = slow_fsync
    checkpoint.atomic_write_bytes(target, b"new contents")
""")


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_while_writing_removes_the_temporary_and_keeps_the_old_file(tmp_path, signum):
    target, ready = tmp_path / "model.npz", tmp_path / "ready"
    target.write_bytes(b"old contents")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(ready)],
                             stderr=subprocess.PIPE)
    try:
        with within(20):
            while not ready.exists():
                if child.poll() is not None:
                    pytest.fail(child.stderr.read().decode())
                os.sched_yield()
        assert [p.name for p in tmp_path.glob(".model.npz.*.tmp")]  # mid-write
        child.send_signal(signum)
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signum  # still dies of the signal, as without nnkernel
    assert target.read_bytes() == b"old contents"
    assert list(tmp_path.glob(".model.npz.*.tmp")) == []


def test_write_restores_the_signal_handlers_it_installs(tmp_path):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    checkpoint.atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert {s: signal.getsignal(s) for s in before} == before


# --------------------------------------------- issue 22: the zip directory and .npy headers

def write_many_members(path: Path, n: int, zip64: bool = False) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(n):
            zf.writestr(f"m{i}.npy", b"")
    if zip64:  # the end record's size field 0xFFFFFFFF, the real one in a zip64 record
        data = bytearray(path.read_bytes())
        at = data.rfind(b"PK\x05\x06")
        size = int.from_bytes(data[at + 12:at + 16], "little")
        offset = int.from_bytes(data[at + 16:at + 20], "little")
        record = (b"PK\x06\x06" + (44).to_bytes(8, "little") + (45).to_bytes(2, "little") * 2
                  + bytes(8) + n.to_bytes(8, "little") * 2 + size.to_bytes(8, "little")
                  + offset.to_bytes(8, "little"))
        locator = b"PK\x06\x07" + bytes(4) + at.to_bytes(8, "little") + (1).to_bytes(4, "little")
        end = bytes(data[at:at + 12]) + b"\xff" * 8 + bytes(data[at + 20:])
        path.write_bytes(bytes(data[:at]) + record + locator + end)


@pytest.mark.parametrize("zip64", [False, True], ids=["zip", "zip64"])
def test_a_zip_directory_over_its_limit_is_refused_before_zipfile_reads_it(
        tmp_path, monkeypatch, zip64):
    """zipfile keeps ~0.5 KB per directory entry: a file of small entries is a memory bomb
    (200,000 entries, 17 MB, took 116 MB). The directory's size is read from the end record
    (or the zip64 one) and bounded first."""
    from nnkernel.io import npz_read

    path = tmp_path / "model.npz"
    write_many_members(path, 3000, zip64)
    assert zipfile.ZipFile(path).namelist()[-1] == "m2999.npy"  # a valid zip
    monkeypatch.setattr(npz_read, "MAX_DIRECTORY_BYTES", 64 << 10)
    peak = peak_python_bytes(lambda: load_arrays(path))
    assert peak < 256 << 10
    with pytest.raises(CheckpointError, match=r"zip directory claims 1\d\d,\d{3} bytes, over"):
        load_arrays(path)
    monkeypatch.setattr(npz_read, "MAX_DIRECTORY_BYTES", 16 << 20)
    with pytest.raises(CheckpointError, match="no NumPy magic"):  # read on: empty members
        load_arrays(path)


@pytest.mark.parametrize(("name", "needle"), [
    ("finding_v2_huge_header", "header claims 4,294,967,295"),
    ("finding_syntax", r"damaged .npy header \(SyntaxError"),
    ("finding_token", r"damaged .npy header \(TokenError"),
    ("finding_overflow", "which no array can have"),
    ("fuzz_empty_but_impossible_shape", "which no array can have")])
def test_a_member_with_a_damaged_npy_header_is_a_checkpoint_error(tmp_path, name, needle):
    """The .npy files of tests/fuzz_corpus/npy as members: one reader for both."""
    path = tmp_path / "model.npz"
    corpus = Path(__file__).resolve().parent / "fuzz_corpus" / "npy"
    write_member(path, "a.npy", (corpus / f"{name}.npy").read_bytes())
    peak = peak_python_bytes(lambda: load_arrays(path))
    assert peak < 1 << 20
    with pytest.raises(CheckpointError, match=needle):
        load_arrays(path)
