"""CuPy twin of the reference kernels: fewer kernel launches, same numbers.

On a GPU each kernel launch costs ~10-25 µs of CPU time, so a small network is
bound by the number of launches, not by arithmetic. This twin therefore fuses
what the generic code spreads over several array operations:

- `affine_act`: the bias add and the activation (identity, relu, tanh, sigmoid)
  in one elementwise kernel, written in place into the matmul output. Dense uses
  it when the kernels list its activation in ``fused_activations``.
- `activation_backward`: dz = da ⊙ g′ for relu, tanh and sigmoid in one
  elementwise kernel each (the reference: 3 launches).
- `softmax_cross_entropy` (probabilities) and `softmax_cross_entropy_labels`
  (int64 labels, no one-hot): one raw kernel each, a warp or a block per row
  (`cupy_xent`); `softmax_cross_entropy_mean` folds the mean into it.
- `dropout`: a counter-based mask, compared, scaled and applied in one launch.
- `sum_of_squares` (gradient clipping's norm): one reduction kernel, no temporary.
- `sgd` / `adam` / `rmsprop`: one elementwise kernel, updating p and the
  optimizer state in place (the reference makes ~10 temporaries). The model's
  parameter store keeps every parameter, gradient and state in one flat buffer
  each, so an optimizer step is one launch for the whole model (per-member
  hyperparameters of an ensemble broadcast as (E, 1) arrays).

Matrix products need no override. `cupy.matmul` sends 2-D products to cuBLAS
GEMM and stacked (E, N, K) @ (E, K, M) products (ensembles) to cuBLAS
strided-batched GEMM; a shared (N, K) input against (E, K, M) weights goes
through cuBLAS batched GEMM with pointer arrays. Transposed operands are read
in place by the 2-D path; the batched path copies them to C order first (CuPy
13/14 ``matmul``), so an ensemble's backward pays a copy of xᵀ and Wᵀ per layer.

TF32 is opt-in through `enable_tf32` (`nnkernel.backend.cupy.set_tf32` says what it trades).

This module imports CuPy at its top; nnkernel imports it only when a model
uses the "cupy" backend, so NumPy-only installs never load CuPy.
"""

from __future__ import annotations

import functools

import cupy
import numpy as np

from .conv_cupy import CupyConvKernels
from .cupy_xent import softmax_xent
from .reference import SUBNORMAL_FLUSH_EVERY, Kernels

# -- fused bias + activation ---------------------------------------------------------
# The activation formulas match nnkernel.activations exactly (sigmoid in its tanh form).
_ACTIVATION_CODE = {
    "identity": "z = v;",
    "relu": "z = (v < (T)0) ? (T)0 : v;",  # NaN stays NaN, as xp.maximum(z, 0.0)
    "tanh": "z = tanh(v);",
    "sigmoid": "z = (T)0.5 * (tanh((T)0.5 * v) + (T)1);",
}


@functools.cache
def _bias_act_kernel(activation: str):
    """z ← g(z + b) in place; b broadcasts over the rows of z."""
    return cupy.ElementwiseKernel(
        "T b", "T z", "T v = z + b; " + _ACTIVATION_CODE[activation],
        f"nnk_bias_{activation}")


# -- activation backward, fused: dz = da ⊙ g′ from a = g(z) (nnkernel.nn.activations) ----------
# The same operations in the same order as the reference, compiled without FMA
# contraction (--fmad=false), so the numbers are the reference's on CuPy to the bit.
_BACKWARD_CODE = {
    "relu": "dz = da * (T)(a > (T)0);",  # da · [a > 0]: a NaN or Inf in da stays, as da · 0
    "tanh": "dz = da * ((T)1 - a * a);",
    "sigmoid": "dz = da * a * ((T)1 - a);",
}


@functools.cache
def _backward_kernel(activation: str):
    return cupy.ElementwiseKernel("T a, T da", "T dz", _BACKWARD_CODE[activation],
                                  f"nnk_{activation}_backward", options=("--fmad=false",))


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


@functools.cache
def _dropout_kernel():
    return cupy.ElementwiseKernel("T x, uint64 key, float64 p, T scale", "T y, T mask",
                                  _DROPOUT_CODE, "nnk_dropout")


# -- optimizer updates: one in-place elementwise kernel per parameter ----------------------
# Each variant is composed from the flags and built once; hyperparameters are kernel
# arguments, so a per-member learning rate (an (E, 1, ..., 1) array) broadcasts like a
# scalar and a schedule never triggers a recompilation.
@functools.cache
def _sgd_kernel(weight_decay: bool, momentum: bool, nesterov: bool, first: bool):
    ins = ["T g", "T lr"] + (["T wd"] if weight_decay else []) + (
        ["T mu", "T damp"] if momentum else [])
    outs = ["T p"] + (["T buf"] if momentum else [])
    body = ["T d = g + wd * p;" if weight_decay else "T d = g;"]
    if momentum:
        body.append("buf = d;" if first else "buf = mu * buf + damp * d;")
        body.append("d = d + mu * buf;" if nesterov else "d = buf;")
    body.append("p = p - lr * d;")
    name = f"nnk_sgd_wd{weight_decay:d}_m{momentum:d}_n{nesterov:d}_f{first:d}"
    return cupy.ElementwiseKernel(", ".join(ins), ", ".join(outs), "\n".join(body), name)


@functools.cache
def _adam_kernel(weight_decay: bool, decoupled: bool, flush: bool = False):
    ins = ["T g", "T lr", "T beta1", "T omb1", "T beta2", "T omb2", "T eps", "T bc1",
           "T sqrt_bc2"] + (["T wd"] if weight_decay else []) + (["T tiny"] if flush else [])
    body = []
    if weight_decay and decoupled:  # AdamW: decay the weights, not the gradient
        body += ["p = p * ((T)1 - lr * wd);", "T d = g;"]
    elif weight_decay:
        body += ["T d = g + wd * p;"]
    else:
        body += ["T d = g;"]
    body += ["m = beta1 * m + omb1 * d;"]
    if flush:  # the opt-in flush of subnormal entries, as the reference computes it
        body += ["if (fabs(m) < tiny) m = (T)0;"]
    body += ["v = beta2 * v + omb2 * (d * d);",
             "p = p - (lr / bc1) * (m / (sqrt(v) / sqrt_bc2 + eps));"]
    name = f"nnk_adam_wd{weight_decay:d}_dec{decoupled:d}_f{flush:d}"
    return cupy.ElementwiseKernel(", ".join(ins), "T p, T m, T v", "\n".join(body), name)


@functools.cache
def _rmsprop_kernel(weight_decay: bool, centered: bool, momentum: bool):
    ins = ["T g", "T lr", "T alpha", "T oma", "T eps"] + (["T wd"] if weight_decay else []) \
        + (["T mu"] if momentum else [])
    outs = ["T p", "T v"] + (["T gavg"] if centered else []) + (["T buf"] if momentum else [])
    body = ["T d = g + wd * p;" if weight_decay else "T d = g;",
            "v = alpha * v + oma * (d * d);"]
    if centered:
        body += ["gavg = alpha * gavg + oma * d;", "T avg = sqrt(v - gavg * gavg) + eps;"]
    else:
        body += ["T avg = sqrt(v) + eps;"]
    if momentum:
        body += ["buf = mu * buf + d / avg;", "p = p - lr * buf;"]
    else:
        body += ["p = p - lr * (d / avg);"]
    name = f"nnk_rmsprop_wd{weight_decay:d}_c{centered:d}_m{momentum:d}"
    return cupy.ElementwiseKernel(", ".join(ins), ", ".join(outs), "\n".join(body), name)


@functools.cache
def _sum_of_squares_kernel():
    """Σ x² in one reduction launch (the reference: a g·g temporary, then a sum)."""
    return cupy.ReductionKernel("T x", "T y", "x * x", "a + b", "y = a", "0",
                                "nnk_sum_of_squares")


class CupyKernels(CupyConvKernels, Kernels):
    in_place = True  # the updates write into p and the state and return the same arrays
    # Activations `affine_act` fuses with the bias add (all read only a = g(z) backward).
    fused_activations = frozenset(_ACTIVATION_CODE)

    # -- Dense --------------------------------------------------------------------
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

    def sum_of_squares(self, g, members=False):
        # gradient clipping's global norm: one launch over the flat gradient buffer
        if not members:
            return _sum_of_squares_kernel()(g.reshape(-1))
        return _sum_of_squares_kernel()(g.reshape(g.shape[0], -1), axis=1)

    # -- softmax and cross-entropy ------------------------------------------------
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

    # -- optimizer updates (in place; the same arrays come back) ---------------------
    def sgd(self, p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        wd = weight_decay is not None
        args = [g, lr] + ([weight_decay] if wd else [])
        if not momentum:
            _sgd_kernel(wd, False, False, False)(*args, p)
            return p, buf
        _sgd_kernel(wd, True, bool(nesterov), bool(first))(
            *args, momentum, 1.0 - dampening, p, buf)
        return p, buf

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step,
             flush_subnormals=False):
        wd = weight_decay is not None
        flush = bool(flush_subnormals) and step % SUBNORMAL_FLUSH_EVERY == 0
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        args = [g, lr, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, bc1, bc2**0.5]
        args += [weight_decay] if wd else []
        args += [float(np.finfo(p.dtype).smallest_normal)] if flush else []
        _adam_kernel(wd, bool(decoupled) and wd, flush)(*args, p, m, v)
        return p, m, v

    def rmsprop(self, p, g, v, gavg, buf, lr, alpha, eps, weight_decay, momentum, centered):
        wd = weight_decay is not None
        mom = bool(momentum)
        args = [g, lr, alpha, 1.0 - alpha, eps] + ([weight_decay] if wd else []) \
            + ([momentum] if mom else [])
        outs = [p, v] + ([gavg] if centered else []) + ([buf] if mom else [])
        _rmsprop_kernel(wd, bool(centered), mom)(*args, *outs)
        return p, v, gavg, buf


# -- TF32 (the switch lives with the backend; these names stay for scripts that use them) --
def enable_tf32(enabled: bool = True) -> bool:
    """Let float32 2-D matrix products use TF32; see `nnkernel.backend.cupy.set_tf32`."""
    from ..backend.cupy import set_tf32

    return set_tf32(enabled)


def tf32_enabled() -> bool:
    from ..backend.cupy import tf32_enabled as enabled

    return enabled()
