"""Write tests/fuzz_corpus/: small valid files per reader, and one file per finding of issue 22.

    python tests/fuzz_corpus_make.py      # rewrites the corpus (deterministic)

Seeds are named seed_*, reproductions of a finding finding_* (what the reader
did before the fix is in the module's FINDINGS). Each file is a few KB.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

import nnkernel as nk
from nnkernel.io import saving

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"

FINDINGS = {  # file: what the reader did before the fix (issue 22)
    "model/finding_dense_30000.npz": "a 1.6 KB file declaring Dense(30000, 30000) asked for "
                                     "6.7 GiB before any size check (item 11)",
    "model/finding_n_in_2pow31.npz": "n_in = 2**31 asked for hundreds of GiB (item 11)",
    "safetensors/finding_dense_30000.safetensors": "the same, as safetensors (item 11)",
    "safetensors/finding_n_in_2pow31.safetensors": "the same, as safetensors (item 11)",
    "npz_metadata/finding_record_zlib_error.npz": "zlib.error out of read_metadata (item 15)",
    "npz_metadata/finding_record_encrypted.npz": "RuntimeError: encrypted flag (item 15)",
    "npz_metadata/finding_record_lzma.npz": "lzma.LZMAError (item 15)",
    "npz_metadata/finding_record_method_99.npz": "NotImplementedError (item 15)",
    "npz_metadata/finding_record_deep.npz": "RecursionError from json (a deeply nested record)",
    "idx/finding_huge_dims.gz": "OverflowError from zlib (dims of 2**32 - 1, item 13)",
    "npy/finding_syntax.npy": "SyntaxError from the dtype parser, printed without the file "
                              "by nnkernel predict (item 16)",
    "npy/finding_token.npy": "tokenize.TokenError (item 16)",
    "npy/finding_overflow.npy": "OverflowError from a 23-digit dimension (item 16)",
    "npy/finding_v2_huge_header.npy": "MemoryError: a 4 GiB header length read at once (item 16)",
    # found by tests/fuzz_readers.py while the readers were rewritten
    "model/fuzz_shapes_do_not_chain.npz": "a bare ShapeError, not a CheckpointError",
    "safetensors/fuzz_shapes_do_not_chain.safetensors": "the same, as safetensors",
    "safetensors/fuzz_dtype_not_a_string.safetensors": "TypeError: a dtype of [] in the header",
    "npy/fuzz_empty_but_impossible_shape.npy": "ValueError from NumPy: shape (0, 2**63 - 1, 2)",
}


def model_bytes(model, suffix: str, edit=None) -> bytes:
    """nk.save's file for ``model``, its record changed by ``edit`` (a function)."""
    record = json.loads(saving._record(model, {"divide_by": 16.0}, "x"))
    if edit is not None:
        edit(record)
    text = json.dumps(record)
    arrays = model.arrays()
    if suffix == ".safetensors":
        import safetensors.numpy as st

        return st.save(arrays, metadata={"nnkernel": text})
    return zip_bytes([("nnkernel.json", text.encode(), zipfile.ZIP_STORED)]
                     + [(k + ".npy", npy_bytes(v), zipfile.ZIP_STORED) for k, v in arrays.items()])


def zip_bytes(members) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, method in members:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=False)
    return buf.getvalue()


def npy_with_header(header: str, data: bytes = b"") -> bytes:
    raw = header.encode("latin1")
    raw += b" " * (-(10 + len(raw) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + data


def patch_member(data: bytes, name: str, *, method=None, flags=None) -> bytes:
    """``data`` (a zip) with one member's method or flags changed in both its headers."""
    b = bytearray(data)
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = zf.getinfo(name)
    pos = zf.start_dir
    while b[pos:pos + 4] == b"PK\x01\x02":
        n, m, k = struct.unpack("<HHH", b[pos + 28:pos + 34])
        if b[pos + 46:pos + 46 + n].decode() == name:
            for value, local, central in ((method, 8, 10), (flags, 6, 8)):
                if value is not None:
                    struct.pack_into("<H", b, info.header_offset + local, value)
                    struct.pack_into("<H", b, pos + central, value)
        pos += 46 + n + m + k
    return bytes(b)


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + \
        a.astype(np.uint8).tobytes()


def files() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    mlp = nk.Sequential(nk.Dense(3, 4), nk.BatchNorm(4), nk.ReLU(), nk.Dense(4, 2), seed=0)
    ens = nk.Sequential(nk.Dense(2, 3, activation="gelu"), nk.LayerNorm(3), nk.Dense(3, 2),
                        seed=1, dtype="float64", ensemble=2)
    shared = nk.Dense(3, 3)
    tied = nk.Sequential(shared, nk.Tanh(), shared, nk.Dropout(0.1), nk.Softmax(), seed=2)
    conv = nk.Sequential(nk.Conv2D(1, 2, 3, padding=1), nk.BatchNorm2D(2), nk.MaxPool2D(2),
                         nk.Flatten(), nk.Dense(8, 2), seed=3, input_shape=(1, 4, 4))

    def wide(record):
        layers = record["config"]["layers"]
        layers[0].update(n_in=30000, n_out=30000)
        layers[1]["n"] = 30000
        layers[3]["n_in"] = 30000

    def deep_n_in(record):
        record["config"]["layers"][0]["n_in"] = 2**31

    def narrow(record):  # too small an image for the Dense after Flatten
        record["config"]["input_shape"] = [1, 2, 2]

    out = {}
    for suffix, folder in ((".npz", "model"), (".safetensors", "safetensors")):
        for name, model in (("mlp", mlp), ("ensemble", ens), ("tied", tied), ("conv", conv)):
            out[f"{folder}/seed_{name}{suffix}"] = model_bytes(model, suffix)
        out[f"{folder}/finding_dense_30000{suffix}"] = model_bytes(mlp, suffix, wide)
        out[f"{folder}/finding_n_in_2pow31{suffix}"] = model_bytes(mlp, suffix, deep_n_in)
        out[f"{folder}/fuzz_shapes_do_not_chain{suffix}"] = model_bytes(conv, suffix, narrow)
    blob = out["safetensors/seed_mlp.safetensors"]
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["0.b"]["dtype"] = []
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    out["safetensors/fuzz_dtype_not_a_string.safetensors"] = \
        len(raw).to_bytes(8, "little") + raw + blob[8 + n:]
    good = model_bytes(mlp, ".npz")
    out["npz_metadata/seed_mlp.npz"] = good
    members = [(i.filename, zipfile.ZipFile(io.BytesIO(good)).read(i), i.compress_type)
               for i in zipfile.ZipFile(io.BytesIO(good)).infolist()]
    deflated = zip_bytes([(n, d, zipfile.ZIP_DEFLATED if n == "nnkernel.json" else m)
                          for n, d, m in members])
    record_at = deflated.index(b"nnkernel.json") + len("nnkernel.json")
    broken = bytearray(deflated)
    broken[record_at + 5:record_at + 9] = b"\xff\xff\xff\xff"  # inside the deflate stream
    out["npz_metadata/finding_record_zlib_error.npz"] = bytes(broken)
    out["npz_metadata/finding_record_encrypted.npz"] = patch_member(good, "nnkernel.json",
                                                                    flags=1)
    bad_options = b"\x09\x04\x05\x00" + b"\xff" * 5  # an LZMA header zipfile cannot take
    out["npz_metadata/finding_record_lzma.npz"] = patch_member(
        zip_bytes([("nnkernel.json", bad_options + members[0][1], 0)] + members[1:]),
        "nnkernel.json", method=zipfile.ZIP_LZMA)
    out["npz_metadata/finding_record_method_99.npz"] = patch_member(good, "nnkernel.json",
                                                                    method=99)
    deep = "[" * 100000 + "]" * 100000
    out["npz_metadata/finding_record_deep.npz"] = zip_bytes(
        [("nnkernel.json", deep.encode(), zipfile.ZIP_DEFLATED)] + members[1:])
    images = rng.integers(0, 256, size=(5, 4, 4))
    labels = rng.integers(0, 10, size=5)
    out["idx/seed_images-idx3-ubyte"] = idx_bytes(images)
    out["idx/seed_labels-idx1-ubyte"] = idx_bytes(labels)
    out["idx/seed_images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images), mtime=0)
    out["idx/seed_labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels), mtime=0)
    huge = bytes([0, 0, 8, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + bytes(64)
    out["idx/finding_huge_dims.gz"] = gzip.compress(huge, mtime=0)
    X = rng.normal(size=(12, 3)).round(3)
    y = rng.integers(0, 3, size=12)
    lines = ["a,b,c,label"] + [f"{r[0]},{r[1]},{r[2]},{t}" for r, t in zip(X, y, strict=True)]
    out["csv/seed_classes.csv"] = "\n".join(lines).encode()
    lines = ["x,label"] + [f"{r[0]},{r[1] * 2.5}" for r in X]
    out["csv/seed_regression.csv"] = "\n".join(lines).encode()
    out["csv/seed_features.csv"] = "\n".join(",".join(map(str, r)) for r in X).encode()
    out["npy/seed_float32.npy"] = npy_bytes(X.astype(np.float32))
    out["npy/seed_uint8_images.npy"] = npy_bytes(images[:, None].astype(np.uint8))
    out["npy/seed_fortran_float64.npy"] = npy_bytes(np.asfortranarray(X))
    head = "{'descr': %s, 'fortran_order': False, 'shape': %s, }"
    out["npy/finding_syntax.npy"] = npy_with_header(head % ("'f4,,'", "(1,)"), bytes(4))
    out["npy/finding_token.npy"] = npy_with_header(head % ("'<f4'", "(1,)") + "'''")
    out["npy/finding_overflow.npy"] = npy_with_header(head % ("'<f4'", "(" + "9" * 23 + ",)"))
    out["npy/fuzz_empty_but_impossible_shape.npy"] = npy_with_header(
        head % ("'<f4'", f"(0, {2**63 - 1}, 2)"))
    out["npy/finding_v2_huge_header.npy"] = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1) \
        + b"{'descr': '<f4'"
    def npz(method=zipfile.ZIP_STORED, **arrays):  # np.savez's layout, without its clock
        return zip_bytes([(k + ".npy", npy_bytes(v), method) for k, v in arrays.items()])

    out["npz_dataset/seed_xy.npz"] = npz(X=X.astype(np.float32), y=y)
    out["npz_dataset/seed_split_compressed.npz"] = npz(
        zipfile.ZIP_DEFLATED, X_train=X[:8], y_train=y[:8], X_test=X[8:], y_test=y[8:])
    out["npz_dataset/seed_images.npz"] = npz(X=images.astype(np.uint8), y=labels)
    return out


def main() -> None:
    """Write the corpus (the same bytes every time, for the same nnkernel)."""
    for name, data in files().items():
        path = CORPUS / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{len(data):7,d}  {name}")
    for name in FINDINGS:
        assert (CORPUS / name).exists(), name


if __name__ == "__main__":
    main()
