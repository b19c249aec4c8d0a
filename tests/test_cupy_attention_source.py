"""The CuPy twin's attention and embedding kernels: CUDA sources as host C++, and on a GPU.

Without a GPU the sources of `nnkernel.kernels.cupy.attention` (the fused softmax and
its backward, a warp per row) run as host C++ with the stand-ins of
tests/test_cupy_xent_source.py (every CUDA thread a real thread, warp shuffles through
a barrier), and the embedding gather's elementwise body in a plain loop; both against
the reference kernels. Where CuPy sees a GPU the twin itself is compared with the
reference (tests/test_gpt_torch.py then runs a whole GPT on it against PyTorch).
"""

from __future__ import annotations

import ast
import ctypes
import subprocess
from pathlib import Path

import array_api_compat.numpy as np_compat
import numpy as np
import pytest
from conftest import backend_unavailable
from test_cupy_xent_source import CXX, HOST_STANDINS

import nnkernel as nk
from nnkernel.kernels.cupy import attention as cupy_attention
from nnkernel.kernels.reference import Kernels

REF = Kernels(np_compat)
CTYPES = {"float": (np.float32, ctypes.c_float), "double": (np.float64, ctypes.c_double)}
EMBEDDING = Path(__file__).resolve().parents[1] / "nnkernel" / "kernels" / "cupy" / "embedding.py"


def gather_body():
    tree = ast.parse(EMBEDDING.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", None) == "_GATHER_CODE")
    return ast.literal_eval(node.value)


def host_code():
    code = [HOST_STANDINS]
    for ctype in CTYPES:
        for kernel in cupy_attention.KERNELS:
            source, name = cupy_attention.source(ctype, kernel)
            own = f"{name}_{ctype}"  # one C name per kernel and type
            code.append(f"namespace {own}_ns {{\n{source.replace(name, own)}\n}}\n")
            if kernel == "softmax":
                code.append(f'extern "C" void run_{own}(unsigned grid, {ctype}* s, long long rows, '
                            f"long long T, {ctype} scale, int causal) {{ launch(grid, "
                            f"{cupy_attention.THREADS}, [=] {{ {own}_ns::{own}(s, rows, T, "
                            "scale, causal); }); }\n")
            else:
                code.append(f'extern "C" void run_{own}(unsigned grid, const {ctype}* P, '
                            f"{ctype}* d, const {ctype}* m, long long rows, long long T, "
                            f"{ctype} scale, int has_mask) {{ launch(grid, "
                            f"{cupy_attention.THREADS}, [=] {{ {own}_ns::{own}(P, d, m, rows, T, "
                            "scale, has_mask); }); }\n")
        code.append(f"namespace gather_{ctype} {{ typedef {ctype} T; extern \"C\" void "
                    f"gather_{ctype}(const T* W, const long long* ids, long long V, long long C, "
                    "T* y_, long long n) { for (long long i = 0; i < n; ++i) { T& y = y_[i]; "
                    + gather_body() + " } } }\n")
    return "".join(code)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler")
    folder = tmp_path_factory.mktemp("attention_cuda")
    (folder / "k.cpp").write_text(host_code())
    proc = subprocess.run([CXX, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-o",
                           str(folder / "k.so"), str(folder / "k.cpp")], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode and "barrier" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("the C++ compiler has no <barrier> (C++20)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ctypes.CDLL(str(folder / "k.so"))


def ptr(a):
    return ctypes.c_void_p(a.ctypes.data)


def grid(rows):
    per_block = cupy_attention.THREADS // 32
    return ctypes.c_uint((rows + per_block - 1) // per_block)


def tol(ctype):
    return {"rtol": 2e-6, "atol": 1e-7} if ctype == "float" else {"rtol": 1e-13, "atol": 1e-15}


SHAPES = [(2, 2, 4, 4), (1, 3, 5, 5), (1, 1, 40, 40), (3, 1, 1, 1)]  # 40: lanes loop


@pytest.mark.parametrize("ctype", list(CTYPES))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_source_matches_reference(host, ctype, causal, shape):
    dtype, scalar = CTYPES[ctype]
    s = (np.random.default_rng(0).standard_normal(shape) * 4).astype(dtype)
    want = REF.attention_softmax(s, 0.3, causal)
    got = s.copy()
    rows = got.size // shape[-1]
    getattr(host, f"run_nnk_attention_softmax_{ctype}")(
        grid(rows), ptr(got), ctypes.c_longlong(rows), ctypes.c_longlong(shape[-1]),
        scalar(0.3), ctypes.c_int(causal))
    np.testing.assert_allclose(got, want, **tol(ctype))
    if causal:
        assert (got[..., np.triu_indices(shape[-1], 1)[0],
                    np.triu_indices(shape[-1], 1)[1]] == 0).all()


@pytest.mark.parametrize("ctype", list(CTYPES))
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_backward_source_matches_reference(host, ctype, with_mask, shape):
    """Δ from rowsum(P ⊙ dP) in the kernel equals the reference's rowsum(dO ⊙ O)."""
    dtype, scalar = CTYPES[ctype]
    rng = np.random.default_rng(1)
    D = 3
    q, k, v, do = (rng.standard_normal((*shape[:-1], D)).astype(dtype) for _ in range(4))
    be = nk.Backend("numpy")
    o, (P, mask) = REF.attention(q, k, v, True, 0.3 if with_mask else 0.0,
                                 be.random(0) if with_mask else None)
    dPd = np.matmul(do, np.swapaxes(v, -1, -2))
    want = REF.attention_softmax_backward(P, dPd, mask, o, do, 0.5)
    got = dPd.copy()
    rows = got.size // shape[-1]
    getattr(host, f"run_nnk_attention_softmax_backward_{ctype}")(
        grid(rows), ptr(P), ptr(got), ptr(P if mask is None else mask),
        ctypes.c_longlong(rows), ctypes.c_longlong(shape[-1]), scalar(0.5),
        ctypes.c_int(with_mask))
    np.testing.assert_allclose(got, want, **{**tol(ctype), "atol": 1e-6 if ctype == "float"
                                             else 1e-14})


@pytest.mark.parametrize("ctype", list(CTYPES))
def test_gather_body_gathers_rows_and_gives_nan_for_bad_ids(host, ctype):
    dtype, _ = CTYPES[ctype]
    W = np.random.default_rng(2).standard_normal((5, 3)).astype(dtype)
    ids = np.array([[4, 0, 4], [1, -1, 5]], dtype=np.int64)
    y = np.full((2, 3, 3), 7.0, dtype=dtype)
    getattr(host, f"gather_{ctype}")(ptr(W), ptr(ids), ctypes.c_longlong(5), ctypes.c_longlong(3),
                                     ptr(y), ctypes.c_longlong(y.size))
    ok = (ids >= 0) & (ids < 5)
    np.testing.assert_array_equal(y[ok], W[ids[ok]])
    assert np.isnan(y[~ok]).all()


# -- on a GPU: the twin itself ------------------------------------------------------------
NO_GPU = backend_unavailable("cupy")
gpu = pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_cupy_attention_twin_matches_reference(dtype, causal, dropout):
    import cupy

    be = nk.Backend("cupy")
    twin = be.kernels
    rng = np.random.default_rng(3)
    q, k, v, do = (rng.standard_normal((2, 3, 37, 8)).astype(dtype) for _ in range(4))
    dq = [cupy.asarray(a) for a in (q, k, v, do)]
    o, saved = twin.attention(*dq[:3], causal, dropout, be.random(1) if dropout else None)
    grads = twin.attention_backward(*dq[:3], o, saved, dq[3])
    mask = None if saved[1] is None else cupy.asnumpy(saved[1])
    P = REF.attention_softmax(np.matmul(q, np.swapaxes(k, -1, -2)), 1 / np.sqrt(8), causal)
    want_o = np.matmul(P if mask is None else P * mask, v)
    want = REF.attention_backward(q, k, v, want_o, (P, mask), do)
    t = {"rtol": 1e-4, "atol": 1e-5} if dtype == "float32" else {"rtol": 1e-11, "atol": 1e-12}
    np.testing.assert_allclose(cupy.asnumpy(o), want_o, **t)
    for got, w in zip(grads, want, strict=True):
        np.testing.assert_allclose(cupy.asnumpy(got), w, **t)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_embedding_twin_matches_reference(dtype):
    import cupy

    twin = nk.Backend("cupy").kernels
    rng = np.random.default_rng(4)
    W = rng.standard_normal((9, 5)).astype(dtype)
    ids = rng.integers(0, 9, (4, 6))
    ids[0, :4] = 2  # repeated
    dy = rng.standard_normal((4, 6, 5)).astype(dtype)
    np.testing.assert_array_equal(cupy.asnumpy(twin.embedding(cupy.asarray(W),
                                                              cupy.asarray(ids))), W[ids])
    bad = cupy.asnumpy(twin.embedding(cupy.asarray(W), cupy.asarray(np.array([[9, -1, 0]]))))
    assert np.isnan(bad[0, :2]).all() and not np.isnan(bad[0, 2]).any()
    buf = cupy.full((9, 5), np.nan, dtype=dtype)
    got = twin.embedding_backward(cupy.asarray(ids), cupy.asarray(dy), 9, out=buf)
    assert got is buf
    t = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-13, "atol": 1e-14}
    np.testing.assert_allclose(cupy.asnumpy(got), REF.embedding_backward(ids, dy, 9), **t)
