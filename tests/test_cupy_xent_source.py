"""The CuPy twin's softmax cross-entropy CUDA source, run on the CPU against the reference.

No GPU is needed: the source is compiled as host C++ with stand-ins for CUDA's
built-ins, and every CUDA thread of a block is a real thread, so warp shuffles
(an exchange through a per-warp barrier) and ``__syncthreads`` (a block barrier)
keep their meaning. This checks what such kernels get wrong: the row and lane
arithmetic, the warp and block reductions, label gathers, members sharing targets
by index, a label out of range. Launching through CuPy is tested where a GPU is
(tests/test_cupy_twin.py). CuPy is never called.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import array_api_compat.numpy as np_compat
import numpy as np
import pytest

from nnkernel.kernels.cupy import losses as cupy_xent
from nnkernel.kernels.reference import Kernels

CXX = shutil.which("g++") or shutil.which("c++")
REF = Kernels(np_compat)
HOST_STANDINS = r"""
#include <barrier>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>
struct dim3 { unsigned x, y, z; };
static dim3 blockIdx, blockDim, gridDim;
static thread_local dim3 threadIdx;
using std::exp; using std::log; using std::nan;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time
static std::unique_ptr<std::barrier<>> block_barrier;
static std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
static double warp_slots[1024];
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
template <typename T> T __shfl_xor_sync(unsigned, T x, int offset) {
    const unsigned t = threadIdx.x;
    warp_slots[t] = (double)x;
    warp_barriers[t >> 5]->arrive_and_wait();
    const T y = (T)warp_slots[t ^ offset];
    warp_barriers[t >> 5]->arrive_and_wait();
    return y;
}
template <typename F> void launch(unsigned grid, unsigned block, F body) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    block_barrier = std::make_unique<std::barrier<>>(block);
    warp_barriers.clear();
    for (unsigned w = 0; w < block / 32; ++w)
        warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx = {b, 0, 0};
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([&body, t] { threadIdx = {t, 0, 0}; body(); });
        for (auto& thread : threads) thread.join();
    }
}
"""
VARIANTS = [("double", False, False), ("double", False, True), ("double", True, False),
            ("double", True, True), ("float", True, True)]


def variant_code(index, ctype, labels, per_block):
    """One variant in a namespace of its own, and an extern "C" launcher run_<index>."""
    source, name = cupy_xent.source(ctype, labels, per_block)
    source = source.replace(name, f"{name}_{index}")  # one C name per variant and type
    name = f"{name}_{index}"
    tt = "long long" if labels else ctype
    return (f"namespace v{index} {{\n{source}\n}}\n"
            "#undef LABELS\n#undef ROW_PER_BLOCK\n#undef REDUCE_MAX\n#undef REDUCE_SUM\n"
            f'extern "C" void run_{index}(unsigned grid, unsigned block, const {ctype}* z, '
            f"const {tt}* t, {ctype}* losses, {ctype}* dz, long long rows, long long C, "
            f"long long t_rows, {ctype} scale, {ctype} inv) {{\n"
            f"    launch(grid, block, [=] {{ v{index}::{name}(z, t, losses, dz, rows, C, "
            "t_rows, scale, inv); });\n}\n")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler")
    folder = tmp_path_factory.mktemp("xent_cuda")
    code = HOST_STANDINS + "".join(variant_code(i, *v) for i, v in enumerate(VARIANTS))
    (folder / "k.cpp").write_text(code)
    proc = subprocess.run([CXX, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-o",
                           str(folder / "k.so"), str(folder / "k.cpp")], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode and "barrier" in proc.stderr and "No such file" in proc.stderr:
        pytest.skip("the C++ compiler has no <barrier> (C++20)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ctypes.CDLL(str(folder / "k.so"))


def run(host, index, z, t, count, mean=False):
    """The kernel's (losses, dz), launched with the geometry `cupy_xent.softmax_xent` uses."""
    ctype, labels, per_block = VARIANTS[index]
    dtype = np.float32 if ctype == "float" else np.float64
    z = np.ascontiguousarray(z, dtype=dtype)
    t = np.ascontiguousarray(t, dtype=np.int64 if labels else dtype)
    C = z.shape[-1]
    rows, t_rows = z.size // C, (t.size if labels else t.size // C)
    losses, dz = np.full(z.shape[:-1], -7.0, dtype), np.full(z.shape, -7.0, dtype)
    grid = rows if per_block else -(-rows // 8)
    scalar = ctypes.c_float if ctype == "float" else ctypes.c_double
    ptr = ctypes.c_void_p
    getattr(host, f"run_{index}")(
        ctypes.c_uint(grid), ctypes.c_uint(cupy_xent.THREADS), ptr(z.ctypes.data),
        ptr(t.ctypes.data), ptr(losses.ctypes.data), ptr(dz.ctypes.data),
        ctypes.c_longlong(rows), ctypes.c_longlong(C), ctypes.c_longlong(t_rows),
        scalar(1.0 / count if mean else 1.0), scalar(1.0 / count))
    return losses, dz


CASES = [((13, 10), (13,)), ((3, 11, 7), (11,)), ((3, 11, 7), (3, 11)), ((2, 40), (2,)),
         ((5, 1), (5,))]


@pytest.mark.parametrize("index", [0, 1, 2, 3])
@pytest.mark.parametrize("z_shape,rows", CASES, ids=str)
def test_source_matches_reference(host, index, z_shape, rows):
    _, labels, _ = VARIANTS[index]
    rng = np.random.default_rng(index)
    z = rng.standard_normal(z_shape) * 3.0
    C, count = z_shape[-1], rows[-1]
    y = rng.integers(0, C, rows)
    if labels:
        want = REF.softmax_cross_entropy_labels(z, y, count)
        got = run(host, index, z, y, count)
    else:  # soft targets that do not sum to 1, shared by an ensemble's members by index
        t = rng.random((*rows, C))
        want = REF.softmax_cross_entropy(z, t, count)
        got = run(host, index, z, t, count)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, np.broadcast_to(w, g.shape), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("index,C", [(3, 1024), (4, 3000), (3, 32768)])
def test_block_per_row_for_many_classes(host, index, C):
    rng = np.random.default_rng(C)
    z = rng.standard_normal((3, C)) * 5.0
    y = np.array([0, C - 1, C // 2])
    (losses, dz), (want_l, want_dz) = run(host, index, z, y, 3, mean=True), \
        REF.softmax_cross_entropy_labels(z, y, 3)
    tol = {"rtol": 2e-5, "atol": 1e-7} if VARIANTS[index][0] == "float" else {"rtol": 1e-11}
    np.testing.assert_allclose(losses, want_l / 3.0, **tol)  # mean=True: scaled by 1/count
    np.testing.assert_allclose(dz, want_dz, **{**tol, "atol": 1e-9})


def test_a_label_out_of_range_is_nan_and_reads_nothing_outside(host):
    z = np.zeros((3, 10))
    losses, dz = run(host, 2, z, np.array([3, -1, 10]), 3)
    assert np.isfinite(losses[0]) and np.isnan(losses[1:]).all()
    np.testing.assert_allclose(dz[1:], 0.1 / 3)  # softmax / count, no label subtracted


def test_large_logits_stay_finite(host):
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, -5e4, -5e4]])
    losses, dz = run(host, 2, z, np.array([0, 2]), 2)
    np.testing.assert_allclose(losses, [0.0, np.log(3.0)], atol=1e-12)
    assert np.isfinite(dz).all()
