"""CuPy twin of the optimizer kernels: one in-place elementwise launch per update.

The model's parameter store keeps every parameter, gradient and state in one
flat buffer each, so an optimizer step is one launch for the whole model
(per-member hyperparameters of an ensemble broadcast as (E, 1) arrays).
`sum_of_squares` (gradient clipping's norm) is one reduction, no temporary.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import cupy
except ImportError:  # the CUDA sources stay readable, and compile-testable, without CuPy
    cupy = None

from ..reference.optim import SUBNORMAL_FLUSH_EVERY
from .specs import Elementwise, Reduction

# -- optimizer updates: one in-place elementwise kernel per parameter ----------------------
# Each variant is composed from the flags and built once; hyperparameters are kernel
# arguments, so a per-member learning rate (an (E, 1, ..., 1) array) broadcasts like a
# scalar and a schedule never triggers a recompilation. They are Python floats (passed by
# value) but for an ensemble's per-member values.
_HYPER = frozenset({"lr", "wd", "mu", "damp", "beta1", "omb1", "beta2", "omb2", "eps", "bc1",
                    "sqrt_bc2", "tiny", "alpha", "oma"})


def _sgd_spec(weight_decay: bool, momentum: bool, nesterov: bool, first: bool):
    ins = ["T g", "T lr"] + (["T wd"] if weight_decay else []) + (
        ["T mu", "T damp"] if momentum else [])
    outs = ["T p"] + (["T buf"] if momentum else [])
    body = ["T d = g + wd * p;" if weight_decay else "T d = g;"]
    if momentum:
        body.append("buf = d;" if first else "buf = mu * buf + damp * d;")
        body.append("d = d + mu * buf;" if nesterov else "d = buf;")
    body.append("p = p - lr * d;")
    name = f"nnk_sgd_wd{weight_decay:d}_m{momentum:d}_n{nesterov:d}_f{first:d}"
    return Elementwise(name, ", ".join(ins), ", ".join(outs), "\n".join(body),
                       scalars=_HYPER)


def _adam_spec(weight_decay: bool, decoupled: bool, flush: bool = False):
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
    return Elementwise(name, ", ".join(ins), "T p, T m, T v", "\n".join(body), scalars=_HYPER)


def _rmsprop_spec(weight_decay: bool, centered: bool, momentum: bool):
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
    return Elementwise(name, ", ".join(ins), ", ".join(outs), "\n".join(body),
                       scalars=_HYPER)


# Σ x² in one reduction launch (the reference: a g·g temporary, then a sum)
SUM_OF_SQUARES = Reduction("nnk_sum_of_squares", "T x", "T y", "x * x", "a + b", "y = a", "0")



@functools.cache
def _sgd_kernel(weight_decay: bool, momentum: bool, nesterov: bool, first: bool):
    return _sgd_spec(weight_decay, momentum, nesterov, first).build()


@functools.cache
def _adam_kernel(weight_decay: bool, decoupled: bool, flush: bool = False):
    return _adam_spec(weight_decay, decoupled, flush).build()


@functools.cache
def _rmsprop_kernel(weight_decay: bool, centered: bool, momentum: bool):
    return _rmsprop_spec(weight_decay, centered, momentum).build()


@functools.cache
def _sum_of_squares_kernel():
    return SUM_OF_SQUARES.build()


def cuda_sources() -> list:
    """Every kernel this module builds (nnkernel/kernels/cupy/specs.py's contract): each
    flag combination the update methods below can ask for."""
    bits = (False, True)
    sgd = [_sgd_spec(wd, False, False, False) for wd in bits]
    sgd += [_sgd_spec(wd, True, n, f) for wd in bits for n in bits for f in bits]
    adam = [_adam_spec(wd, dec and wd, fl) for wd in bits for dec in bits for fl in bits
            if wd or not dec]
    rms = [_rmsprop_spec(wd, c, m) for wd in bits for c in bits for m in bits]
    return sgd + adam + rms + [SUM_OF_SQUARES]


class CupyOptimKernels:
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

    def sum_of_squares(self, g, members=False):
        # gradient clipping's global norm: one launch over the flat gradient buffer
        if not members:
            return _sum_of_squares_kernel()(g.reshape(-1))
        return _sum_of_squares_kernel()(g.reshape(g.shape[0], -1), axis=1)
