"""A trained model as one file that other tools read: ``.npz`` or ``.safetensors``.

    nk.save(model, "digits.safetensors", preprocessing={"divide_by": 16.0})
    model = nk.load("digits.safetensors")               # the same model(x), bit for bit
    nk.io.saving.read_metadata("digits.safetensors")    # version, dtype, preprocessing, ...

Both files hold the arrays of ``model.arrays()`` under their keys, "<layer
index>.<name>" ("0.W" of shape (n_in, n_out), "0.b", "1.running_mean", ...), and
one metadata record, a JSON object::

    {"format": "nnkernel-model", "format_version": 1, "nnkernel_version": "0.1.0",
     "dtype": "float32", "config": model.config(), "preprocessing": {...}}

- ``.npz``: the zip layout of ``np.savez`` (one "<key>.npy" member per array, so
  ``np.load`` reads it) plus the record as the member "nnkernel.json".
- ``.safetensors``: one tensor per key; the record is the JSON string under
  "nnkernel" in the header's ``__metadata__`` (metadata values must be strings).

docs/format.md documents the layout for other tools. Writes are atomic
(`checkpoint.atomic_write_bytes`). Reads never unpickle: .npy members are parsed
with ``allow_pickle=False`` and safetensors cannot hold code. The .npz reader is
its own small zip loop rather than `checkpoint.load_arrays`, because that one
refuses any member that is not a .npy (the JSON record is one), and because
reading the record first lets each member's size be checked against the
architecture before it is decompressed (a zip bomb fails cheaply).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, NnkernelError
from ..nn.sequential import Sequential
from . import checkpoint
from ._optional import require

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load", "read_metadata", "save"]

FORMAT_NAME = "nnkernel-model"
FORMAT_VERSION = 1  # raise on any change an older reader would misread
NPZ_MEMBER = "nnkernel.json"
SAFETENSORS_KEY = "nnkernel"
_MAX_RECORD = 16 << 20  # a metadata record is a few KB; refuse to parse anything huge
_NPY_HEADER_ROOM = 1 << 16  # a .npy header is at most 64 KiB (format version 2)


# ----------------------------------------------------------------------------- saving

def save(model: Sequential, path, *, preprocessing: dict | None = None) -> None:
    """Write ``model`` to ``path`` (.npz or .safetensors, chosen by the suffix), atomically.

    ``preprocessing`` records what was done to raw features before the model saw them
    (``Dataset.preprocessing``, e.g. {"divide_by": 16.0}); it must be JSON-ready.
    """
    path = Path(path)
    kind = _kind_from_suffix(path)
    record = _record(model, preprocessing, path)
    arrays = {k: np.ascontiguousarray(v) for k, v in model.arrays().items()}
    if kind == "npz":
        data = _npz_bytes(arrays, record)
    else:
        st = require("safetensors.numpy", "safetensors", "saving a .safetensors file")
        data = st.save(arrays, metadata={SAFETENSORS_KEY: record})
    checkpoint.atomic_write_bytes(path, data)


def _kind_from_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix == ".safetensors":
        return "safetensors"
    raise ConfigError(f"cannot save a model as {path}: unknown file type {suffix or '(none)'!r}; "
                      "use a .npz or .safetensors file name")


def _record(model, preprocessing, path) -> str:
    from .. import __version__  # nnkernel/__init__ imports this module: look it up at call time

    if preprocessing is None:
        preprocessing = {}
    if not isinstance(preprocessing, dict):
        raise ConfigError(f"preprocessing must be a dict (e.g. {{'divide_by': 16.0}}), got "
                          f"{type(preprocessing).__name__}")
    config = model.config()
    record = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "nnkernel_version": __version__, "dtype": config["dtype"], "config": config,
              "preprocessing": preprocessing}
    try:
        return json.dumps(record, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot save {path}: the preprocessing record is not JSON-ready "
                          f"({e})") from e


def _npz_bytes(arrays: dict, record: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(NPZ_MEMBER, record)
        for key, arr in arrays.items():
            with zf.open(key + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------------- loading

def load(path, backend="numpy", device=None, *, dtype=None) -> Sequential:
    """The model saved in ``path`` by `save`, on ``backend``/``device``.

    ``dtype`` (default: the saved one) converts the parameters. Any problem with the
    file (damaged, hostile, another format version, arrays that do not fit the
    architecture) is a CheckpointError naming it.
    """
    path = Path(path)
    data = _read(path)
    if _is_zip(data):
        with _open_zip(data, path) as zf:
            record = _npz_record(zf, path)
            model = _build(record, path, backend, device, dtype)
            arrays = _npz_arrays(zf, path, _expected(model))
    else:
        record, header = _safetensors_record(data, path)
        model = _build(record, path, backend, device, dtype)
        arrays = _safetensors_arrays(data, header, path, _expected(model))
    _fill(model, arrays, path)
    return model


def read_metadata(path) -> dict:
    """The metadata record of a saved model (format and nnkernel versions, dtype, config,
    preprocessing), checked but without building the model or reading its arrays."""
    path = Path(path)
    data = _read(path)
    if _is_zip(data):
        with _open_zip(data, path) as zf:
            return _checked_record(_npz_record(zf, path), path)
    return _checked_record(_safetensors_record(data, path)[0], path)


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"model file not found: {path}") from e
    except IsADirectoryError as e:
        raise CheckpointError(f"{path} is a directory, not a model file") from e
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) < 8:
        raise CheckpointError(f"{path} is {len(data)} bytes long: truncated or not a model file")
    return data


def _is_zip(data: bytes) -> bool:
    # A zip starts with a local file header; an empty one with its end record.
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


# -- .npz ----------------------------------------------------------------------------
def _open_zip(data: bytes, path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is a damaged .npz (zip) file ({e}); it is truncated or "
                              "corrupt") from e


def _npz_record(zf: zipfile.ZipFile, path: Path):
    names = zf.namelist()
    if len(names) != len(set(names)):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise CheckpointError(f"{path}: duplicate zip members {dup}; the file is not an "
                              "nnkernel model")
    if NPZ_MEMBER not in names:
        raise CheckpointError(f"{path} has no {NPZ_MEMBER} member: an .npz file, but one "
                              "not written by nnkernel.save (a run's model.npz is read with "
                              "nnkernel.io.run_dir.load)")
    info = zf.getinfo(NPZ_MEMBER)
    if info.file_size > _MAX_RECORD:
        raise CheckpointError(f"{path}: {NPZ_MEMBER} is {info.file_size} bytes, too large for "
                              "a metadata record")
    try:
        return _parse_json(zf.read(NPZ_MEMBER), path, NPZ_MEMBER)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot read {NPZ_MEMBER} ({e}); the file is "
                              "truncated or corrupt") from e


def _npz_arrays(zf: zipfile.ZipFile, path: Path, expected: dict) -> dict:
    arrays = {}
    for info in zf.infolist():
        name = info.filename
        if name == NPZ_MEMBER:
            continue
        key = name[:-4] if name.endswith(".npy") else None
        if key not in expected:
            raise CheckpointError(f"{path}: unexpected member {name!r}; the architecture has "
                                  f"arrays {', '.join(expected)}")
        shape = expected[key]
        limit = math.prod(shape) * 8 + _NPY_HEADER_ROOM  # float64 at most, plus the header
        if info.file_size > limit:
            raise CheckpointError(f"{path}: member {name!r} is {info.file_size} bytes, more "
                                  f"than an array of shape {shape} can take")
        try:
            with zf.open(info) as f:
                arrays[key] = _read_npy(f, path, key, shape)
        except CheckpointError:
            raise
        except Exception as e:
            # zipfile (CRC, truncation), zlib and numpy's header parser fail in
            # different ways; for the caller each means "unreadable".
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{path}: cannot read array {key!r}: {reason}") from e
    return arrays


def _read_npy(f, path: Path, key: str, shape: tuple) -> np.ndarray:
    """One .npy member, its header checked before any data is read: a header may claim
    any shape or dtype (an object array is a pickle), and np.lib.format.read_array would
    allocate that shape before finding the data short."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise CheckpointError(f"{path}: array {key!r} is in .npy format version "
                              f"{version[0]}.{version[1]}, which nnkernel does not read")
    got_shape, fortran, dtype = readers[version](f)
    _check_array(path, key, dtype, got_shape, shape)
    nbytes = math.prod(shape) * dtype.itemsize
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise CheckpointError(f"{path}: array {key!r} has {len(data)} of its {nbytes} bytes; "
                              "the file is truncated")
    flat = np.frombuffer(data, dtype=dtype).copy()
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


# -- .safetensors ----------------------------------------------------------------------
def _safetensors_record(data: bytes, path: Path):
    """The nnkernel record and the header of a safetensors file: an 8-byte little-endian
    header length, then the header as JSON (tensor name -> dtype, shape, offsets)."""
    n = int.from_bytes(data[:8], "little")
    if data[8:9] != b"{":
        raise CheckpointError(f"{path} is neither an .npz (zip) nor a .safetensors file; it is "
                              "truncated or not an nnkernel model")
    if n > min(len(data) - 8, 100 << 20):
        raise CheckpointError(f"{path}: the safetensors header claims {n} bytes but the file "
                              f"has {len(data) - 8} after it; the file is truncated")
    header = _parse_json(data[8:8 + n], path, "safetensors header")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or SAFETENSORS_KEY not in meta:
        raise CheckpointError(f"{path}: the safetensors metadata has no {SAFETENSORS_KEY!r} "
                              "record; the file was not written by nnkernel.save")
    text = meta[SAFETENSORS_KEY]
    if not isinstance(text, str):
        raise CheckpointError(f"{path}: metadata {SAFETENSORS_KEY!r} must be a JSON string")
    return _parse_json(text.encode("utf-8"), path, f"metadata {SAFETENSORS_KEY!r}"), header


def _safetensors_arrays(data: bytes, header: dict, path: Path, expected: dict) -> dict:
    names = [k for k in header if k != "__metadata__"]
    unexpected = [k for k in names if k not in expected]
    if unexpected:  # checked before any tensor is read
        raise CheckpointError(f"{path}: unexpected tensors {unexpected}; the architecture has "
                              f"{', '.join(expected)}")
    st = require("safetensors.numpy", "safetensors", "loading a .safetensors file")
    try:
        return st.load(data)
    except Exception as e:  # SafetensorError, or numpy refusing a dtype (bfloat16)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: damaged safetensors data ({reason})") from e


# -- shared by both --------------------------------------------------------------------
def _parse_json(raw: bytes, path: Path, what: str) -> dict:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({e}); the file is corrupt "
                              "or truncated") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, found "
                              f"{type(obj).__name__}")
    return obj


def _checked_record(record: dict, path: Path) -> dict:
    if record.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: metadata names format {record.get('format')!r}, "
                              f"expected {FORMAT_NAME!r}")
    version = record.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: unknown format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}, newer than this nnkernel "
                              f"reads ({FORMAT_VERSION}); upgrade nnkernel")
    config = record.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise CheckpointError(f"{path}: the metadata has no model architecture "
                              "('config.layers')")
    if record.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(f"{path}: metadata dtype {record.get('dtype')!r} is not float32 "
                              "or float64")
    if config.get("dtype", record["dtype"]) != record["dtype"]:
        raise CheckpointError(f"{path}: metadata dtype {record['dtype']!r} disagrees with the "
                              f"architecture's {config.get('dtype')!r}")
    if not isinstance(record.get("preprocessing", {}), dict):
        raise CheckpointError(f"{path}: metadata 'preprocessing' must be a JSON object")
    return record


def _build(record, path, backend, device, dtype) -> Sequential:
    record = _checked_record(record, path)
    try:
        return Sequential.from_config(record["config"], backend=backend, device=device,
                                      dtype=dtype or record["dtype"])
    except NnkernelError as e:
        if not isinstance(e, ConfigError):
            raise  # e.g. DeviceError: the request's fault, not the file's
        raise CheckpointError(f"{path} describes an invalid model: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: the metadata does not describe a model "
                              f"({type(e).__name__}: {e})") from e


def _expected(model: Sequential) -> dict[str, tuple]:
    # From arrays() (host copies of a freshly built model: cheap next to reading the file),
    # the public view of parameters and state, whatever the model keeps internally.
    return {k: tuple(v.shape) for k, v in model.arrays().items()}


def _check_array(path: Path, key: str, dtype: np.dtype, shape, expected: tuple) -> None:
    if dtype.kind != "f":
        raise CheckpointError(f"{path}: array {key!r} has dtype {dtype}, expected floating "
                              "point")
    if tuple(shape) != expected:
        raise CheckpointError(f"{path}: array {key!r} has shape {tuple(shape)}, the "
                              f"architecture needs {expected}")


def _fill(model: Sequential, arrays: dict, path: Path) -> None:
    expected = _expected(model)
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise CheckpointError(f"{path} lacks arrays {', '.join(missing)} of its architecture")
    for key, value in arrays.items():
        if key not in expected:
            raise CheckpointError(f"{path}: unexpected array {key!r}")
        _check_array(path, key, value.dtype, value.shape, expected[key])
    try:
        model.load_arrays(arrays)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} does not fit its architecture: {e}") from e
