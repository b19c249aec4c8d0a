"""Seeded mutations of reader inputs, for tests/fuzz_readers.py.

`mutate(data, suffix, rng)` returns (new bytes, what was done). Half the time the
bytes are changed blindly (bit flips, bytes set to 0x00/0xFF, truncation,
insertion, deletion, a 2/4/8-byte field set huge); otherwise the format is taken
apart and one piece is changed before it is put back together, so the mutation
gets past the outer checks: a zip's directory fields (method, flags, sizes) or
one member's content, a .npy header's shape and dtype, a JSON record's values
(sizes set to 2**31, negative, float, wrong type; keys dropped; deep nesting),
a safetensors header, the IDX inside a gzip stream, the cells of a CSV.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import zipfile
import zlib

HUGE = [0, 1, 2**7, 2**8 - 1, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
        2**53, 2**62, 2**63 - 1, 2**64 - 1]
JSON_VALUES = [0, -1, 1, 2, 2**31, 2**63, 10**400, 1e308, -0.0, 0.5, True, None, "", "x" * 50,
               [], {}, [1, 2], [None, 4, 4], [1, 2**40, 2**40], "float16", "float64", "Shared",
               "Dense", "Conv2D", "Flatten", "BatchNorm2D", "MaxPool2D", "relu", "softmax",
               float("nan"), float("inf"), -float("inf"), "Infinity", -2**63]
LAYER_FIELDS = ["type", "n_in", "n_out", "n", "eps", "momentum", "activation", "alpha", "p",
                "in_channels", "out_channels", "channels", "kernel_size", "stride", "padding",
                "same_as", "init"]
NPY_DESCRS = ["<f4", "<f8", ">f8", "<f2", "|u1", "<i8", "|b1", "<c16", "|O", "<U3", "|V8",
              "f4,,", "[('a', '<f4')]", "<M8[s]", "(2,)<f4", "<f16"]
CSV_CELLS = ["", "nan", "inf", "-inf", "1e400", "3.5e38", "-1", "0", "1.5", "9" * 400, "0x10",
             "1_000", "2.5", "1e-320", "10000000", "-0",
             "\x00", "é", '"', '""', "a,b", "\n", "2147483648", "-9223372036854775809", " 1"]


def mutate(data: bytes, suffix: str, rng) -> tuple[bytes, str]:
    if not data or rng.random() < 0.5:
        return _blind(data, rng)
    try:
        if data[:2] == b"PK":
            return _zip(data, rng)
        if data[:6] == b"\x93NUMPY":
            return _npy(data, rng)
        if data[:2] == b"\x1f\x8b":
            return _gzip(data, rng)
        if suffix == ".json":
            return mutate_json_bytes(data, rng)
        if suffix == ".safetensors":
            return _safetensors(data, rng)
        if suffix == ".csv":
            return _csv(data, rng)
        if data[:3] == b"\x00\x00\x08":
            return _idx(data, rng)
    except Exception:  # noqa: BLE001 - a seed the structured path cannot take apart
        pass
    return _blind(data, rng)


# -- blind -----------------------------------------------------------------------------------
def _blind(data: bytes, rng) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = rng.randrange(6) if b else 3
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), "bit flips"
    if kind == 1:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.choice([0, 0xFF, 0x7F, 0x80])
        return bytes(b), "bytes set"
    if kind == 2:
        n = rng.randrange(len(b))
        return bytes(b[:n]), f"truncated to {n} bytes"
    if kind == 3:
        i = rng.randrange(len(b) + 1)
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        return bytes(b[:i] + junk + b[i:]), f"{len(junk)} bytes inserted at {i}"
    if kind == 4:
        i = rng.randrange(len(b))
        n = rng.randint(1, 64)
        return bytes(b[:i] + b[i + n:]), f"{n} bytes deleted at {i}"
    width, order = rng.choice([2, 4, 8]), rng.choice(["little", "big"])
    value = rng.choice([v for v in HUGE if v < 2 ** (8 * width)])
    i = rng.randrange(max(1, len(b) - width + 1))
    b[i:i + width] = value.to_bytes(width, order)
    return bytes(b[:len(data)]), f"{width}-byte {order}-endian field at {i} set to {value}"


# -- zip (npz) -------------------------------------------------------------------------------
def _zip(data: bytes, rng) -> tuple[bytes, str]:
    zf = zipfile.ZipFile(io.BytesIO(data))
    members = [(i.filename, zf.read(i), i.compress_type) for i in zf.infolist()]
    if rng.random() < 0.4:
        return _zip_fields(data, zf, rng)
    k = rng.randrange(len(members))
    name, content, method = members[k]
    how = ""
    roll = rng.random()
    if roll < 0.15:
        members.pop(k)
        how = f"member {name} removed"
    elif roll < 0.25:
        members.append((name if rng.random() < 0.5 else "extra.npy", content, method))
        how = f"member {name} added again"
    elif roll < 0.35:
        members[k] = (name, content, zipfile.ZIP_DEFLATED)
        how = f"member {name} deflated"
    else:
        new, inner = mutate(content, ".json" if name.endswith(".json") else ".npy", rng)
        members[k] = (name, new, method)
        how = f"member {name}: {inner}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for name, content, method in members:
            out.writestr(zipfile.ZipInfo(name), content, compress_type=method)
    return buf.getvalue(), how


def _zip_fields(data: bytes, zf, rng) -> tuple[bytes, str]:
    """One field of a member's local header and central directory entry changed."""
    b = bytearray(data)
    info = rng.choice(zf.infolist())
    central = _central_offset(b, zf, info.filename)
    field, value = rng.choice([
        ("method", rng.choice([0, 1, 8, 9, 12, 14, 93, 99, 0xFFFF])),
        ("flags", rng.choice([1, 8, 0x41, 0x800, 0xFFFF])),
        ("file_size", rng.choice(HUGE[4:10])), ("compress_size", rng.choice(HUGE[4:10])),
        ("crc", rng.randrange(2**32)), ("offset", rng.choice(HUGE[:10]))])
    places = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "crc": (14, 16, "<I"),
              "compress_size": (18, 20, "<I"), "file_size": (22, 24, "<I"),
              "offset": (None, 42, "<I")}
    local_at, central_at, fmt = places[field]
    value &= (1 << (8 * struct.calcsize(fmt))) - 1
    if local_at is not None and rng.random() < 0.7:
        struct.pack_into(fmt, b, info.header_offset + local_at, value)
    if central is not None:
        struct.pack_into(fmt, b, central + central_at, value)
    return bytes(b), f"zip {field} of {info.filename} set to {value}"


def _central_offset(b: bytearray, zf, name: str):
    pos = zf.start_dir
    while b[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", b[pos + 28:pos + 34])
        if b[pos + 46:pos + 46 + n].decode("utf-8", "replace") == name:
            return pos
        pos += 46 + n + m + k
    return None


# -- .npy ------------------------------------------------------------------------------------
def _npy(data: bytes, rng) -> tuple[bytes, str]:
    major = data[6]
    length_bytes = 2 if major == 1 else 4
    n = int.from_bytes(data[8:8 + length_bytes], "little")
    header = data[8 + length_bytes:8 + length_bytes + n].decode("latin1")
    body = data[8 + length_bytes + n:]
    roll = rng.random()
    if roll < 0.4:
        dims = [rng.choice(HUGE + [0, 3, 5]) for _ in range(rng.randint(0, 4))]
        shape = "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"
        header, how = re.sub(r"\(.*?\)", shape, header, count=1), f"shape {shape}"
    elif roll < 0.7:
        descr = rng.choice(NPY_DESCRS)
        header = re.sub(r"'descr': *(\[.*?\]|'[^']*')", f"'descr': {descr!r}"
                        if not descr.startswith("[") else f"'descr': {descr}", header, count=1)
        how = f"descr {descr!r}"
    elif roll < 0.8:
        header, how = header.replace("False", "True"), "fortran order"
    else:
        i = rng.randrange(len(header))
        junk = rng.choice(["(", ")", "'", "'''", ",,", "\\", "\x00", "{", "((((" * 100, "1e9999"])
        header, how = header[:i] + junk + header[i:], f"{junk[:8]!r} in the header"
    raw = header.encode("latin1")
    version = bytes([major, 0]) if rng.random() < 0.8 else rng.choice([b"\x02\x00", b"\x03\x00"])
    width = 2 if version[0] == 1 else 4
    if len(raw) >= 2 ** (8 * width):
        raw = raw[:2 ** (8 * width) - 1]
    return (b"\x93NUMPY" + version + len(raw).to_bytes(width, "little") + raw + body,
            f".npy {how}")


# -- JSON --------------------------------------------------------------------------------------
def mutate_json(obj, rng, depth=0):
    """One leaf or key of a JSON value changed (in a copy)."""
    if isinstance(obj, dict) and obj and depth < 8:
        key = rng.choice(list(obj))
        obj = dict(obj)
        roll = rng.random()
        if roll < 0.1:
            del obj[key]
            return obj, f"key {key!r} dropped"
        if roll < 0.15:
            obj[rng.choice(["extra", "n_in", "ensemble", "input_shape", "same_as"])] = \
                rng.choice(JSON_VALUES)
            return obj, "key added"
        obj[key], how = mutate_json(obj[key], rng, depth + 1)
        return obj, f"{key}.{how}"
    if isinstance(obj, list) and obj and depth < 8:
        obj = list(obj)
        i = rng.randrange(len(obj))
        roll = rng.random()
        if roll < 0.1:
            obj.pop(i)
            return obj, f"[{i}] dropped"
        if roll < 0.2:
            obj = obj * rng.choice([2, 50, 3000])
            return obj, f"list repeated to {len(obj)}"
        obj[i], how = mutate_json(obj[i], rng, depth + 1)
        return obj, f"[{i}].{how}"
    if rng.random() < 0.03:
        value = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    else:
        value = rng.choice(JSON_VALUES + [v for v in HUGE if v > 2**16])
    return value, f"set to {str(value)[:20]}"


def _json_bytes(obj) -> bytes:
    return json.dumps(obj).encode()  # NaN as NaN: what a hostile file may hold


def mutate_json_bytes(raw: bytes, rng) -> tuple[bytes, str]:
    obj, hows = json.loads(raw), []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if isinstance(obj, dict) and isinstance(obj.get("config"), dict) and rng.random() < 0.6:
            obj, how = _mutate_layers(obj, rng)
        else:
            obj, how = mutate_json(obj, rng)
        hows.append(how)
    return _json_bytes(obj), f"JSON {'; '.join(hows)}"


def _mutate_layers(record: dict, rng):
    """A model record with one layer field, the input shape or the ensemble size changed."""
    record = json.loads(json.dumps(record))
    config = record["config"]
    layers = config.get("layers")
    roll = rng.random()
    if roll < 0.15 or not isinstance(layers, list) or not layers:
        key = rng.choice(["input_shape", "ensemble", "seed", "dtype"])
        config[key] = rng.choice(JSON_VALUES)
        return record, f"config.{key} = {str(config[key])[:20]}"
    i = rng.randrange(len(layers))
    if roll < 0.25:
        layers.insert(rng.randrange(len(layers) + 1),
                      {"type": "Shared", "same_as": rng.choice([0, i, -1, len(layers), 2**31])})
        return record, "a Shared layer inserted"
    if not isinstance(layers[i], dict):
        layers[i] = {}
    field = rng.choice(LAYER_FIELDS)
    layers[i][field] = rng.choice(JSON_VALUES + [v for v in HUGE if v > 2**16])
    return record, f"layers[{i}].{field} = {str(layers[i][field])[:20]}"


# -- safetensors -------------------------------------------------------------------------------
def _safetensors(data: bytes, rng) -> tuple[bytes, str]:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    if rng.random() < 0.4 and "nnkernel" in header.get("__metadata__", {}):
        record, how = mutate_json_bytes(header["__metadata__"]["nnkernel"].encode(), rng)
        header["__metadata__"]["nnkernel"] = record.decode()
        how = f"record {how}"
    else:
        header, how = mutate_json(header, rng)
        how = f"header {how}"
    raw = _json_bytes(header)
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body, f"safetensors {how}"


# -- gzip, IDX, CSV ----------------------------------------------------------------------------
def _gzip(data: bytes, rng) -> tuple[bytes, str]:
    inner, how = mutate(gzip.decompress(data), "", rng)
    if rng.random() < 0.2:  # a stream of zeros after it: a bomb of the header's making
        co = zlib.compressobj(9, zlib.DEFLATED, 31)
        out = co.compress(inner) + co.compress(bytes(rng.choice([1, 1 << 20, 8 << 20])))
        return out + co.flush(), f"gzip of ({how}) plus zeros"
    return gzip.compress(inner, compresslevel=1), f"gzip of ({how})"


def _idx(data: bytes, rng) -> tuple[bytes, str]:
    b = bytearray(data)
    ndim = b[3]
    if rng.random() < 0.3:
        b[3] = rng.choice([0, 1, 2, 3, 4, 255])
        return bytes(b), f"IDX ndim byte {b[3]}"
    k = rng.randrange(max(1, ndim))
    value = rng.choice(HUGE[:9] + [0, 60000, 28])
    struct.pack_into(">I", b, 4 + 4 * k, value & 0xFFFFFFFF)
    return bytes(b), f"IDX dim {k} set to {value & 0xFFFFFFFF}"


def _csv(data: bytes, rng) -> tuple[bytes, str]:
    rows = [line.split(",") for line in data.decode("utf-8").split("\n")]
    i = rng.randrange(len(rows))
    roll = rng.random()
    if roll < 0.6 and rows[i]:
        j = rng.randrange(len(rows[i]))
        rows[i][j] = rng.choice(CSV_CELLS)
        how = f"cell ({i}, {j}) set to {rows[i][j][:10]!r}"
    elif roll < 0.75:
        rows[i].append(rng.choice(CSV_CELLS))
        how = f"row {i} extended"
    elif roll < 0.85:
        rows = rows[:1] if rng.random() < 0.5 else rows * 30
        how = f"{len(rows)} rows"
    else:
        rows.insert(i, rows[0])
        how = f"header repeated at row {i}"
    return "\n".join(",".join(r) for r in rows).encode("utf-8"), f"CSV {how}"
