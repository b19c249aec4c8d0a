"""Reading a model file written by `nk.save` (.npz or .safetensors) that may be hostile.

The order is what bounds the work and the memory by the file itself:

1. the path must be a regular file within the byte limit (`safe_read.open_regular`:
   a FIFO, /dev/zero or a directory is refused before a byte is read);
2. the metadata record (at most 16 MB) is parsed and checked (`checked_record`);
3. the arrays its architecture declares are computed without building anything
   (`validate.model_array_shapes`, from each layer's own shapes), and their bytes
   must be within the limit: a 1.7 KB file declaring Dense(30000, 30000) or n_in =
   2**31 is refused here;
4. the arrays are read against those shapes: every key present, nothing extra,
   each of the declared shape and a floating-point dtype, each .npz member's size
   checked before it inflates, each safetensors entry's offsets before any is read.

Only then does `saving.load` build the model, so what it allocates is what the
file really held. Every problem is a one-line CheckpointError naming the file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from . import npz_read
from ._optional import require
from .checkpoint import parse_json
from .run_config import MAX_LAYERS
from .safe_read import describe_limit, max_checkpoint_bytes, open_regular
from .validate import model_array_shapes

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "NPZ_MEMBER", "SAFETENSORS_KEY", "NoRecord",
           "check_arrays", "checked_record", "declared_shapes", "read"]

FORMAT_NAME = "nnkernel-model"
FORMAT_VERSION = 1  # raise on any change an older reader would misread
NPZ_MEMBER = "nnkernel.json"
SAFETENSORS_KEY = "nnkernel"
MAX_RECORD = 16 << 20  # a metadata record is a few KB; refuse to parse anything huge
_SAFETENSORS_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
_SAFETENSORS_NAMES = {"BF16": "bfloat16", "I8": "int8", "I16": "int16", "I32": "int32",
                      "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32",
                      "U64": "uint64", "BOOL": "bool"}


class NoRecord(CheckpointError):
    """An .npz without nnkernel's metadata record (a run's model.npz is one)."""


def read(path, max_bytes: int | None = None, *, arrays: bool = True):
    """(record, arrays) of the model file at ``path``: the record checked, the arrays
    those its architecture declares (``arrays=False``: the record alone, {})."""
    path = Path(path)
    limit = max_checkpoint_bytes(max_bytes)
    f, size = open_regular(path, limit, limit_hint=describe_limit(limit),
                           what="model file")
    with f:
        start = f.read(8)
        if len(start) < 8:
            raise CheckpointError(f"{path} is {len(start)} bytes long: truncated or not a "
                                  "model file")
        f.seek(0)
        if start[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip: local header or end record
            return _read_npz(f, size, path, limit, arrays)
        data = f.read(size + 1)  # safetensors reads from bytes; bounded by the limit
    if len(data) > size:
        raise CheckpointError(f"{path} grew while it was read; read it again when it is "
                              "complete")
    return _read_safetensors(data, path, limit, arrays)


# -- the record --------------------------------------------------------------------------
def checked_record(record: dict, path) -> dict:
    """``record`` if it is a metadata record this nnkernel reads, else CheckpointError."""
    if record.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: metadata names format {_short(record.get('format'))}, "
                              f"expected {FORMAT_NAME!r}")
    version = record.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: unknown format version {_short(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}, newer than this nnkernel "
                              f"reads ({FORMAT_VERSION}); upgrade nnkernel")
    config = record.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise CheckpointError(f"{path}: the metadata has no model architecture "
                              "('config.layers')")
    if not 0 < len(config["layers"]) <= MAX_LAYERS:
        raise CheckpointError(f"{path}: the architecture has {len(config['layers'])} layers; "
                              f"a model has 1 to {MAX_LAYERS}")
    if record.get("dtype") not in ("float32", "float64"):
        raise CheckpointError(f"{path}: metadata dtype {_short(record.get('dtype'))} is not "
                              "float32 or float64")
    if config.get("dtype", record["dtype"]) != record["dtype"]:
        raise CheckpointError(f"{path}: metadata dtype {record['dtype']!r} disagrees with the "
                              f"architecture's {_short(config.get('dtype'))}")
    if not isinstance(record.get("preprocessing", {}), dict):
        raise CheckpointError(f"{path}: metadata 'preprocessing' must be a JSON object")
    return record


def declared_shapes(record: dict, path, limit: int) -> dict[str, tuple] | None:
    """Key -> shape of every array the record's architecture has, computed without
    allocating; None if the architecture does not build (building it says why).
    Refused: more bytes than ``limit``."""
    shapes = model_array_shapes(record["config"])
    if shapes is None:
        return None
    shapes = {**shapes[0], **shapes[1]}
    itemsize = np.dtype(record["dtype"]).itemsize
    total = itemsize * sum(math.prod(s) for s in shapes.values())
    if total > limit:
        raise CheckpointError(f"{path}: its architecture declares {total:,} bytes of "
                              f"parameters and state, over {describe_limit(limit)}")
    return shapes


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _same_keys(keys, shapes: dict, where) -> None:
    missing = [k for k in shapes if k not in keys]
    if missing:
        raise CheckpointError(f"{where} lacks arrays {', '.join(missing[:10])} of its "
                              "architecture")
    extra = [k for k in keys if k not in shapes]
    if extra:
        raise CheckpointError(f"{where}: unexpected arrays {', '.join(map(repr, extra[:10]))};"
                              f" the architecture has {', '.join(list(shapes)[:20])}")


def check_arrays(arrays: dict, shapes: dict, where: str) -> None:
    """Every key of ``shapes`` in ``arrays`` with that shape and a floating-point dtype,
    and nothing else; else CheckpointError "<where> ..."."""
    _same_keys(list(arrays), shapes, where)
    for key, value in arrays.items():
        dtype, shape = np.dtype(value.dtype), tuple(value.shape)
        if dtype.kind != "f":
            raise CheckpointError(f"{where}: array {key!r} has dtype {dtype}, expected "
                                  "floating point")
        if shape != tuple(shapes[key]):
            raise CheckpointError(f"{where}: array {key!r} has shape {shape}, the "
                                  f"architecture needs {tuple(shapes[key])}")


# -- .npz --------------------------------------------------------------------------------
def _read_npz(f, size: int, path: Path, limit: int, want_arrays: bool):
    with npz_read.open_zip(f, size, path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if NPZ_MEMBER not in names:
            raise NoRecord(f"{path} has no {NPZ_MEMBER} member: an .npz file, but not a model "
                           "written by nnkernel.save, nor a run's model.npz (which has a "
                           "config.json beside it)")
        members = npz_read.checked_members(path, infos, limit, describe_limit(limit),
                                           others=(NPZ_MEMBER,))
        record = checked_record(_npz_record(zf, zf.getinfo(NPZ_MEMBER), path), path)
        if not want_arrays:
            return record, {}
        shapes = declared_shapes(record, path, limit)
        if shapes is None:
            return record, None
        _same_keys([key for key, _ in members], shapes, path)  # before any data is read
        expected = {k: (s, "f") for k, s in shapes.items()}
        try:
            arrays = {key: npz_read.read_member(path, zf, info, key, expected)
                      for key, info in members}
        except npz_read.LayoutMismatch as e:  # in the words of the other checks
            detail = e.detail.replace(", expected (", ", the architecture needs (")
            raise CheckpointError(f"{path}: {detail}") from None
    return record, arrays


def _npz_record(zf, info, path: Path) -> dict:
    if info.file_size > MAX_RECORD:
        raise CheckpointError(f"{path}: {NPZ_MEMBER} is {info.file_size:,} bytes, too large "
                              "for a metadata record")
    with zf.open(info) as member:
        raw = member.read(MAX_RECORD + 1)  # zipfile checks the CRC at the end
    return parse_json(raw, f"{path}: {NPZ_MEMBER}")


# -- .safetensors --------------------------------------------------------------------------
def _read_safetensors(data: bytes, path: Path, limit: int, want_arrays: bool):
    """An 8-byte little-endian header length, the header as JSON (name -> dtype, shape,
    data_offsets; the record under __metadata__), then the tensors' bytes."""
    n = int.from_bytes(data[:8], "little")
    if data[8:9] != b"{":
        raise CheckpointError(f"{path} is neither an .npz (zip) nor a .safetensors file; it is "
                              "truncated or not an nnkernel model")
    if n > len(data) - 8:
        raise CheckpointError(f"{path}: the safetensors header claims {n:,} bytes but the file "
                              f"has {len(data) - 8:,} after it; the file is truncated")
    if n > MAX_RECORD:  # safetensors allows 100 MB; a model of 10,000 layers needs ~4 MB
        raise CheckpointError(f"{path}: the safetensors header is {n:,} bytes, more than "
                              f"{MAX_RECORD:,}; it is not a model nnkernel wrote")
    header = parse_json(data[8:8 + n], f"{path}: the safetensors header")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get(SAFETENSORS_KEY), str):
        raise CheckpointError(f"{path}: the safetensors metadata has no {SAFETENSORS_KEY!r} "
                              "record (a JSON string); it is not a model written by "
                              "nnkernel.save")
    text = meta[SAFETENSORS_KEY]
    record = checked_record(parse_json(text.encode("utf-8", "replace"),
                                       f"{path}: metadata {SAFETENSORS_KEY!r}"), path)
    if not want_arrays:
        return record, {}
    shapes = declared_shapes(record, path, limit)
    if shapes is None:
        return record, None
    _check_entries(header, shapes, path, len(data) - 8 - n)
    st = require("safetensors.numpy", "safetensors", "loading a .safetensors file")
    try:
        arrays = st.load(data)
    except Exception as e:  # noqa: BLE001 - SafetensorError, or numpy refusing a dtype
        raise npz_read.unreadable(path, e, "damaged safetensors data in") from e
    check_arrays(arrays, shapes, str(path))
    return record, arrays


def _check_entries(header: dict, shapes: dict, path: Path, room: int) -> None:
    """Each tensor entry against the declared shapes, before any tensor is read."""
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    _same_keys(list(entries), shapes, path)
    for key, entry in entries.items():
        where = f"{path}: tensor {key!r}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} is not a tensor entry ({_short(entry)})")
        if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in _SAFETENSORS_DTYPES:
            name = _SAFETENSORS_NAMES.get(str(entry.get("dtype")), _short(entry.get("dtype")))
            raise CheckpointError(f"{path}: array {key!r} has dtype {name}, expected floating "
                                  "point (float16, float32 or float64)")
        shape = entry.get("shape")
        if shape != list(shapes[key]):
            shown = tuple(shape) if isinstance(shape, list) and len(shape) < 9 else _short(shape)
            raise CheckpointError(f"{path}: array {key!r} has shape {shown}, the architecture "
                                  f"needs {tuple(shapes[key])}")
        offsets = entry.get("data_offsets")
        n_bytes = math.prod(shapes[key]) * np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]]).itemsize
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(v) is int for v in offsets)
                and 0 <= offsets[0] <= offsets[1] <= room
                and offsets[1] - offsets[0] == n_bytes):
            raise CheckpointError(f"{where} has data offsets {_short(offsets)}, not "
                                  f"{n_bytes:,} bytes within the file's {room:,}")
