"""CuPy twin of the loss kernels: softmax + cross-entropy as one raw kernel (losses and gradient).

Part of the CuPy twin (`CupyLossKernels` calls `softmax_xent`). One launch
computes, for every row of logits z (C classes), the row maximum, Σ exp, the
loss and δ = (softmax(z) − t) / count, where the reference takes ~12 launches
(~6 more for integer labels: arange, ==, astype and a rows×C one-hot).

- Targets are probabilities (rows × C) or int64 class labels (rows): a label
  kernel reads z[label] and never builds a one-hot. A label outside 0..C−1 gives
  a NaN loss (the kernel never reads out of bounds; `fit` checks labels once
  per dataset, so this never happens there).
- An ensemble's outputs (E, N, C) share targets of N rows by index
  (row mod N): nothing is broadcast or copied.
- ``loss_scale``: 1 for per-row losses (the reference's contract), or 1/count,
  so that one sum gives the mean loss ("the mean folded in").
- Below 1024 classes a warp (32 threads) takes a row, its reductions warp
  shuffles; from 1024 classes a block of 256 threads takes a row (8 warps'
  partials through shared memory), so a wide row is not left to 32 threads.

UNTESTED ON A GPU when written (no GPU in that session): written against CuPy
13/14 RawKernel; tests/test_cuda_compile.py compiles it as device code in CI,
tests/test_cupy_xent_source.py runs it as host C++, tests/test_cupy_twin.py
compares it with the reference for C = 10, 1000 and 32768 where a GPU is.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import cupy
except ImportError:  # the CUDA sources stay readable, and compile-testable, without CuPy
    cupy = None

from .specs import WARP_REDUCTIONS, Raw

_SOURCE = r"""
typedef %(ctype)s T;
typedef %(ttype)s TT;
typedef long long i64;
#define LABELS %(labels)d
#define ROW_PER_BLOCK %(block)d
""" + WARP_REDUCTIONS + r"""
#if ROW_PER_BLOCK
// The whole block's max or sum of x: shuffles within each warp, then warp 0 over the
// warps' partials. partial[32] holds the result, apart from the slots warp 0 reads.
template <bool MAX>
__device__ __forceinline__ T block_reduce(T x, T* partial) {
    x = MAX ? warp_max(x) : warp_sum(x);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // every thread has read the previous reduction's partial[32]
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    if (warp == 0) {
        x = lane < (int)(blockDim.x >> 5) ? partial[lane] : (MAX ? partial[0] : (T)0);
        x = MAX ? warp_max(x) : warp_sum(x);
        if (lane == 0) partial[32] = x;
    }
    __syncthreads();
    return partial[32];
}
#define REDUCE_MAX(v) block_reduce<true>(v, partial)
#define REDUCE_SUM(v) block_reduce<false>(v, partial)
#else
#define REDUCE_MAX(v) warp_max(v)
#define REDUCE_SUM(v) warp_sum(v)
#endif

extern "C" __global__ void %(name)s(const T* z, const TT* t, T* losses, T* dz, i64 rows,
                                   i64 C, i64 t_rows, T loss_scale, T inv_count) {
#if ROW_PER_BLOCK
    __shared__ T partial[33];
    const i64 row = blockIdx.x;
    const int lane = threadIdx.x, width = blockDim.x;
#else
    const i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31, width = 32;
    if (row >= rows) return;  // row is per warp: a row's 32 lanes leave together
#endif
    const T* zr = z + row * C;
    T* dr = dz + row * C;
    const i64 trow = row %% t_rows;  // an ensemble's members share targets by index

    T m = zr[0];
    for (i64 j = lane; j < C; j += width) m = zr[j] > m ? zr[j] : m;
    m = REDUCE_MAX(m);

#if LABELS
    const i64 label = t[trow];
    T sum_exp = 0;
    for (i64 j = lane; j < C; j += width) sum_exp += exp(zr[j] - m);
    sum_exp = REDUCE_SUM(sum_exp);
    const bool valid = label >= 0 && label < C;  // else NaN, and no read out of bounds
    if (lane == 0)
        losses[row] = valid ? (log(sum_exp) - (zr[label] - m)) * loss_scale : (T)nan("");
    const T inv_sum = (T)1 / sum_exp;
    for (i64 j = lane; j < C; j += width)
        dr[j] = (exp(zr[j] - m) * inv_sum - (j == label ? (T)1 : (T)0)) * inv_count;
#else
    const TT* tr = t + trow * C;
    T sum_exp = 0, sum_t = 0, sum_t_shifted = 0;
    for (i64 j = lane; j < C; j += width) {
        const T shifted = zr[j] - m;
        sum_exp += exp(shifted);
        sum_t += tr[j];
        sum_t_shifted += tr[j] * shifted;
    }
    sum_exp = REDUCE_SUM(sum_exp);
    sum_t = REDUCE_SUM(sum_t);
    sum_t_shifted = REDUCE_SUM(sum_t_shifted);
    // -sum t (shifted - log s) = log s * sum t - sum t shifted, for any (soft) target
    if (lane == 0) losses[row] = (log(sum_exp) * sum_t - sum_t_shifted) * loss_scale;
    const T inv_sum = (T)1 / sum_exp;
    for (i64 j = lane; j < C; j += width)
        dr[j] = (exp(zr[j] - m) * inv_sum - tr[j]) * inv_count;
#endif
}
"""
ROW_PER_BLOCK_FROM = 1024  # classes from which a block, not a warp, takes a row
THREADS = 256              # per block: 8 rows of a warp each, or one row
_ROWS_PER_WARP_BLOCK = THREADS // 32


def source(ctype: str, labels: bool, per_block: bool) -> tuple[str, str]:
    """(CUDA source, kernel name) of one variant."""
    name = f"nnk_xent_{'labels' if labels else 'probs'}_{'block' if per_block else 'warp'}"
    return _SOURCE % {"ctype": ctype, "ttype": "long long" if labels else "T",
                      "labels": int(labels), "block": int(per_block), "name": name}, name


def _spec(ctype: str, labels: bool, per_block: bool) -> Raw:
    code, name = source(ctype, labels, per_block)
    return Raw(name, code, (name,), ctype)


@functools.cache
def _kernel(ctype: str, labels: bool, per_block: bool):
    return _spec(ctype, labels, per_block).kernel()


def cuda_sources() -> list:
    """Every kernel this module builds (nnkernel/kernels/cupy/specs.py's contract)."""
    return [_spec(ctype, labels, block) for ctype in ("float", "double")
            for labels in (False, True) for block in (False, True)]


def softmax_xent(z, t, count: int, labels: bool, mean: bool = False):
    """(losses, dz) for logits z (..., C) and targets t; losses ×1/count when ``mean``."""
    if z.dtype not in (np.float32, np.float64):
        raise TypeError(f"the CuPy softmax cross-entropy takes float32 or float64, got {z.dtype}")
    z = cupy.ascontiguousarray(z)  # a raw kernel indexes memory directly
    C = z.shape[-1]
    rows = z.size // C if C else 0
    if labels:
        t = t if t.dtype == np.int64 else t.astype(np.int64)
        t_rows = t.size
    else:
        t = t if t.dtype == z.dtype else t.astype(z.dtype)
        t_rows = t.size // C if C else 0
    if rows and (t_rows == 0 or rows % t_rows):  # not members sharing rows: spell it out
        t = cupy.broadcast_to(t, z.shape[:-1] if labels else z.shape)
        t_rows = rows
    t = cupy.ascontiguousarray(t)
    losses = cupy.empty(z.shape[:-1], dtype=z.dtype)
    dz = cupy.empty_like(z)
    if rows == 0:
        return losses, dz
    per_block = C >= ROW_PER_BLOCK_FROM
    blocks = rows if per_block else (rows + _ROWS_PER_WARP_BLOCK - 1) // _ROWS_PER_WARP_BLOCK
    kernel = _kernel("float" if z.dtype == np.float32 else "double", labels, per_block)
    scalar = z.dtype.type
    kernel((blocks,), (THREADS,), (z, t, losses, dz, np.int64(rows), np.int64(C),
                                   np.int64(t_rows), scalar(1.0 / count if mean else 1.0),
                                   scalar(1.0 / count)))
    return losses, dz


class CupyLossKernels:
    def softmax_cross_entropy(self, z, target, count):
        return softmax_xent(z, target, count, labels=False)

    def softmax_cross_entropy_labels(self, z, labels, count):
        return softmax_xent(z, labels, count, labels=True)

    def softmax_cross_entropy_mean(self, z, target, count, members, labels):
        # the kernel scales each row's loss by 1/count: one sum gives the mean
        losses, dz = softmax_xent(z, target, count, labels=labels, mean=True)
        if not members:
            return losses.sum(), dz
        return losses.reshape(losses.shape[0], -1).sum(axis=1), dz
