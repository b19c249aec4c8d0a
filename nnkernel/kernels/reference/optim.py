"""Optimizer updates over flat buffers, the reference: torch.optim's formulas.

Each update takes (parameters, gradient, state...) and returns the new arrays; a
twin may write in place and return the same arrays (``Kernels.in_place``).
"""

from __future__ import annotations

SUBNORMAL_FLUSH_EVERY = 16  # Adam's flush_subnormals option: how often m is flushed


class OptimKernels:
    """Mixed into `Kernels` (which provides ``self.xp``)."""

    def sgd(self, p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first):
        if weight_decay is not None:
            g = g + weight_decay * p
        if momentum:
            later = momentum * buf + (1.0 - dampening) * g
            if isinstance(first, bool):  # a copy: g may be the model's gradient buffer,
                buf = self.xp.asarray(g, copy=True) if first else later  # reused next step
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

    # -- whole-buffer reductions: clipping's norm, the NaN check ----------------------
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
