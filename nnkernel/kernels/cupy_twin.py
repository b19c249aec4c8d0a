"""CuPy twin of the reference kernels: fewer kernel launches, same numbers.

On a GPU each kernel launch costs ~10-25 µs of CPU time, so a small network is
bound by the number of launches, not by arithmetic. This twin therefore fuses
what the generic code spreads over several array operations:

- `affine_act`: the bias add and the activation (identity, relu, tanh, sigmoid)
  in one elementwise kernel, written in place into the matmul output. Dense uses
  it when the kernels list its activation in ``fused_activations``.
- `softmax_cross_entropy`: one raw kernel, one warp per row: max, Σ exp, the
  loss and δ = (softmax − t) / count in a single launch (the reference: ~12).
- `sgd` / `adam` / `rmsprop`: one elementwise kernel, updating p and the
  optimizer state in place (the reference makes ~10 temporaries). The model's
  parameter store keeps every parameter, gradient and state in one flat buffer
  each, so an optimizer step is one launch for the whole model (per-member
  hyperparameters of an ensemble broadcast as (E, 1) arrays).

Matrix products need no override. `cupy.matmul` sends 2-D products to cuBLAS
GEMM and stacked (E, N, K) @ (E, K, M) products (ensembles) to cuBLAS
strided-batched GEMM; a shared (N, K) input against (E, K, M) weights goes
through cuBLAS batched GEMM with pointer arrays. Transposed operands are read
in place by the 2-D path.

TF32 is opt-in through `enable_tf32` (see there for the precision it trades).

This module imports CuPy at its top; nnkernel imports it only when a model
uses the "cupy" backend, so NumPy-only installs never load CuPy.
"""

from __future__ import annotations

import functools
import os
import warnings

import cupy
import numpy as np

from .conv_cupy import CupyConvKernels
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


# -- softmax + cross-entropy: one warp per row ----------------------------------------
_SOFTMAX_XENT_SOURCE = r"""
typedef %(ctype)s T;

__device__ __forceinline__ T warp_sum(T x) {
    for (int offset = 16; offset > 0; offset >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ T warp_max(T x) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        T other = __shfl_xor_sync(0xffffffffu, x, offset);
        x = other > x ? other : x;
    }
    return x;
}

// Row r of z and t (C contiguous values each): losses[r] = -sum t log softmax(z),
// dz = (softmax(z) - t) * inv_count. 32 lanes of a warp share a row, so the
// reductions are warp shuffles and never touch shared memory.
extern "C" __global__ void nnk_softmax_xent(const T* z, const T* t, T* losses, T* dz,
                                            long long rows, long long C, T inv_count) {
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // the whole warp leaves together: row is per warp
    const T* zr = z + row * C;
    const T* tr = t + row * C;
    T* dr = dz + row * C;

    T m = zr[0];
    for (long long j = lane; j < C; j += 32) m = zr[j] > m ? zr[j] : m;
    m = warp_max(m);

    T sum_exp = 0, sum_t = 0, sum_t_shifted = 0;
    for (long long j = lane; j < C; j += 32) {
        T shifted = zr[j] - m;
        sum_exp += exp(shifted);
        sum_t += tr[j];
        sum_t_shifted += tr[j] * shifted;
    }
    sum_exp = warp_sum(sum_exp);
    sum_t = warp_sum(sum_t);
    sum_t_shifted = warp_sum(sum_t_shifted);

    // -sum t (shifted - log s) = log s * sum t - sum t shifted, for any (soft) target
    if (lane == 0) losses[row] = log(sum_exp) * sum_t - sum_t_shifted;
    const T inv_sum = (T)1 / sum_exp;
    for (long long j = lane; j < C; j += 32)
        dr[j] = (exp(zr[j] - m) * inv_sum - tr[j]) * inv_count;
}
"""
_ROWS_PER_BLOCK = 8  # 8 warps = 256 threads per block


@functools.cache
def _softmax_xent_kernel(ctype: str):
    return cupy.RawKernel(_SOFTMAX_XENT_SOURCE % {"ctype": ctype}, "nnk_softmax_xent")


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
        # dW and db go straight into the model's gradient buffer (its views), no copy
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

    # -- softmax and cross-entropy ------------------------------------------------
    def softmax_cross_entropy(self, z, target, count):
        if target.dtype != z.dtype:
            target = target.astype(z.dtype)
        if target.shape != z.shape:  # labels shared by the members of an ensemble
            target = cupy.broadcast_to(target, z.shape)
        z = cupy.ascontiguousarray(z)  # a raw kernel indexes memory directly
        target = cupy.ascontiguousarray(target)
        C = z.shape[-1]
        rows = z.size // C if C else 0
        losses = cupy.empty(z.shape[:-1], dtype=z.dtype)
        dz = cupy.empty_like(z)
        if rows == 0:
            return losses, dz
        threads = 32 * _ROWS_PER_BLOCK
        blocks = (rows + _ROWS_PER_BLOCK - 1) // _ROWS_PER_BLOCK
        ctype = "float" if z.dtype == np.float32 else "double"
        _softmax_xent_kernel(ctype)(
            (blocks,), (threads,),
            (z, target, losses, dz, np.int64(rows), np.int64(C), z.dtype.type(1.0 / count)))
        return losses, dz

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


# -- TF32 ---------------------------------------------------------------------------
def enable_tf32(enabled: bool = True) -> bool:
    """Let float32 2-D matrix products use TF32 tensor cores (GPUs of compute capability ≥ 8.0).

    TF32 rounds each input of the multiply to a 10-bit mantissa (as float16's
    precision, with float32's 8-bit exponent range) and accumulates in float32:
    relative errors grow from ~1e-7 to ~1e-3 per product, usually harmless for
    training and 2-8x faster for large GEMMs. CuPy's switch is its cuBLAS compute
    type; the CUPY_TF32=1 environment variable sets the same switch, but is read
    only once, at the first float32 matmul of the process, so this function sets
    the compute type directly. It applies to 2-D products (every Dense layer of a
    single model); CuPy's batched products (ensembles) stay full float32.

    Returns whether TF32 is now on (False on older GPUs, where CuPy warns and keeps
    full precision).
    """
    try:
        from cupy._core import _routines_linalg as linalg
    except ImportError:  # a CuPy without the private switch: only the variable remains
        os.environ["CUPY_TF32"] = "1" if enabled else "0"
        warnings.warn("this CuPy has no cupy._core._routines_linalg.set_compute_type; set "
                      "CUPY_TF32, which takes effect only before the first float32 matmul",
                      RuntimeWarning, stacklevel=2)
        return enabled
    mode = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
    linalg.set_compute_type(np.float32, mode)
    return tf32_enabled()


def tf32_enabled() -> bool:
    """Whether float32 2-D products currently run in TF32."""
    from cupy._core import _routines_linalg as linalg

    return linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32
