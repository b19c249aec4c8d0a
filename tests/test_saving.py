"""nk.save / nk.load: .npz and .safetensors files, their documented layout, hostile files,
the preprocessing record, and ``nnkernel export`` for both formats.

The safetensors cases need the ``safetensors`` package (in the test extra) and skip,
one by one, only where it is not installed; the .npz cases need NumPy alone.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_or_skip

import nnkernel as nk
from nnkernel.errors import CheckpointError, ConfigError
from nnkernel.io import datasets, saving
from nnkernel.io._optional import MissingDependencyError

FORMATS = ["npz", "safetensors"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "format.md"


@pytest.fixture(params=FORMATS)
def fmt(request) -> str:
    if request.param == "safetensors":
        pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    return request.param


def make_model(dtype="float32", ensemble=None, seed=3):
    """Every layer kind with arrays (Dense, BatchNorm state, LayerNorm), trained one step so
    that BatchNorm's running statistics are not their initial zeros and ones."""
    model = nk.Sequential(nk.Dense(6, 8, activation="tanh"), nk.BatchNorm(8), nk.ReLU(),
                          nk.Dropout(0.2), nk.Dense(8, 5), nk.LayerNorm(5), nk.ELU(0.5),
                          nk.Dense(5, 3), seed=seed, dtype=dtype, ensemble=ensemble)
    x = np.random.default_rng(seed).normal(size=(9, 6)).astype(dtype)
    model.forward(x, train=True)
    return model


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


def inputs(dtype="float32", n=7):
    return np.random.default_rng(1).normal(size=(n, 6)).astype(dtype)


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("ensemble", [None, 3], ids=["single", "ensemble"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_gives_identical_outputs(tmp_path, fmt, dtype, ensemble):
    model = make_model(dtype, ensemble)
    path = tmp_path / f"model.{fmt}"
    nk.save(model, path)
    loaded = nk.load(path)
    assert loaded.config() == model.config()
    assert loaded.dtype == model.dtype
    assert loaded.arrays().keys() == model.arrays().keys()
    for key, value in model.arrays().items():
        assert loaded.arrays()[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded.arrays()[key], value, err_msg=key)
    assert not np.all(model.arrays()["1.running_mean"] == 0)  # the BatchNorm state is real
    x = inputs(dtype)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_load_onto_another_backend_and_dtype(tmp_path, fmt):
    pytest.importorskip("array_api_strict")
    model = make_model()
    path = tmp_path / f"model.{fmt}"
    nk.save(model, path)
    strict = nk.load(path, backend="array_api_strict")
    assert strict.backend.name == "array_api_strict"
    wide = nk.load(path, dtype="float64")
    assert nk.backend.dtype_name(wide.dtype) == "float64"
    np.testing.assert_allclose(wide(inputs("float64")), model(inputs()), atol=1e-5)


def test_metadata_records_versions_dtype_and_preprocessing(tmp_path, fmt):
    path = tmp_path / f"model.{fmt}"
    nk.save(make_model("float64"), path, preprocessing={"divide_by": 16.0})
    meta = saving.read_metadata(path)
    assert meta["format"] == "nnkernel-model"
    assert meta["format_version"] == saving.FORMAT_VERSION == 1
    assert meta["nnkernel_version"] == nk.__version__
    assert meta["dtype"] == "float64"
    assert meta["preprocessing"] == {"divide_by": 16.0}
    assert meta["config"]["layers"][0] == {"type": "Dense", "n_in": 6, "n_out": 8,
                                           "activation": "tanh", "init": None}


def test_npz_is_read_by_numpy_with_the_documented_names(tmp_path):
    model = make_model()
    nk.save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        assert set(npz.files) == set(model.arrays()) | {"nnkernel.json"}
        assert npz["0.W"].shape == (6, 8) and npz["0.W"].dtype == np.float32
        assert npz["1.running_var"].shape == (8,)
        assert json.loads(npz["nnkernel.json"])["format_version"] == 1  # bytes of the member
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        assert json.loads(zf.read("nnkernel.json"))["dtype"] == "float32"


def test_safetensors_is_read_by_safetensors_with_the_documented_names(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    from safetensors import safe_open

    model = make_model(ensemble=2)
    path = tmp_path / "m.safetensors"
    nk.save(model, path, preprocessing={"divide_by": 255.0})
    tensors = st.load_file(str(path))
    assert set(tensors) == set(model.arrays())
    assert tensors["0.W"].shape == (2, 6, 8)  # (members, n_in, n_out)
    assert tensors["1.running_mean"].shape == (2, 8)
    np.testing.assert_array_equal(tensors["4.W"], model.arrays()["4.W"])
    with safe_open(str(path), framework="np") as f:
        record = json.loads(f.metadata()["nnkernel"])
    assert record["config"]["ensemble"] == 2
    assert record["preprocessing"] == {"divide_by": 255.0}


def docs_snippets() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    return dict(re.findall(r"<!-- tested: ([\w-]+) -->\s*```python\n(.*?)```", text, re.S))


def test_docs_snippets_run_as_written(tmp_path, monkeypatch):
    """The snippets of docs/format.md marked `tested`, in a directory holding their files:
    torch's Linear gets the first Dense layer; numpy and safetensors read the record."""
    torch = torch_or_skip()
    pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    snippets = docs_snippets()
    assert set(snippets) == {"torch-linear", "npz", "safetensors"}
    model = nk.Sequential(nk.Dense(64, 256), nk.ReLU(), nk.Dense(256, 10), seed=0)
    monkeypatch.chdir(tmp_path)
    for suffix in ("safetensors", "npz"):
        nk.save(model, f"digits.{suffix}", preprocessing={"divide_by": 16.0})
    W, b = model.arrays()["0.W"], model.arrays()["0.b"]
    for name, code in snippets.items():
        scope: dict = {}
        exec(code, scope)  # noqa: S102 - our own documentation
        if name == "torch-linear":
            x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
            with torch.no_grad():
                got = scope["linear"](torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(got, x @ W + b, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(scope["W0"], W)
            assert scope["record"]["preprocessing"] == {"divide_by": 16.0}


# --------------------------------------------------------------------- hostile files

def write_npz(path, record, arrays, extra_members=()):
    """An .npz like save's, from a record (dict or raw text) and arrays, for damage tests."""
    with zipfile.ZipFile(path, "w") as zf:
        if record is not None:
            zf.writestr("nnkernel.json", record if isinstance(record, str) else
                        json.dumps(record))
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=True)
            zf.writestr(key + ".npy", buf.getvalue())
        for name, data in extra_members:
            zf.writestr(name, data)


def write_safetensors(path, record, arrays):
    import safetensors.numpy as st

    meta = None if record is None else {
        "nnkernel": record if isinstance(record, str) else json.dumps(record)}
    Path(path).write_bytes(st.save(arrays, metadata=meta))


def good(dtype="float32"):
    model = make_model(dtype)
    record = json.loads(saving._record(model, {}, "x"))
    return record, model.arrays()


def _bumped(version):
    record, arrays = good()
    record["format_version"] = version
    return record, arrays


def _edited(**changes):
    record, arrays = good()
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return record, arrays


def _unknown_layer():
    record, arrays = good()
    record["config"]["layers"][2] = {"type": "Conv9D"}
    return record, arrays


CASES = {  # name: (record, arrays), what the one-line error must say
    "wrong shape": (lambda: _edited(**{"0.W": np.zeros((8, 6), np.float32)}),
                    "'0.W' has shape (8, 6), the architecture needs (6, 8)"),
    "missing array": (lambda: _edited(**{"1.running_var": None}), "lacks arrays 1.running_var"),
    "extra array": (lambda: _edited(**{"9.W": np.zeros(2, np.float32)}), "unexpected"),
    "int dtype": (lambda: _edited(**{"4.b": np.zeros(5, np.int64)}),
                  "'4.b' has dtype int64, expected floating point"),
    "future version": (lambda: _bumped(2), "format version 2, newer than this nnkernel"),
    "string version": (lambda: _bumped("1"), "unknown format version '1'"),
    "version zero": (lambda: _bumped(0), "unknown format version 0"),
    "no record": (lambda: (None, good()[1]), "not a model written by nnkernel.save"),
    "unknown layer": (_unknown_layer, "invalid model: unknown layer type 'Conv9D'"),
    "record not JSON": (lambda: ('{"format": "nnkernel-model", ', good()[1]), "not valid JSON"),
    "record not an object": (lambda: ("[1, 2]", good()[1]), "expected a JSON object"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_files_are_one_line_checkpoint_errors(tmp_path, fmt, case):
    build, needle = CASES[case]
    record, arrays = build()
    path = tmp_path / f"bad.{fmt}"
    (write_npz if fmt == "npz" else write_safetensors)(path, record, arrays)
    with pytest.raises(CheckpointError, match=re.escape(needle)) as info:
        nk.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("cut", [0.5, 0.99, 10, 3])
def test_truncated_files_are_checkpoint_errors(tmp_path, fmt, cut):
    path = tmp_path / f"m.{fmt}"
    nk.save(make_model(), path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)] if cut < 1 else data[:cut])
    with pytest.raises(CheckpointError) as info:
        nk.load(path)
    assert "\n" not in str(info.value)


def test_a_pickled_object_member_is_refused_without_unpickling(tmp_path):
    record, arrays = good()
    arrays["0.W"] = np.array([_Boom()] * 48, dtype=object).reshape(6, 8)
    write_npz(tmp_path / "evil.npz", record, arrays)
    with pytest.raises(CheckpointError, match="'0.W' holds Python objects"):
        nk.load(tmp_path / "evil.npz")


def test_a_header_claiming_a_huge_shape_is_refused_before_allocating(tmp_path):
    record, arrays = good()
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10**6, 10**6)})
    write_npz(tmp_path / "huge.npz", record, {k: v for k, v in arrays.items() if k != "0.W"},
              extra_members=[("0.W.npy", buf.getvalue() + b"\0" * 64)])
    with pytest.raises(CheckpointError, match="has shape \\(1000000, 1000000\\)"):
        nk.load(tmp_path / "huge.npz")


def test_a_member_shorter_than_its_header_is_truncation(tmp_path):
    record, arrays = good()
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (6, 8)})
    write_npz(tmp_path / "short.npz", record, {k: v for k, v in arrays.items() if k != "0.W"},
              extra_members=[("0.W.npy", buf.getvalue() + b"\0" * 10)])
    with pytest.raises(CheckpointError, match=r"'0.W' declares shape \(6, 8\) of float32 "
                       r"\(192 bytes of data\) but the zip entry holds 10"):
        nk.load(tmp_path / "short.npz")


def test_fortran_order_and_big_endian_members_load(tmp_path):
    record, arrays = good("float64")
    arrays = {k: np.asfortranarray(v).astype(">f8") for k, v in arrays.items()}
    write_npz(tmp_path / "f.npz", record, arrays)
    model = nk.load(tmp_path / "f.npz")
    for key, value in arrays.items():
        np.testing.assert_array_equal(model.arrays()[key], value)


class _Boom:
    def __reduce__(self):  # unpickling this would run code
        return (pytest.fail, ("the loader unpickled a member",))


def test_an_oversized_member_is_refused_before_it_is_read(tmp_path):
    record, arrays = good()
    arrays["0.W"] = np.zeros((600, 80), np.float64)  # 384 kB where (6, 8) needs < 1 kB
    write_npz(tmp_path / "big.npz", record, arrays)
    with pytest.raises(CheckpointError,
                       match=r"has shape \(600, 80\), the architecture needs \(6, 8\)"):
        nk.load(tmp_path / "big.npz")


def test_stray_members_and_other_files_are_refused(tmp_path):
    record, arrays = good()
    write_npz(tmp_path / "stray.npz", record, arrays, extra_members=[("notes.txt", b"hi")])
    with pytest.raises(CheckpointError, match="member 'notes.txt' is not a .npy array"):
        nk.load(tmp_path / "stray.npz")
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="neither an .npz"):
        nk.load(tmp_path / "junk.bin")
    with pytest.raises(CheckpointError, match="model file not found"):
        nk.load(tmp_path / "nothing.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        nk.load(tmp_path)


def test_a_safetensors_header_longer_than_the_file_is_truncation(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b'{"__metadata__": {}}')
    with pytest.raises(CheckpointError, match="truncated"):
        nk.load(path)


def test_save_refuses_unknown_suffixes_and_unserializable_records(tmp_path):
    model = make_model()
    with pytest.raises(ConfigError, match="unknown file type '.pt'"):
        nk.save(model, tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="not JSON-ready"):
        nk.save(model, tmp_path / "m.npz", preprocessing={"divide_by": object()})
    with pytest.raises(ConfigError, match="must be a dict"):
        nk.save(model, tmp_path / "m.npz", preprocessing=[16.0])
    with pytest.raises(CheckpointError, match="cannot write"):
        nk.save(model, tmp_path / "no" / "such" / "dir" / "m.npz")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_optional_packages_name_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match=re.escape('pip install "nnkernel[safe')):
        nk.save(make_model(), tmp_path / "m.safetensors")
    with pytest.raises(MissingDependencyError, match=re.escape('pip install "nnkernel[onnx]"')):
        nk.export_onnx(make_model(), tmp_path / "m.onnx")
    assert issubclass(MissingDependencyError, ImportError)


def test_importing_nnkernel_imports_no_optional_package():
    code = ("import sys, nnkernel; print(sorted(m for m in ('onnx', 'onnxruntime', "
            "'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------- nnkernel export

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    from nnkernel import cli

    status = cli.main(["train", "--epochs", "1", "--hidden", "16", "--batchnorm",
                          "--out", str(out), "--quiet"])
    assert status == 0
    return out


def export(*argv) -> int:
    from nnkernel.cli import main

    return main(["export", *map(str, argv)])


def test_export_command_writes_both_formats(trained_run, tmp_path, capsys):
    pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    npz, st = tmp_path / "m.npz", tmp_path / "m.safetensors"
    assert export(trained_run, "--npz", npz, "--safetensors", st) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"wrote {st} (safetensors)", f"wrote {npz} (npz)"]
    reference = nk.io.run_dir.load(trained_run).build_model()
    x = datasets.load("digits").X_test[:16]
    for path in (npz, st):
        np.testing.assert_array_equal(nk.load(path)(x), reference(x))


def test_export_command_needs_a_file_and_matching_suffixes(trained_run, tmp_path, capsys):
    cases = [((trained_run,), 2, "at least one of --onnx"),
             ((trained_run, "--safetensors", tmp_path / "m.npz"), 2, "must end in .safetensors"),
             ((tmp_path / "no-run", "--npz", tmp_path / "m.npz"), 1, "does not exist")]
    for argv, status, needle in cases:
        assert export(*argv) == status
        assert needle in capsys.readouterr().err


def test_export_parser_accepts_the_documented_flags():
    from nnkernel.cli import build_parser

    args = build_parser().parse_args(["export", "runs/a", "--onnx", "a.onnx", "--npz", "a.npz"])
    assert (args.command, args.run_dir, args.onnx, args.npz, args.safetensors, args.opset) == (
        "export", "runs/a", "a.onnx", "a.npz", None, 17)


# ------------------------------------------------- issue 22: readers bounded by the file

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs: POSIX")
def test_load_and_read_metadata_refuse_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "m.npz"
    os.mkfifo(fifo)
    for read in (nk.load, saving.read_metadata):
        with within(5), pytest.raises(CheckpointError, match=r"m.npz is a FIFO"):
            read(fifo)


def test_load_refuses_a_file_over_the_byte_limit_before_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    nk.save(make_model(), path)
    with pytest.raises(CheckpointError, match=r"m.npz is [\d,]+ bytes, over the limit of 1,000"):
        nk.load(path, max_bytes=1000)
    monkeypatch.setenv("NNKERNEL_MAX_CHECKPOINT_BYTES", "1K")
    with pytest.raises(CheckpointError, match="NNKERNEL_MAX_CHECKPOINT_BYTES"):
        saving.read_metadata(path)


def _declaring(record, n_in, n_out=8):
    """The first Dense declared (n_in, n_out), and the layers after it resized to chain."""
    layers = record["config"]["layers"]
    layers[0].update(n_in=n_in, n_out=n_out)
    layers[1].update(n=n_out)   # BatchNorm
    layers[4].update(n_in=n_out)  # the next Dense
    return record


@pytest.mark.parametrize(("n_in", "n_out", "needle"), [
    (30000, 30000, r"declares 3,60\d,\d{3},\d{3} bytes of parameters and state, over the limit"),
    (2**31, 8, r"declares 68,\d{3},\d{3},\d{3} bytes"),
    (6000, 6000, r"'0.W' has shape \(6, 8\), the architecture needs \(6000, 6000\)")],
    ids=["dense-30000", "n_in-2**31", "under-the-limit"])
def test_a_small_file_declaring_a_huge_model_is_refused_before_it_is_built(
        tmp_path, fmt, n_in, n_out, needle):
    """Item 11: the old loader built the declared model first (6.7 GiB for a 1.6 KB file;
    64 GiB for n_in = 2**31). The sizes are now checked against the limit and the file."""
    record, arrays = good()
    path = tmp_path / f"huge.{fmt}"
    (write_npz if fmt == "npz" else write_safetensors)(path, _declaring(record, n_in, n_out),
                                                       arrays)
    assert path.stat().st_size < 5000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=needle):
            nk.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


@pytest.mark.parametrize("name", ["zlib_error", "encrypted", "lzma", "method_99", "deep"])
def test_a_damaged_metadata_record_is_a_checkpoint_error(name):
    """Item 15: zlib.error, RuntimeError (encrypted), LZMAError, NotImplementedError and
    RecursionError came out of read_metadata; files in tests/fuzz_corpus/npz_metadata."""
    path = CORPUS / "npz_metadata" / f"finding_record_{name}.npz"
    for read in (saving.read_metadata, nk.load):
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------- issue 22 item 2: save writes what load reads

def _corrupt(model, monkeypatch, change):
    """model.arrays() as a store bypassed by a mapping method would give it."""
    arrays = model.arrays()
    change(arrays)
    monkeypatch.setattr(model, "arrays", lambda: {k: v.copy() for k, v in arrays.items()})


@pytest.mark.parametrize(("change", "needle"), [
    (lambda a: a.pop("1.running_var"), "lacks arrays 1.running_var"),
    (lambda a: a.update({"9.W": np.zeros(3, np.float32)}), "unexpected arrays '9.W'"),
    (lambda a: a.update({"0.W": np.zeros((6, 9), np.float32)}),
     r"'0.W' has shape \(6, 9\), the architecture needs \(6, 8\)"),
    (lambda a: a.update({"4.b": a["4.b"].astype(np.float64)}),
     "'4.b' has dtype float64, the model's is float32"),
    (lambda a: a.update({"7.b": a["7.b"].astype(np.int32)}), "'7.b' has dtype int32")],
    ids=["missing", "extra", "shape", "dtype", "integer"])
def test_save_refuses_arrays_that_do_not_match_the_config(tmp_path, fmt, monkeypatch, change,
                                                          needle):
    path = tmp_path / f"m.{fmt}"
    nk.save(make_model(), path)
    before = path.read_bytes()
    model = make_model(seed=4)
    _corrupt(model, monkeypatch, change)
    with pytest.raises(CheckpointError, match=f"refusing to write .*m.{fmt}.*{needle}"):
        nk.save(model, path)
    assert path.read_bytes() == before  # the good file is still there
    assert [p.name for p in tmp_path.iterdir()] == [f"m.{fmt}"]  # no temporary left


def test_save_refuses_a_config_that_does_not_build_or_a_size_load_refuses(tmp_path,
                                                                          monkeypatch):
    model = make_model()
    config = model.config()
    config["layers"][0]["n_out"] = -8
    monkeypatch.setattr(model, "config", lambda: config)
    with pytest.raises(CheckpointError, match="does not describe a model that builds"):
        nk.save(model, tmp_path / "m.npz")
    monkeypatch.undo()
    monkeypatch.setenv("NNKERNEL_MAX_CHECKPOINT_BYTES", "512")
    with pytest.raises(CheckpointError, match="over the limit of 512 bytes"):
        nk.save(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


# ------------------------------------------- issue 25: nk.load reads a command-line run

def test_load_reads_a_run_directory_and_its_model_npz(trained_run, tmp_path):
    reference = nk.io.run_dir.load(trained_run).build_model()
    x = datasets.load("digits").X_test[:16]
    for source in (trained_run, trained_run / "model.npz", str(trained_run)):
        np.testing.assert_array_equal(nk.load(source)(x), reference(x))
    as64 = nk.load(trained_run, dtype="float64")
    assert as64.arrays()["0.W"].dtype == np.float64
    np.testing.assert_allclose(as64(x.astype(np.float64)), reference(x), rtol=1e-5, atol=1e-6)
    meta = saving.read_metadata(trained_run / "model.npz")
    assert meta["config"] == reference.config() or meta["config"]["layers"] == \
        reference.config()["layers"]
    assert meta["preprocessing"] == {"divide_by": 16.0}
    assert saving.read_metadata(trained_run) == meta


def test_a_run_model_npz_elsewhere_or_an_empty_directory_is_refused_by_name(trained_run,
                                                                            tmp_path):
    lone = tmp_path / "model.npz"
    lone.write_bytes((trained_run / "model.npz").read_bytes())
    with pytest.raises(CheckpointError, match="nor a run's model.npz"):
        nk.load(lone)
    with pytest.raises(CheckpointError, match="is a directory, not a model file, and not a "
                                              "training run"):
        nk.load(tmp_path)


@pytest.mark.parametrize("name", ["syntax", "token", "overflow"])
def test_predict_names_the_npy_file_it_cannot_read(trained_run, capsys, name):
    """Item 16: `nnkernel predict` printed "SyntaxError: invalid syntax" without the file."""
    from nnkernel.cli import main

    path = CORPUS / "npy" / f"finding_{name}.npy"
    assert main(["predict", str(trained_run), str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nnkernel: error: {path}")


def test_a_safetensors_header_larger_than_any_model_needs_is_not_parsed(tmp_path):
    """safetensors allows a 100 MB header; parsed, 17 MB of "[0,0,...]" took 4x its size."""
    text = b'{"a": [' + b"0," * (17 << 19) + b'0]}'
    path = tmp_path / "big.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="safetensors header is [\\d,]+ bytes, more"):
            nk.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * path.stat().st_size  # the file itself, read once


def test_an_architecture_whose_shapes_do_not_chain_is_the_files_fault(tmp_path, fmt):
    """from_config's ShapeError (a conv model's input_shape too small for its Dense) was let
    out as it was; the file describes the model, so it is a CheckpointError naming it."""
    model = nk.Sequential(nk.Conv2D(1, 2, 3, padding=1), nk.MaxPool2D(2), nk.Flatten(),
                          nk.Dense(8, 2), seed=0, input_shape=(1, 4, 4))
    record = json.loads(saving._record(model, {}, "x"))
    record["config"]["input_shape"] = [1, 2, 2]
    path = tmp_path / f"m.{fmt}"
    (write_npz if fmt == "npz" else write_safetensors)(path, record, model.arrays())
    with pytest.raises(CheckpointError, match=r"m\.\w+ describes an invalid model: .*Dense"):
        nk.load(path)
