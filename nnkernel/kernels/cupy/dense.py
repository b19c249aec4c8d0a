"""CuPy twin of the dense kernels: bias + activation, g′ and dropout fused into one launch each.

- `affine_act`: the bias add and the activation (identity, relu, tanh, sigmoid)
  in one elementwise kernel, written in place into the matmul output. Dense uses
  it when the kernels list its activation in ``fused_activations``.
- `activation_backward`: dz = da ⊙ g′ for relu, tanh and sigmoid in one
  elementwise kernel each (the reference: 3 launches).
- `dropout`: a counter-based mask, compared, scaled and applied in one launch.

Matrix products need no override. `cupy.matmul` sends 2-D products to cuBLAS
GEMM and stacked (E, N, K) @ (E, K, M) products (ensembles) to cuBLAS
strided-batched GEMM; a shared (N, K) input against (E, K, M) weights goes
through cuBLAS batched GEMM with pointer arrays. Transposed operands are read
in place by the 2-D path; the batched path copies them to C order first (CuPy
13/14 ``matmul``), so an ensemble's backward pays a copy of xᵀ and Wᵀ per layer.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import cupy
except ImportError:  # the CUDA sources stay readable, and compile-testable, without CuPy
    cupy = None

from .specs import Elementwise

# -- fused bias + activation ---------------------------------------------------------
# The activation formulas match nnkernel.activations exactly (sigmoid in its tanh form).
_ACTIVATION_CODE = {
    "identity": "z = v;",
    "relu": "z = (v < (T)0) ? (T)0 : v;",  # NaN stays NaN, as xp.maximum(z, 0.0)
    "tanh": "z = tanh(v);",
    "sigmoid": "z = (T)0.5 * (tanh((T)0.5 * v) + (T)1);",
}


def _bias_act_spec(activation: str) -> Elementwise:
    """z ← g(z + b) in place; b broadcasts over the rows of z."""
    return Elementwise(f"nnk_bias_{activation}", "T b", "T z",
                       "T v = z + b; " + _ACTIVATION_CODE[activation], ndim=2)


@functools.cache
def _bias_act_kernel(activation: str):
    return _bias_act_spec(activation).build()


# -- activation backward, fused: dz = da ⊙ g′ from a = g(z) (nnkernel.nn.activations) ----------
# The same operations in the same order as the reference, compiled without FMA
# contraction (--fmad=false), so the numbers are the reference's on CuPy to the bit.
_BACKWARD_CODE = {
    "relu": "dz = da * (T)(a > (T)0);",  # da · [a > 0]: a NaN or Inf in da stays, as da · 0
    "tanh": "dz = da * ((T)1 - a * a);",
    "sigmoid": "dz = da * a * ((T)1 - a);",
}


def _backward_spec(activation: str) -> Elementwise:
    return Elementwise(f"nnk_{activation}_backward", "T a, T da", "T dz",
                       _BACKWARD_CODE[activation], options=("--fmad=false",))


@functools.cache
def _backward_kernel(activation: str):
    return _backward_spec(activation).build()


# -- dropout: a counter-based mask, compared and scaled in the same launch ---------------------
# u = SplitMix64(key + i·γ) / 2^64 for element i: a stateless hash of (key, i), so no
# generator state lives on the GPU and a mask costs one launch (the cuRAND way: generate,
# a [0, 1) fix-up, compare, cast, scale: five). `key` comes from the model's random source,
# fresh for every draw and a function of (seed, epoch, step, draw): masks are reproducible.
_DROPOUT_CODE = """
unsigned long long h = key + (unsigned long long)i * 0x9E3779B97F4A7C15ull;
h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
h ^= h >> 31;
const double u = (double)(h >> 11) * (1.0 / 9007199254740992.0);  // 53 bits in [0, 1)
mask = u >= p ? scale : (T)0;
y = x * mask;
"""


DROPOUT = Elementwise("nnk_dropout", "T x, uint64 key, float64 p, T scale", "T y, T mask",
                      _DROPOUT_CODE, dtypes=("float32", "float64"),
                      scalars=frozenset({"key", "p", "scale"}))


@functools.cache
def _dropout_kernel():
    return DROPOUT.build()


def cuda_sources() -> list:
    """Every kernel this module builds (nnkernel/kernels/cupy/specs.py's contract)."""
    return ([_bias_act_spec(a) for a in _ACTIVATION_CODE]
            + [_backward_spec(a) for a in _BACKWARD_CODE] + [DROPOUT])


class CupyDenseKernels:
    # Activations `affine_act` fuses with the bias add (all read only a = g(z) backward).
    fused_activations = frozenset(_ACTIVATION_CODE)

    def affine(self, x, W, b):
        return self.affine_act(x, W, b, "identity")

    def affine_act(self, x, W, b, activation: str):
        """a = g(xW + b): cuBLAS GEMM, then bias and activation in one kernel, in place."""
        z = cupy.matmul(x, W)
        if W.ndim == 3:  # ensemble: b (E, n_out) broadcasts over each member's rows
            b = b[:, None, :]
        return _bias_act_kernel(activation)(b, z)

    def affine_backward(self, x, W, dz, need_dx=True, out=None):
        # dW and db go into the model's gradient buffer (its views): for one model cuBLAS
        # writes there directly; an ensemble's views are strided (member-major (E, P)
        # buffer), and CuPy's batched matmul then fills them through a temporary
        dW_out, db_out = (None, None) if out is None else out
        if W.ndim == 3:
            dW = cupy.matmul(x.swapaxes(-1, -2), dz, out=dW_out)
            db = dz.sum(axis=-2, out=db_out)
        else:
            x2 = x.reshape(-1, x.shape[-1])
            dz2 = dz.reshape(-1, dz.shape[-1])
            dW = cupy.matmul(x2.T, dz2, out=dW_out)  # cuBLAS reads the transpose in place
            db = dz2.sum(axis=0, out=db_out)
        dx = cupy.matmul(dz, W.swapaxes(-1, -2)) if need_dx else None
        return dx, dW, db

    def activation_backward(self, g, z, a, da):
        if g.name not in _BACKWARD_CODE or a is None or a.dtype != da.dtype:
            return super().activation_backward(g, z, a, da)
        return _backward_kernel(g.name)(a, da)

    def dropout(self, x, p, random):
        counter_key = getattr(random, "counter_key", None)  # CupyRandom's
        if counter_key is None or x.dtype not in (np.float32, np.float64):
            return super().dropout(x, p, random)
        y = cupy.empty(x.shape, dtype=x.dtype)  # x may be a broadcast (an ensemble's input)
        mask = cupy.empty(x.shape, dtype=x.dtype)
        _dropout_kernel()(x, np.uint64(counter_key()), float(p), 1.0 / (1.0 - p), y, mask)
        return y, mask
