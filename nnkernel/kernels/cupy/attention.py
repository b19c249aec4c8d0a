"""CuPy twin of the attention kernels: the softmax and its backward as one launch each.

The reference spends ~6 launches on P = softmax(S·s + mask) (scale, mask, max,
subtract, exp, sum, divide) and ~5 on dS (mask, product, sum, subtract, product).
Here a warp (32 threads) takes a row of the (…, T, T) scores, its reductions warp
shuffles, and works in place:

- `softmax`: P = softmax(S·scale + mask) into S. The causal mask is the row's own
  position (row mod T) compared with the column inside the kernel: no mask array.
- `softmax_backward`: dS·scale = P ⊙ (dP̃ ⊙ M − Δ)·scale into dP̃, with
  Δ = rowsum(P ⊙ dP̃ ⊙ M) summed in the same pass over the row. That is the
  reference's rowsum(dO ⊙ O) (O's rows are P̃ V), read from the (T, T) row at hand
  instead of two (T, D) arrays and a launch of their own; the numbers agree to
  rounding.

The matrix products around them stay cuBLAS strided-batched GEMMs (`cupy.matmul`
over the (batch, head) axes). UNTESTED ON A GPU when written (no GPU in that
session): the sources run as host C++ in tests/test_cupy_attention_source.py, and
the GPU comparisons in that file and tests/test_gpt_torch.py run where one is.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import cupy
except ImportError:  # the CUDA sources stay readable, and compile-testable, without CuPy
    cupy = None

from .specs import WARP_REDUCTIONS, Raw

_COMMON = r"""
typedef %(ctype)s T;
typedef long long i64;
""" + WARP_REDUCTIONS

_SOFTMAX = r"""
// P = softmax(s * scale + mask) of each row of s (rows x T), in place; causal: the
// columns after the row's position (row mod T) get P = 0.
extern "C" __global__ void %(name)s(T* s, i64 rows, i64 T_, T scale, int causal) {
    const i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // row is per warp: a row's 32 lanes leave together
    T* r = s + row * T_;
    const i64 last = causal ? row %% T_ : T_ - 1;  // the last column a query may see
    T m = r[0] * scale;
    for (i64 j = lane; j <= last; j += 32) { const T v = r[j] * scale; m = v > m ? v : m; }
    m = warp_max(m);
    T sum = 0;
    for (i64 j = lane; j <= last; j += 32) sum += exp(r[j] * scale - m);
    sum = warp_sum(sum);
    const T inv = (T)1 / sum;
    for (i64 j = lane; j < T_; j += 32) r[j] = j <= last ? exp(r[j] * scale - m) * inv : (T)0;
}
"""

_BACKWARD = r"""
// dS * scale = P (dP - rowsum(P dP)) * scale of each row, dP = dPd (x mask), into dPd.
extern "C" __global__ void %(name)s(const T* P, T* dPd, const T* mask, i64 rows, i64 T_,
                                   T scale, int has_mask) {
    const i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const T* p = P + row * T_;
    T* d = dPd + row * T_;
    const T* m = has_mask ? mask + row * T_ : (const T*)0;
    T delta = 0;
    for (i64 j = lane; j < T_; j += 32) delta += p[j] * (has_mask ? d[j] * m[j] : d[j]);
    delta = warp_sum(delta);
    for (i64 j = lane; j < T_; j += 32) {
        const T dp = has_mask ? d[j] * m[j] : d[j];
        d[j] = p[j] * (dp - delta) * scale;
    }
}
"""
THREADS = 256  # per block: 8 rows, a warp each
KERNELS = ("softmax", "softmax_backward")


def source(ctype: str, kernel: str) -> tuple[str, str]:
    """(CUDA source, kernel name) of one kernel ("softmax" or "softmax_backward") for
    ctype "float" or "double"."""
    name = f"nnk_attention_{kernel}"
    body = {"softmax": _SOFTMAX, "softmax_backward": _BACKWARD}[kernel]
    return (_COMMON + body) % {"ctype": ctype, "name": name}, name


def _spec(ctype: str, kernel: str) -> Raw:
    code, name = source(ctype, kernel)
    return Raw(name, code, (name,), ctype)


@functools.cache
def _kernel(ctype: str, kernel: str):
    return _spec(ctype, kernel).kernel()


def cuda_sources() -> list:
    """Every kernel this module builds (nnkernel/kernels/cupy/specs.py's contract)."""
    return [_spec(ctype, kernel) for ctype in ("float", "double") for kernel in KERNELS]


def _launch(kernel: str, x, arguments) -> None:
    """Run ``kernel`` over the rows of x (a warp each); ``arguments(rows)`` gives its arguments."""
    rows = x.size // x.shape[-1] if x.size else 0
    if rows:
        ctype = "float" if x.dtype == np.float32 else "double"
        blocks = (rows + THREADS // 32 - 1) // (THREADS // 32)
        _kernel(ctype, kernel)((blocks,), (THREADS,), arguments(rows))


class CupyAttentionKernels:
    def attention_softmax(self, s, scale, causal):
        if s.dtype not in (np.float32, np.float64) or not s.flags.c_contiguous:
            return super().attention_softmax(s, scale, causal)
        T, scalar = s.shape[-1], s.dtype.type
        _launch("softmax", s, lambda rows: (s, np.int64(rows), np.int64(T), scalar(scale),
                                            np.int32(causal)))
        return s

    def attention_softmax_backward(self, P, dPd, mask, o, do, scale):
        arrays = (P, dPd) if mask is None else (P, dPd, mask)
        if dPd.dtype not in (np.float32, np.float64) or not all(
                a.flags.c_contiguous and a.dtype == dPd.dtype for a in arrays):
            return super().attention_softmax_backward(P, dPd, mask, o, do, scale)
        T, scalar = dPd.shape[-1], dPd.dtype.type
        _launch("softmax_backward", dPd, lambda rows: (
            P, dPd, P if mask is None else mask, np.int64(rows), np.int64(T), scalar(scale),
            np.int32(mask is not None)))
        return dPd
