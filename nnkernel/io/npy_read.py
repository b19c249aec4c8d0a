""".npy arrays read from bytes that may be hostile: the header checked before any data.

Used for a .npy features file, for each member of an .npz (checkpoints, datasets,
model files). NumPy's own reader (``np.load``, ``np.lib.format.read_array``) is
not safe here: it reads a header of the length the file claims (up to 4 GiB,
allocated before it is checked), its header parser lets SyntaxError,
tokenize.TokenError, OverflowError and MemoryError out, and it allocates the
declared shape before it finds the data short. Here the header is at most
`MAX_HEADER` bytes, any failure to parse it is one ``error`` naming the file,
and data are read in chunks into a buffer of exactly the declared size, which
the caller has compared with what the file holds.
"""

from __future__ import annotations

import io
import math

import numpy as np

__all__ = ["MAX_HEADER", "NUMERIC_KINDS", "data_bytes", "read_data", "read_header"]

MAX_HEADER = 1 << 16  # NumPy writes a few hundred bytes; it reads at most 10000 by default
NUMERIC_KINDS = "biufc"
_MAGIC = b"\x93NUMPY"
_LENGTH_BYTES = {(1, 0): 2, (2, 0): 4}  # 3.0 (UTF-8 field names) holds no plain numbers
_CHUNK = 16 << 20
_MAX_SIZE = 2**63  # NumPy's npy_intp on a 64-bit machine


def read_header(f, where: str, error: type[Exception]):
    """(shape, fortran order, dtype, header bytes) of the .npy at ``f``'s position; any
    damage is ``error("<where>: ...")``. The dtype is a plain number (`NUMERIC_KINDS`):
    objects (a pickle), strings, records and sub-arrays are refused."""
    start = f.read(8)
    if len(start) < 8 or start[:6] != _MAGIC:
        raise error(f"{where} is not a .npy array (no NumPy magic string); it is truncated "
                    "or of another format")
    version = (start[6], start[7])
    if version not in _LENGTH_BYTES:
        raise error(f"{where} is in .npy format version {version[0]}.{version[1]}; nnkernel "
                    "reads 1.0 and 2.0")
    length_bytes = f.read(_LENGTH_BYTES[version])
    if len(length_bytes) < _LENGTH_BYTES[version]:
        raise error(f"{where}: the .npy header is truncated")
    length = int.from_bytes(length_bytes, "little")
    if length > MAX_HEADER:
        raise error(f"{where}: the .npy header claims {length:,} bytes; NumPy writes a few "
                    "hundred, so the file is damaged or hostile")
    header = f.read(length)
    if len(header) < length:
        raise error(f"{where}: the .npy header is truncated")
    parse = (np.lib.format.read_array_header_1_0 if version == (1, 0)
             else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = parse(io.BytesIO(length_bytes + header),
                                      max_header_size=MAX_HEADER)
    except Exception as e:  # noqa: BLE001 - ValueError, SyntaxError, TokenError, Overflow...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise error(f"{where}: damaged .npy header ({type(e).__name__}: {reason[:200]})") \
            from None
    if dtype.hasobject:
        raise error(f"{where} holds Python objects, which would need pickle; refused "
                    "(nnkernel reads arrays of numbers only)")
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype:
        raise error(f"{where} has dtype {dtype.str}, which is not a numeric dtype")
    # NumPy holds sizes in int64: a shape whose dims (zeros left out) multiply past it
    # cannot be an array, even an empty one
    if math.prod(d for d in shape if d) * dtype.itemsize >= _MAX_SIZE:
        raise error(f"{where} declares shape {_shown(shape)}, which no array can have")
    return tuple(shape), bool(fortran), dtype, 8 + len(length_bytes) + length


def _shown(shape: tuple) -> str:
    text = str(tuple(shape))
    return text if len(text) <= 120 else text[:117] + "..."


def data_bytes(shape: tuple, dtype: np.dtype) -> int:
    """The bytes of data a header declares (a Python int: no overflow)."""
    return math.prod(shape) * dtype.itemsize


def read_data(f, shape: tuple, fortran: bool, dtype: np.dtype, where: str,
              error: type[Exception]) -> np.ndarray:
    """The array's data: exactly `data_bytes` bytes, which the caller has checked the file
    holds; fewer is ``error`` (truncated)."""
    n_bytes = data_bytes(shape, dtype)
    buf = np.empty(n_bytes, dtype=np.uint8)
    view, done = memoryview(buf), 0
    while done < n_bytes:  # in chunks: read(n) would allocate n bytes before reading
        n = f.readinto(view[done:done + _CHUNK])
        if not n:
            raise error(f"{where} is truncated: {done:,} of its {n_bytes:,} bytes of data")
        done += n
    arr = buf.view(dtype)
    return arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
