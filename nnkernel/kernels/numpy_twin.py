"""NumPy twin of the reference kernels: same numbers, fewer temporaries.

NumPy lets us write into existing buffers (``out=``, in-place operators), which
the standard does not. The optimizer updates are where this pays: Adam makes
about ten passes over every parameter per step, and each avoided temporary is
one less allocation and one less pass over memory. Parameters and optimizer
state are updated in place and the same arrays are returned, so callers that
rebind (the generic contract) see no difference.
"""

from __future__ import annotations

import numpy as np

from .conv_numpy import NumpyConvKernels
from .reference import SUBNORMAL_FLUSH_EVERY, Kernels

_EXPONENT_BITS = {4: (np.int32, 0x7F800000), 8: (np.int64, 0x7FF0000000000000)}
_UNSIGNED = {np.dtype(np.int8): np.uint8, np.dtype(np.int16): np.uint16,
             np.dtype(np.int32): np.uint32, np.dtype(np.int64): np.uint64}


def flush_subnormals(a) -> None:
    """Set the subnormal entries of a float array to +0, in place, with integer operations.

    Where a gradient stays 0 (input pixels that are always 0, dead units) Adam's first
    moment decays through the subnormal range, where x86 arithmetic takes a slow microcode
    path. Floating-point operations on the subnormals would themselves be slow: an entry
    whose exponent bits are all 0 is 0 or subnormal, and multiplying its bit pattern by 0
    leaves +0 while every other entry is multiplied by 1.
    """
    int_type, mask = _EXPONENT_BITS[a.itemsize]
    bits = a.view(int_type)
    bits *= np.bitwise_and(bits, mask) != 0


class NumpyKernels(NumpyConvKernels, Kernels):
    in_place = True

    def __init__(self, xp):
        super().__init__(xp)
        self._starts: dict = {}

    def affine(self, x, W, b):
        z = np.matmul(x, W)
        z += b[..., None, :] if W.ndim == 3 else b  # in place: no second (N, n_out) array
        return z

    def affine_backward(self, x, W, dz, need_dx=True, out=None):
        dW_out, db_out = (None, None) if out is None else out  # the model's gradient buffer
        if W.ndim == 3:
            dW = np.matmul(np.swapaxes(x, -1, -2), dz, out=dW_out)
            # Σ over the rows of each member as 1ᵀδ: NumPy's sum along the middle axis of
            # (E, N, n_out) strides through memory, several times slower than this product.
            db = np.matmul(np.ones(dz.shape[-2], dtype=dz.dtype), dz, out=db_out)
        else:
            x2, dz2 = (x, dz) if x.ndim == 2 else (x.reshape(-1, x.shape[-1]),
                                                   dz.reshape(-1, dz.shape[-1]))
            dW = np.matmul(x2.T, dz2, out=dW_out)  # BLAS reads the transpose in place
            db = np.add.reduce(dz2, axis=0, out=db_out)
        if not need_dx:
            return None, dW, db
        return (dz @ W.T if W.ndim == 2 else np.matmul(dz, np.swapaxes(W, -1, -2))), dW, db

    def total(self, x):
        return np.add.reduce(x, axis=None)  # what np.sum calls, without its two wrappers

    def sum_of_squares(self, g, members=False):
        if not members:
            flat = g.reshape(-1)
            return np.dot(flat, flat)
        rows = g.reshape(g.shape[0], -1)
        return np.einsum("ij,ij->i", rows, rows)

    def all_finite(self, x) -> bool:
        # Σ x is finite exactly when no entry is NaN or ±Inf, unless the finite entries
        # overflow when added; only then is the entry-wise test needed.
        total = np.add.reduce(x, axis=None)
        return bool(np.isfinite(total)) or bool(np.isfinite(x).all())

    def labels_outside(self, labels, n_classes):
        # One reduction: viewed as unsigned, a negative label is larger than any class.
        unsigned = _UNSIGNED.get(labels.dtype)
        top = np.maximum.reduce((labels.view(unsigned) if unsigned else labels), axis=None)
        if int(top) < n_classes:
            return None
        return int(labels.min()), int(labels.max())

    def flatten(self, arrays):
        return np.concatenate([a.reshape(-1) for a in arrays])  # methods: no wrapper overhead

    def softmax_cross_entropy(self, z, target, count):
        shifted = z - _row_max(z)
        e = np.exp(shifted)
        s = _row_sum(e)
        # −Σ t (z' − log s) = log s · Σt − Σ t z': soft targets need not sum to 1
        losses = np.log(s) * _row_sum(target) - _row_sum(target * shifted)
        e /= s[..., None]  # softmax in place
        e -= target
        e *= 1.0 / count
        return losses, e

    def softmax_cross_entropy_labels(self, z, labels, count):
        # −Σ t log softmax(z) with a one-hot t is log Σe^z' − z'[label]: pick one entry per
        # row instead of building and multiplying an (N, C) target (C times less work).
        lead = z.shape[:-1]
        rows = (labels if labels.shape == lead else np.broadcast_to(labels, lead)).reshape(-1)
        at = self._row_starts(rows.shape[0], z.shape[-1]) + rows  # flat index of each label
        shifted = z - _row_max(z)
        flat = shifted.reshape(-1)  # a view: shifted is a fresh contiguous array
        picked = flat[at]
        e = np.exp(shifted, out=shifted)
        s = _row_sum(e)
        losses = np.log(s)
        losses -= picked.reshape(lead)
        e /= s[..., None]  # softmax in place
        flat[at] -= 1.0
        e *= 1.0 / count
        return losses, e

    def _row_starts(self, rows: int, C: int):
        """0, C, 2C, ...: where each row starts in a flat (rows, C) array (kept per shape)."""
        key = (rows, C)
        starts = self._starts.get(key)
        if starts is None:
            if len(self._starts) > 32:
                self._starts.clear()
            starts = self._starts[key] = np.arange(0, rows * C, C)
        return starts

    def sgd(self, p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        if weight_decay is not None:
            g = g + weight_decay * p
        if momentum:  # buf is the optimizer's buffer (zeros before the first step)
            if first:
                np.copyto(buf, g)
            else:
                buf *= momentum
                buf += (1.0 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g
        return p, buf

    # Adam passes over p, g, m, v and a temporary a dozen times. On a flat buffer larger than
    # the L2 cache every pass streams from L3 or memory; a slice of this many bytes per array
    # keeps all five in L2 (bench/RESULTS.md has the measurement).
    adam_chunk_bytes = 1 << 18

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step,
             flush_subnormals=False):
        chunk = self.adam_chunk_bytes // p.itemsize
        if p.ndim == 1 and p.shape[0] > 2 * chunk and isinstance(lr, float) and not isinstance(
                weight_decay, np.ndarray):
            # element-wise arithmetic: slice by slice gives the very same numbers
            for i in range(0, p.shape[0], chunk):
                s = slice(i, i + chunk)
                self._adam(p[s], g[s], m[s], v[s], lr, beta1, beta2, eps, weight_decay,
                           decoupled, step, flush_subnormals)
            return p, m, v
        return self._adam(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step,
                          flush_subnormals)

    def _adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step,
              flush=False):
        if weight_decay is not None and decoupled:
            p *= 1.0 - lr * weight_decay
        elif weight_decay is not None:
            g = g + weight_decay * p
        m *= beta1
        m += (1.0 - beta1) * g
        if flush and step % SUBNORMAL_FLUSH_EVERY == 0:
            flush_subnormals(m)
        v *= beta2
        t = np.multiply(g, g)
        t *= 1.0 - beta2
        v += t
        np.sqrt(v, out=t)  # t is the denominator from here on
        t *= 1.0 / (1.0 - beta2**step) ** 0.5
        t += eps
        np.divide(m, t, out=t)
        t *= lr / (1.0 - beta1**step)
        p -= t
        return p, m, v

    def rmsprop(self, p, g, v, gavg, buf, lr, alpha, eps, weight_decay, momentum, centered):
        if weight_decay is not None:
            g = g + weight_decay * p
        v *= alpha
        t = np.multiply(g, g)
        t *= 1.0 - alpha
        v += t
        if centered:
            gavg *= alpha
            gavg += (1.0 - alpha) * g
            np.multiply(gavg, gavg, out=t)
            np.subtract(v, t, out=t)
            np.sqrt(t, out=t)
        else:
            np.sqrt(v, out=t)
        t += eps  # t is the denominator √v + ε
        np.divide(g, t, out=t)
        if momentum:
            buf *= momentum
            buf += t
            t = buf
        p -= lr * t
        return p, v, gavg, buf


def _row_max(z):
    """z.max(axis=-1, keepdims=True), the same numbers, faster for many rows of few columns.

    NumPy reduces a short last axis row by row, slowly when there are many rows
    (an ensemble of 64 at batch 128 has 8192 rows of 10 logits); a maximum over
    whole columns, one ufunc call per column, is an order of magnitude faster.
    The maximum is exact, so the order of comparisons does not change a bit.
    """
    C = z.shape[-1]
    if C > 16 or z.size < 256 * C:
        return np.maximum.reduce(z, axis=-1, keepdims=True)  # z.max without its wrappers
    out = z[..., 0:1].copy()
    for j in range(1, C):
        np.maximum(out, z[..., j:j + 1], out=out)
    return out


def _row_sum(e):
    """Σ over the last axis, shape e.shape[:-1]; many short rows as a product with ones.

    Like the maximum above, NumPy sums a short last axis row by row; the product
    is several times faster (a different summation order, so float rounding
    differs in the last bits). Few rows are summed directly.
    """
    C = e.shape[-1]
    if e.size < 256 * C:
        return np.add.reduce(e, axis=-1)
    rows = e.reshape(-1, C) if e.flags.c_contiguous else np.ascontiguousarray(e).reshape(-1, C)
    return (rows @ np.ones(C, dtype=e.dtype)).reshape(e.shape[:-1])
