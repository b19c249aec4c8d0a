"""CuPy twin of the recurrent steps: a step's gate work, forward or backward, in one launch.

The reference spends ~15-30 launches on a step's element-wise work (each gate's
σ or tanh, the cell update, the mask); here each of `rnn_step`, `lstm_step`,
`gru_step` and their backwards is one ElementwiseKernel over the (B, H) state,
each thread reading its column of every gate block (``raw`` arrays, indexed
row·G·H + gate·H + col; CuPy's raw indexing follows strides, so ``xw`` can be a
step's strided view of the (B, T, G·H) projection). ``keep`` (B, 1) broadcasts
over the row; without lengths it is the scalar True, and ``dy`` the scalar 0.
The formulas and their order are the reference's (kernels/reference/recurrent.py),
compiled without FMA contraction (--fmad=false) as dense.py's kernels are.

The sources are `_KERNELS` (name -> in params, out params, body): readable and
compile-testable without CuPy. tests/test_recurrent_cuda_source.py runs them as host
C++ against the reference, and on a GPU, where one is lent, launches them.
UNTESTED ON A GPU when written (no GPU in that session).
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import cupy
except ImportError:  # the CUDA sources stay readable, and compile-testable, without CuPy
    cupy = None

from .specs import Elementwise

_KERNELS = {
    # -- Elman RNN ------------------------------------------------------------------------------
    "rnn_tanh_step": (
        "T xw, T hh, T h_prev, bool keep", "T h",
        "const T a = xw + hh;\n"
        "h = keep ? tanh(a) : h_prev;"),
    "rnn_relu_step": (
        "T xw, T hh, T h_prev, bool keep", "T h",
        "const T a = xw + hh;\n"
        "h = keep ? (a < (T)0 ? (T)0 : a) : h_prev;"),  # NaN stays NaN, as xp.maximum(a, 0)
    "rnn_tanh_backward": (
        "T dh, T dy, T h, bool keep", "T dA, T skip",
        "const T d_h = dh + dy;\n"
        "dA = keep ? d_h * (((T)1 - h) * ((T)1 + h)) : (T)0;\n"
        "skip = keep ? (T)0 : d_h;"),
    "rnn_relu_backward": (
        "T dh, T dy, T h, bool keep", "T dA, T skip",
        "const T d_h = dh + dy;\n"
        "dA = keep ? d_h * (T)(h > (T)0) : (T)0;\n"
        "skip = keep ? (T)0 : d_h;"),
    # -- LSTM: gate blocks i, f, g, o ------------------------------------------------------------
    "lstm_step": (
        "raw T xw, raw T hh, T h_prev, T c_prev, bool keep, int64 H",
        "T h, T c, raw T gates, T tanh_c",
        "const ptrdiff_t row = i / H, r = row * 4 * H + (i - row * H);\n"
        "const T g_i = (T)0.5 * (tanh((T)0.5 * (xw[r] + hh[r])) + (T)1);\n"
        "const T g_f = (T)0.5 * (tanh((T)0.5 * (xw[r + H] + hh[r + H])) + (T)1);\n"
        "const T g_g = tanh(xw[r + 2 * H] + hh[r + 2 * H]);\n"
        "const T g_o = (T)0.5 * (tanh((T)0.5 * (xw[r + 3 * H] + hh[r + 3 * H])) + (T)1);\n"
        "gates[r] = g_i; gates[r + H] = g_f; gates[r + 2 * H] = g_g; gates[r + 3 * H] = g_o;\n"
        "const T c_new = g_f * c_prev + g_i * g_g;\n"
        "const T t = tanh(c_new);\n"
        "tanh_c = t;\n"
        "h = keep ? g_o * t : h_prev;\n"
        "c = keep ? c_new : c_prev;"),
    "lstm_backward": (
        "T dh, T dy, T dc, raw T gates, T tanh_c, T c_prev, bool keep, int64 H",
        "raw T dA, T dc_prev, T skip",
        "const ptrdiff_t row = i / H, r = row * 4 * H + (i - row * H);\n"
        "const T g_i = gates[r], g_f = gates[r + H], g_g = gates[r + 2 * H];\n"
        "const T g_o = gates[r + 3 * H];\n"
        "const T d_h = dh + dy;\n"
        "const T dc_now = dc + d_h * g_o * (((T)1 - tanh_c) * ((T)1 + tanh_c));\n"
        "dA[r] = keep ? dc_now * g_g * (g_i * ((T)1 - g_i)) : (T)0;\n"
        "dA[r + H] = keep ? dc_now * c_prev * (g_f * ((T)1 - g_f)) : (T)0;\n"
        "dA[r + 2 * H] = keep ? dc_now * g_i * (((T)1 + g_g) * ((T)1 - g_g)) : (T)0;\n"
        "dA[r + 3 * H] = keep ? d_h * tanh_c * (g_o * ((T)1 - g_o)) : (T)0;\n"
        "dc_prev = keep ? dc_now * g_f : dc;\n"
        "skip = keep ? (T)0 : d_h;"),
    # -- GRU: gate blocks r, z, n -----------------------------------------------------------------
    "gru_step": (
        "raw T xw, raw T hh, T h_prev, T b_hn, bool keep, int64 H",
        "T h, raw T gates, T hn",
        "const ptrdiff_t row = i / H, r = row * 3 * H + (i - row * H);\n"
        "const T g_r = (T)0.5 * (tanh((T)0.5 * (xw[r] + hh[r])) + (T)1);\n"
        "const T g_z = (T)0.5 * (tanh((T)0.5 * (xw[r + H] + hh[r + H])) + (T)1);\n"
        "const T h_n = hh[r + 2 * H] + b_hn;\n"
        "const T g_n = tanh(xw[r + 2 * H] + g_r * h_n);\n"
        "gates[r] = g_r; gates[r + H] = g_z; gates[r + 2 * H] = g_n;\n"
        "hn = h_n;\n"
        "h = keep ? ((T)1 - g_z) * g_n + g_z * h_prev : h_prev;"),
    "gru_backward": (
        "T dh, T dy, raw T gates, T hn, T h_prev, bool keep, int64 H",
        "raw T dxw, raw T dhh, T skip",
        "const ptrdiff_t row = i / H, r = row * 3 * H + (i - row * H);\n"
        "const T g_r = gates[r], g_z = gates[r + H], g_n = gates[r + 2 * H];\n"
        "const T d_h = dh + dy;\n"
        "const T da_n = d_h * ((T)1 - g_z) * (((T)1 - g_n) * ((T)1 + g_n));\n"
        "const T da_z = d_h * (h_prev - g_n) * (g_z * ((T)1 - g_z));\n"
        "const T da_r = da_n * hn * (g_r * ((T)1 - g_r));\n"
        "dxw[r] = keep ? da_r : (T)0; dxw[r + H] = keep ? da_z : (T)0;\n"
        "dxw[r + 2 * H] = keep ? da_n : (T)0;\n"
        "dhh[r] = keep ? da_r : (T)0; dhh[r + H] = keep ? da_z : (T)0;\n"
        "dhh[r + 2 * H] = keep ? da_n * g_r : (T)0;\n"
        "skip = keep ? d_h * g_z : d_h;"),
}


def _spec(name: str) -> Elementwise:
    ins, outs, body = _KERNELS[name]
    scalars = frozenset(p for p in ("H", "keep") if f" {p}" in ins)  # H always; keep when all
    return Elementwise(f"nnk_{name}", ins, outs, body, options=("--fmad=false",),
                       dtypes=("float32", "float64"), scalars=scalars)


@functools.cache
def _kernel(name: str):
    return _spec(name).build()


def cuda_sources() -> list:
    """Every kernel this module builds (nnkernel/kernels/cupy/specs.py's contract)."""
    return [_spec(name) for name in _KERNELS]


def _keep(keep):
    return True if keep is None else keep


def _empty(like, shape):
    return cupy.empty(shape, dtype=like.dtype)


class CupyRecurrentKernels:
    def rnn_step(self, xw, hh, h_prev, keep=None, activation="tanh"):
        h = _kernel(f"rnn_{activation}_step")(xw, hh, h_prev, _keep(keep))
        return h, h

    def rnn_step_backward(self, dh, dy, saved, keep=None, activation="tanh"):
        dA, skip = _kernel(f"rnn_{activation}_backward")(dh, 0.0 if dy is None else dy, saved,
                                                          _keep(keep))
        return dA, (None if keep is None else skip)

    def lstm_step(self, xw, hh, h_prev, c_prev, keep=None):
        shape, H = h_prev.shape, h_prev.shape[-1]
        h, c, gates, tanh_c = (_empty(hh, shape), _empty(hh, shape), _empty(hh, hh.shape),
                               _empty(hh, shape))
        _kernel("lstm_step")(xw, hh, h_prev, c_prev, _keep(keep), np.int64(H), h, c, gates,
                             tanh_c)
        return h, c, (gates, tanh_c)

    def lstm_step_backward(self, dh, dy, dc, saved, c_prev, keep=None):
        gates, tanh_c = saved
        shape, H = tanh_c.shape, tanh_c.shape[-1]
        dA, dc_prev, skip = _empty(gates, gates.shape), _empty(gates, shape), _empty(gates, shape)
        _kernel("lstm_backward")(dh, 0.0 if dy is None else dy, dc, gates, tanh_c, c_prev,
                                 _keep(keep), np.int64(H), dA, dc_prev, skip)
        return dA, dc_prev, (None if keep is None else skip)

    def gru_step(self, xw, hh, h_prev, b_hn, keep=None):
        shape, H = h_prev.shape, h_prev.shape[-1]
        h, gates, hn = _empty(hh, shape), _empty(hh, hh.shape), _empty(hh, shape)
        _kernel("gru_step")(xw, hh, h_prev, b_hn, _keep(keep), np.int64(H), h, gates, hn)
        return h, (gates, hn)

    def gru_step_backward(self, dh, dy, saved, h_prev, keep=None):
        gates, hn = saved
        shape, H = hn.shape, hn.shape[-1]
        dxw, dhh, skip = _empty(gates, gates.shape), _empty(gates, gates.shape), _empty(gates,
                                                                                        shape)
        _kernel("gru_backward")(dh, 0.0 if dy is None else dy, gates, hn, h_prev, _keep(keep),
                                np.int64(H), dxw, dhh, skip)
        return dxw, dhh, skip
