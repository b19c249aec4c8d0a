"""NumPy twin of the reference kernels: same numbers, fewer temporaries.

NumPy lets us write into existing buffers (``out=``, in-place operators), which
the standard does not. The optimizer updates are where this pays: Adam makes
about ten passes over every parameter per step, and each avoided temporary is
one less allocation and one less pass over memory. Parameters and optimizer
state are updated in place and the same arrays are returned, so callers that
rebind dict entries (the generic contract) see no difference.
"""

from __future__ import annotations

import numpy as np

from .reference import Kernels


class NumpyKernels(Kernels):
    name = "numpy"
    in_place = True

    def affine(self, x, W, b):
        z = np.matmul(x, W)
        z += b[..., None, :] if W.ndim == 3 else b  # in place: no second (N, n_out) array
        return z

    def affine_backward(self, x, W, dz, need_dx=True):
        if W.ndim == 3:
            dW = np.matmul(np.swapaxes(x, -1, -2), dz)
            db = dz.sum(axis=-2)
        else:
            x2 = x.reshape(-1, x.shape[-1])
            dz2 = dz.reshape(-1, dz.shape[-1])
            dW = x2.T @ dz2  # BLAS reads the transpose in place, no copy
            db = dz2.sum(axis=0)
        dx = np.matmul(dz, np.swapaxes(W, -1, -2)) if need_dx else None
        return dx, dW, db

    def softmax_cross_entropy(self, z, target, count):
        shifted = z - z.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=-1, keepdims=True)
        losses = np.log(s)[..., 0] - (target * shifted).sum(axis=-1)
        e /= s  # softmax in place
        e -= target
        e *= 1.0 / count
        return losses, e

    def sgd(self, p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        if weight_decay is not None:
            g = g + weight_decay * p
        if momentum:
            if first:
                buf = g.copy()
            else:
                buf *= momentum
                buf += (1.0 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g
        return p, buf

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
        if weight_decay is not None and decoupled:
            p *= 1.0 - lr * weight_decay
        elif weight_decay is not None:
            g = g + weight_decay * p
        m *= beta1
        m += (1.0 - beta1) * g
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
