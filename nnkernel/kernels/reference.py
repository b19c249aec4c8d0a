"""Generic kernels: the reference mathematics, in the Array API standard only.

Shapes: x (..., n_in), W (n_in, n_out) or a stack (E, n_in, n_out) for an
ensemble of E models, b (n_out,) or (E, n_out). `xp.matmul` broadcasts the
leading dimensions, so one code path serves one model and a stack of them.

Gradient buffers (``out``): on libraries whose arrays can be written in place
the model's parameter store hands each layer views of its flat gradient
buffer, and a kernel given ``out`` fills those views and returns them (this
reference by assignment, a twin by writing there directly); with ``out=None``
it returns new arrays, which the store gathers.
"""

from __future__ import annotations

import array_api_compat

from .conv_reference import ConvKernels

SUBNORMAL_FLUSH_EVERY = 16  # Adam's flush_subnormals option: how often m is flushed


class Kernels(ConvKernels):
    """Reference kernels; library twins subclass this and override what they speed up.

    The convolution and pooling kernels come from the `ConvKernels` mixin.
    """

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

        Returns (dx, dW, db); with ``out=(dW_buffer, db_buffer)`` those are filled.
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
        if out is not None:
            dW = fill(out[0], dW)
            db = fill(out[1], db)
        return dx, dW, db

    def activation_backward(self, g, z, a, da):
        """dz = da ⊙ g′(z) for an activation g of nnkernel.nn.activations (a twin fuses it)."""
        return g.backward(self.xp, z, a, da)

    def dropout(self, x, p: float, random):
        """Inverted dropout: (x ⊙ mask, mask), mask = [u ≥ p] / (1 − p), u ~ U[0, 1) of `random`."""
        xp = self.xp
        keep = random.uniform(x.shape, x.dtype) >= p
        mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - p))
        return x * mask, mask

    # -- reductions over whole buffers --------------------------------------------
    def total(self, x):
        """Σ of all entries, a 0-d array."""
        return self.xp.sum(x)

    def sum_of_squares(self, g, members: bool = False):
        """Σ g², over everything or (members) over all but the first axis."""
        xp = self.xp
        if not members:
            return xp.sum(g * g)
        return xp.sum(xp.reshape(g * g, (g.shape[0], -1)), axis=1)

    def all_finite(self, x) -> bool:
        """Whether no entry is NaN or ±Inf (one reduction; reading it syncs a GPU)."""
        xp = self.xp
        return bool(xp.all(xp.isfinite(x)))

    def flatten(self, arrays):
        """One 1-D array holding all of ``arrays`` in order."""
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

    def softmax_cross_entropy_mean(self, z, target, count: int, members: bool, labels: bool):
        """(mean loss, dz): the per-row losses averaged over count rows (per member: axis 0).

        ``labels``: integer labels, else probabilities. A twin folds the mean into its kernel.
        """
        fn = self.softmax_cross_entropy_labels if labels else self.softmax_cross_entropy
        losses, dz = fn(z, target, count)
        return self.mean(losses, members, count), dz

    def mean(self, x, members: bool, count: int):
        """Mean over everything, or over all but axis 0 (per member), as sum / count."""
        if not members:
            return self.total(x) / float(count)
        return self.xp.sum(x, axis=tuple(range(1, x.ndim))) / float(count)

    def labels_outside(self, labels, n_classes: int) -> tuple[int, int] | None:
        """None when every label is in 0..n_classes-1, else (min, max) for the message."""
        xp = self.xp
        lo, hi = int(xp.min(labels)), int(xp.max(labels))
        return None if lo >= 0 and hi < n_classes else (lo, hi)

    # -- optimizer updates: (param, grad, state...) -> new arrays -----------------
    def sgd(self, p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        if weight_decay is not None:
            g = g + weight_decay * p
        if momentum:
            later = momentum * buf + (1.0 - dampening) * g
            if isinstance(first, bool):
                buf = g if first else later
            else:  # a traced step count (a compiled step): choose without a Python branch
                buf = self.xp.where(first, g, later)
            g = g + momentum * buf if nesterov else buf
        return p - lr * g, buf

    def adam(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step,
             flush_subnormals=False):
        """torch.optim.Adam / AdamW: m, v moving averages with bias correction.

        With ``flush_subnormals`` the subnormal entries of m are set to 0 every
        SUBNORMAL_FLUSH_EVERY steps (an opt-in speed trick for x86 CPUs).
        """
        xp = self.xp
        if weight_decay is not None and decoupled:
            p = p * (1.0 - lr * weight_decay)  # AdamW: decay the weights, not the gradient
        elif weight_decay is not None:
            g = g + weight_decay * p  # Adam: L2 penalty folded into the gradient
        m = beta1 * m + (1.0 - beta1) * g
        if flush_subnormals:
            due = step % SUBNORMAL_FLUSH_EVERY == 0  # a bool, or a traced one in a compiled step
            smallest = xp.finfo(m.dtype).smallest_normal
            if not isinstance(due, bool):
                m = xp.where((xp.abs(m) < smallest) & due, 0.0, m)
            elif due:  # the |m| pass only on the steps that flush
                m = xp.where(xp.abs(m) < smallest, 0.0, m)
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


def fill(buffer, value):
    """Write ``value`` into ``buffer`` (same shape) and return the buffer."""
    buffer[...] = value
    return buffer
