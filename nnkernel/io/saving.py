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
(`checkpoint.atomic_write_bytes`), and `save` first checks what it would write
against the config, as `load` will (every key, shape and dtype; nothing extra; a
size within the byte limit), so a model whose arrays were damaged is refused
instead of written as a file that cannot be loaded. Reads never unpickle and are
bounded by the file (`model_file`). `load` also takes a run directory of
``nnkernel train --out`` or its model.npz (`run_dir.load` reads them).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from ..backend import dtype_name
from ..errors import CheckpointError, ConfigError, DTypeError, NnkernelError, ShapeError
from ..nn.sequential import Sequential
from . import checkpoint, model_file
from ._optional import require
from .model_file import FORMAT_NAME, FORMAT_VERSION, NPZ_MEMBER, SAFETENSORS_KEY
from .safe_read import max_checkpoint_bytes

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load", "read_metadata", "save"]


# ----------------------------------------------------------------------------- saving

def save(model: Sequential, path, *, preprocessing: dict | None = None) -> None:
    """Write ``model`` to ``path`` (.npz or .safetensors, chosen by the suffix), atomically.

    ``preprocessing`` records what was done to raw features before the model saw them
    (``Dataset.preprocessing``, e.g. {"divide_by": 16.0}); it must be JSON-ready.
    Nothing is written (CheckpointError) if the model's arrays do not match its
    config: a key missing or extra, another shape or dtype, or more bytes than
    `load` reads ($NNKERNEL_MAX_CHECKPOINT_BYTES, else 2 GiB).
    """
    path = Path(path)
    kind = _kind_from_suffix(path)
    record = _record(model, preprocessing, path)
    arrays = {k: np.ascontiguousarray(v) for k, v in model.arrays().items()}
    _check_before_writing(json.loads(record), arrays, path)
    if kind == "npz":
        data = _npz_bytes(arrays, record)
    else:
        st = require("safetensors.numpy", "safetensors", "saving a .safetensors file")
        data = st.save(arrays, metadata={SAFETENSORS_KEY: record})
    checkpoint.atomic_write_bytes(path, data)


def _check_before_writing(record: dict, arrays: dict, path: Path) -> None:
    """What `load` checks, on what is about to be written."""
    where = f"refusing to write {path}"
    model_file.checked_record(record, where)
    shapes = model_file.declared_shapes(record, where, max_checkpoint_bytes())
    if shapes is None:
        raise CheckpointError(f"{where}: the model's config does not describe a model that "
                              "builds")
    model_file.check_arrays(arrays, shapes, where)
    wrong = next((k for k, v in arrays.items() if v.dtype != np.dtype(record["dtype"])), None)
    if wrong is not None:
        raise CheckpointError(f"{where}: array {wrong!r} has dtype {arrays[wrong].dtype}, the "
                              f"model's is {record['dtype']}")


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

def load(path, backend="numpy", device=None, *, dtype=None,
         max_bytes: int | None = None) -> Sequential:
    """The model saved in ``path``, on ``backend``/``device``.

    ``path`` is a file written by `save` (.npz or .safetensors), or a training run
    of the command line (``nnkernel train --out runs/a``): its directory
    ``runs/a`` or its ``runs/a/model.npz`` (read with `run_dir.load`: the
    weights, without the optimizer state). ``dtype`` (default: the saved one)
    converts the parameters. ``max_bytes`` bounds the file (default:
    $NNKERNEL_MAX_CHECKPOINT_BYTES, else 2 GiB); the model is built only after
    its arrays were read and checked against the architecture, so what it
    allocates is what the file held. Any problem with the file (damaged, hostile,
    another format version, arrays that do not fit the architecture) is a
    CheckpointError naming it.
    """
    path = Path(path)
    run = _run_directory(path, max_bytes)
    if run is not None:
        return _load_run(run, backend, device, dtype, max_bytes)
    record, arrays = model_file.read(path, max_bytes)
    model = _build(record, path, backend, device, dtype)
    if arrays is None:  # the architecture gave no shapes, yet it built
        raise CheckpointError(f"{path}: the metadata does not describe a model")
    try:
        model.load_arrays(arrays)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} does not fit its architecture: {e}") from e
    return model


def read_metadata(path, *, max_bytes: int | None = None) -> dict:
    """The metadata record of a saved model (format and nnkernel versions, dtype, config,
    preprocessing), checked but without building the model or reading its arrays; for a
    run directory (or its model.npz), the same record made from its config.json."""
    path = Path(path)
    run = _run_directory(path, max_bytes)
    if run is None:
        return model_file.read(path, max_bytes, arrays=False)[0]
    from . import run_dir
    from .run_config import validate_run_config

    config = checkpoint.read_json(run / run_dir.CONFIG)
    problems = validate_run_config(config)
    if problems:
        raise CheckpointError(f"{run / run_dir.CONFIG} is not a valid run configuration: "
                              f"{problems[0]}")
    model = config.get("model") or {}
    record = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "nnkernel_version": config.get("nnkernel_version"),
              "dtype": model.get("dtype", "float32"), "config": model,
              "preprocessing": config.get("preprocessing") or {}}
    return model_file.checked_record(record, run / run_dir.CONFIG)


def _run_directory(path: Path, max_bytes: int | None) -> Path | None:
    """The run directory ``path`` names (itself, or the one of its model.npz), else None.

    A model.npz is a run's when it has no nnkernel.json record and a config.json is
    beside it; anything else is read as a model file (and refused as such).
    """
    from . import run_dir

    if path.is_dir():
        if not os.path.lexists(path / run_dir.CONFIG):
            raise CheckpointError(f"{path} is a directory, not a model file, and not a "
                                  f"training run either: it has no {run_dir.CONFIG}")
        return path
    if path.name != run_dir.MODEL or not os.path.lexists(path.parent / run_dir.CONFIG):
        return None
    try:
        model_file.read(path, max_bytes, arrays=False)
    except model_file.NoRecord:
        return path.parent
    except CheckpointError:
        pass  # refused again, with its reason, when read as a model file
    return None


def _load_run(directory: Path, backend, device, dtype, max_bytes) -> Sequential:
    from . import run_dir

    model = run_dir.load(directory, max_bytes=max_bytes).build_model(backend, device)
    if dtype is not None and dtype_name(dtype) != dtype_name(model.dtype):
        model.to(dtype=dtype)
    return model


def _build(record, path, backend, device, dtype) -> Sequential:
    try:
        return Sequential.from_config(record["config"], backend=backend, device=device,
                                      dtype=dtype or record["dtype"])
    except NnkernelError as e:
        if not isinstance(e, (ConfigError, ShapeError, DTypeError)):
            raise  # e.g. DeviceError: the request's fault, not the file's
        raise CheckpointError(f"{path} describes an invalid model: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: the metadata does not describe a model "
                              f"({type(e).__name__}: {e})") from e
