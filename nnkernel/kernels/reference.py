"""Generic kernels: the reference mathematics, in the Array API standard only.

Shapes: x (..., n_in), W (n_in, n_out) or a stack (E, n_in, n_out) for an
ensemble of E models, b (n_out,) or (E, n_out). `xp.matmul` broadcasts the
leading dimensions, so one code path serves one model and a stack of them.
"""

from __future__ import annotations

import array_api_compat


class Kernels:
    """Reference kernels; backend twins subclass this and override what they speed up."""

    name = "reference"
    in_place = False  # updates return new arrays; True: they write into p and the state
    fused_activations: frozenset = frozenset()  # names `affine_act` fuses (a twin's business)

    def __init__(self, xp):
        self.xp = xp

    # -- Dense: z = xW + b --------------------------------------------------------
    def affine(self, x, W, b):
        """z = x W + b, a (batched) matrix product plus a broadcast bias."""
        xp = self.xp
        if W.ndim == 3:  # ensemble: b is (E, n_out), rows of z are (E, N, n_out)
            b = xp.expand_dims(b, axis=-2)
        return xp.matmul(x, W) + b

    def affine_backward(self, x, W, dz, need_dx: bool = True, out=None):
        """Gradients of z = xW + b:  dW = xᵀ δ,  db = Σ_rows δ,  dx = δ Wᵀ.

        ``out`` may hold (dW, db) buffers that a twin fills in place; callers use the
        returned arrays either way.
        """
        xp = self.xp
        if W.ndim == 3:  # ensemble: x (N, n_in) shared or (E, N, n_in); dz (E, N, n_out)
            dW = xp.matmul(xp.matrix_transpose(x), dz)
            db = xp.sum(dz, axis=-2)
        else:  # any leading batch dimensions fold into rows
            x2 = xp.reshape(x, (-1, x.shape[-1]))
            dz2 = xp.reshape(dz, (-1, dz.shape[-1]))
            dW = xp.matmul(xp.matrix_transpose(x2), dz2)
            db = xp.sum(dz2, axis=0)
        dx = xp.matmul(dz, xp.matrix_transpose(W)) if need_dx else None
        return dx, dW, db

    def total(self, x):
        """Σ of all entries, a 0-d array."""
        return self.xp.sum(x)

    def flatten(self, arrays):
        """One 1-D array holding all of ``arrays`` in order (for whole-buffer updates)."""
        xp = self.xp
        return xp.concat([xp.reshape(a, (-1,)) for a in arrays])

    # -- softmax and cross-entropy ------------------------------------------------
    def log_softmax(self, z):
        xp = self.xp
        shifted = z - xp.max(z, axis=-1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))

    def softmax_cross_entropy(self, z, target, count: int):
        """Per-row losses −Σ t log softmax(z) and the gradient (softmax(z) − t) / count.

        `target` holds probabilities (one-hot or soft labels) of z's shape.
        """
        xp = self.xp
        logp = self.log_softmax(z)
        losses = -xp.sum(target * logp, axis=-1)
        dz = (xp.exp(logp) - target) / float(count)
        return losses, dz

    def softmax_cross_entropy_labels(self, z, labels, count: int):
        """The same for integer class labels, shape z.shape[:-1] or broadcastable to it.

        The reference builds the one-hot target; a twin may gather the label column instead.
        """
        xp = self.xp
        classes = xp.arange(z.shape[-1], device=array_api_compat.device(z))
        target = xp.astype(xp.expand_dims(labels, axis=-1) == classes, z.dtype)
        return self.softmax_cross_entropy(z, target, count)

    # -- optimizer updates: (param, grad, state...) -> new arrays -----------------
    def sgd(self, p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        if weight_decay is not None:
            g = g + weight_decay * p
        if momentum:
            buf = g if first else momentum * buf + (1.0 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        return p - lr * g, buf

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
        """torch.optim.Adam / AdamW: m, v moving averages with bias correction."""
        xp = self.xp
        if weight_decay is not None and decoupled:
            p = p * (1.0 - lr * weight_decay)  # AdamW: decay the weights, not the gradient
        elif weight_decay is not None:
            g = g + weight_decay * p  # Adam: L2 penalty folded into the gradient
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * (g * g)
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        denom = xp.sqrt(v) / (bc2**0.5) + eps
        return p - (lr / bc1) * (m / denom), m, v

    def rmsprop(self, p, g, v, gavg, buf, lr, alpha, eps, weight_decay, momentum, centered):
        xp = self.xp
        if weight_decay is not None:
            g = g + weight_decay * p
        v = alpha * v + (1.0 - alpha) * (g * g)
        if centered:
            gavg = alpha * gavg + (1.0 - alpha) * g
            avg = xp.sqrt(v - gavg * gavg) + eps
        else:
            avg = xp.sqrt(v) + eps
        if momentum:
            buf = momentum * buf + g / avg
            return p - lr * buf, v, gavg, buf
        return p - lr * (g / avg), v, gavg, buf
