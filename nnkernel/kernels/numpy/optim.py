"""NumPy twin of the optimizer kernels: parameters and state updated in place.

Adam makes about ten passes over every parameter per step, and each avoided
temporary is one less allocation and one less pass over memory. Parameters and
optimizer state are updated in place and the same arrays are returned, so
callers that rebind (the generic contract) see no difference.
"""

from __future__ import annotations

import numpy as np

from ..reference.optim import SUBNORMAL_FLUSH_EVERY

_EXPONENT_BITS = {4: (np.int32, 0x7F800000), 8: (np.int64, 0x7FF0000000000000)}

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


class NumpyOptimKernels:
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
    # keeps all five in L2 (a tunable: bench/history/2026-11-22-intel-sweeps.md).
    adam_chunk_bytes = 1 << 18
    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step,
             flush_subnormals=False):
        chunk = self.adam_chunk_bytes // p.itemsize
        per_entry = isinstance(weight_decay, np.ndarray)  # a decay selection, laid out as p
        if p.ndim == 1 and p.shape[0] > 2 * chunk and isinstance(lr, float) and (
                not per_entry or weight_decay.shape == p.shape):
            # element-wise arithmetic: slice by slice gives the very same numbers
            for i in range(0, p.shape[0], chunk):
                s = slice(i, i + chunk)
                self._adam(p[s], g[s], m[s], v[s], lr, beta1, beta2, eps,
                           weight_decay[s] if per_entry else weight_decay, decoupled, step,
                           flush_subnormals)
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

    def flatten(self, arrays):
        return np.concatenate([a.reshape(-1) for a in arrays])  # methods: no wrapper overhead
