"""CuPy twin of the convolution kernels: im2col and col2im as one CUDA kernel each.

UNTESTED ON A GPU: written against the CuPy 13/14 API without a GPU to run it;
compiled as device code in CI (tests/test_cuda_compile.py) and run as host C++
(tests/test_conv_cupy_source.py). Test it against the reference
(tests/test_conv_kernels.py's cases) on a GPU before use.

- im2col: one thread per entry of X̂ (C·kH·kW, N·H_out·W_out), reading its
  input pixel or writing 0 in the padding: one launch instead of the
  reference's kH·kW slices, stack and transpose.
- col2im: a gather, one thread per input pixel summing the entries of dX̂ that
  read it, offsets in row-major order as the reference; no atomics, so the
  result is deterministic.
- the products go to cuBLAS through `cupy.matmul` (GEMM; strided-batched GEMM for
  an ensemble), writing into the model's gradient buffers (``out=``); the bias
  add is fused into the (C_out, N) -> (N, C_out) transpose of z.

Pooling is the reference's (about 3·k² elementwise launches for max-pooling); a
raw kernel per pooling op is the next step if it shows in a profile. This module
imports CuPy at its top where it is installed (nnkernel imports it for the "cupy" backend).
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import cupy
except ImportError:  # the CUDA sources stay readable, and compile-testable, without CuPy
    cupy = None

from ..reference.conv import ConvKernels, check_conv_shapes, conv_out_size
from .specs import Raw

_SOURCE = r"""
typedef %(ctype)s T;

// cols[e][c][i][j][n][h][w] = x[e][n][c][s*h + i - p][s*w + j - p], 0 in the padding
extern "C" __global__ void nnk_im2col(const T* x, T* cols, long long total,
        int N, int C, int H, int W, int kh, int kw, int s, int p, int Ho, int Wo) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        long long r = t;
        const int w = (int)(r %% Wo); r /= Wo;
        const int h = (int)(r %% Ho); r /= Ho;
        const int n = (int)(r %% N); r /= N;
        const int j = (int)(r %% kw); r /= kw;
        const int i = (int)(r %% kh); r /= kh;
        const int c = (int)(r %% C);
        const long long e = r / C;
        const int hi = s * h + i - p, wi = s * w + j - p;
        T v = (T)0;
        if (hi >= 0 && hi < H && wi >= 0 && wi < W)
            v = x[(((e * N + n) * C + c) * H + hi) * (long long)W + wi];
        cols[t] = v;
    }
}

// dx[e][n][c][y][x] = sum of cols[e][c][i][j][n][h][w] over s*h + i - p = y, s*w + j - p = x
extern "C" __global__ void nnk_col2im(const T* cols, T* dx, long long total,
        int N, int C, int H, int W, int kh, int kw, int s, int p, int Ho, int Wo) {
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (long long)blockDim.x * gridDim.x) {
        long long r = t;
        const int xw = (int)(r %% W); r /= W;
        const int yh = (int)(r %% H); r /= H;
        const int c = (int)(r %% C); r /= C;
        const int n = (int)(r %% N);
        const long long e = r / N;
        const int yp = yh + p, xp = xw + p;  // position in the padded input
        const long long L = (long long)Ho * Wo;
        T acc = (T)0;
        for (int i = yp %% s; i < kh && i <= yp; i += s) {  // offsets with s | (yp - i)
            const int h = (yp - i) / s;
            if (h >= Ho) continue;
            for (int j = xp %% s; j < kw && j <= xp; j += s) {
                const int w = (xp - j) / s;
                if (w >= Wo) continue;
                const long long row = ((e * C + c) * kh + i) * kw + j;
                acc += cols[(row * N + n) * L + (long long)h * Wo + w];
            }
        }
        dx[t] = acc;
    }
}
"""
_THREADS = 256
_MAX_BLOCKS = 65535 * 32  # the grid-stride loop covers any size


def _spec(ctype: str) -> Raw:
    return Raw("nnk_im2col_col2im", _SOURCE % {"ctype": ctype}, ("nnk_im2col", "nnk_col2im"),
               ctype)


@functools.cache
def _kernels(ctype: str):
    module = _spec(ctype).module()
    return module.get_function("nnk_im2col"), module.get_function("nnk_col2im")


def cuda_sources() -> list:
    """Every kernel this module builds (nnkernel/kernels/cupy/specs.py's contract)."""
    return [_spec("float"), _spec("double")]


def _launch(kernel, src, dst, x_shape, kh, kw, stride, padding, H_out, W_out):
    *_, N, C, H, W = x_shape
    total = dst.size
    blocks = max(1, min((total + _THREADS - 1) // _THREADS, _MAX_BLOCKS))
    i32 = np.int32
    kernel((blocks,), (_THREADS,), (src, dst, np.int64(total), i32(N), i32(C), i32(H), i32(W),
                                    i32(kh), i32(kw), i32(stride), i32(padding), i32(H_out),
                                    i32(W_out)))


def _ctype(a) -> str:
    if a.dtype == np.float32:
        return "float"
    if a.dtype == np.float64:
        return "double"
    raise TypeError(f"the CuPy conv kernels take float32 or float64, got {a.dtype}")


class CupyConvKernels(ConvKernels):
    """The conv kernels on CuPy arrays (pooling: the reference); mixed into `CupyKernels`."""

    def im2col(self, x, kh, kw, stride=1, padding=0):
        *lead, N, C, H, W = x.shape
        H_out = conv_out_size(H, kh, stride, padding)
        W_out = conv_out_size(W, kw, stride, padding)
        x = cupy.ascontiguousarray(x)
        cols = cupy.empty((*lead, C * kh * kw, N * H_out * W_out), dtype=x.dtype)
        _launch(_kernels(_ctype(x))[0], x, cols, x.shape, kh, kw, stride, padding, H_out, W_out)
        return cols

    def col2im(self, cols, x_shape, kh, kw, stride=1, padding=0):
        H_out = conv_out_size(x_shape[-2], kh, stride, padding)
        W_out = conv_out_size(x_shape[-1], kw, stride, padding)
        cols = cupy.ascontiguousarray(cols)
        dx = cupy.empty(tuple(x_shape), dtype=cols.dtype)
        _launch(_kernels(_ctype(cols))[1], cols, dx, x_shape, kh, kw, stride, padding, H_out,
                W_out)
        return dx

    def conv2d(self, x, W, b, stride=1, padding=0):
        check_conv_shapes(x.shape, W.shape)
        C_out, C_in, kh, kw = W.shape[-4:]
        cols = self.im2col(x, kh, kw, stride, padding)
        z2 = cupy.matmul(W.reshape(*W.shape[:-3], C_in * kh * kw), cols)  # (.., C_out, N·L)
        N = x.shape[-4]
        H_out = conv_out_size(x.shape[-2], kh, stride, padding)
        W_out = conv_out_size(x.shape[-1], kw, stride, padding)
        lead = z2.shape[:-2]
        src = cupy.swapaxes(z2.reshape(*lead, C_out, N, H_out, W_out), -4, -3)
        z = cupy.empty((*lead, N, C_out, H_out, W_out), dtype=z2.dtype)
        if b is None:
            cupy.copyto(z, src)
        else:  # one elementwise launch: transpose and bias add
            cupy.add(src, b[..., None, :, None, None], out=z)
        return z, cols

    def conv2d_backward(self, x_shape, cols, W, dz, stride=1, padding=0, need_dx=True,
                        out=None):
        dW_buf, db_buf = (None, None) if out is None else out
        C_out, C_in, kh, kw = W.shape[-4:]
        K = C_in * kh * kw
        lead = dz.shape[:-4]
        d = cupy.ascontiguousarray(cupy.swapaxes(dz, -4, -3)).reshape(*lead, C_out, -1)
        colsT = cupy.swapaxes(cols, -1, -2)
        W2_shape = (*W.shape[:-3], K)
        if dW_buf is not None and dW_buf.flags.c_contiguous:
            cupy.matmul(d, colsT, out=dW_buf.reshape(W2_shape))
            dW = dW_buf
        else:
            dW = cupy.matmul(d, colsT).reshape(W.shape)
            if dW_buf is not None:
                dW_buf[...] = dW
                dW = dW_buf
        if db_buf is not None:
            cupy.sum(d, axis=-1, out=db_buf)
            db = db_buf
        else:
            db = cupy.sum(d, axis=-1)
        if not need_dx:
            return None, dW, db
        if len(x_shape) == 4 and W.ndim == 5:  # shared input: Σ_e W̄_eᵀ δ_e in one GEMM
            E = W.shape[0]
            dcols = cupy.matmul(W.reshape(E * C_out, K).T, d.reshape(E * C_out, -1))
        else:
            dcols = cupy.matmul(cupy.swapaxes(W.reshape(W2_shape), -1, -2), d)
        return self.col2im(dcols, x_shape, kh, kw, stride, padding), dW, db
