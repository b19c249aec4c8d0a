"""Dense layers and element-wise steps, the reference: z = xW + b and its backward, g′, dropout.

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


class DenseKernels:
    """Mixed into `Kernels` (which provides ``self.xp``); a twin overrides what it speeds up."""

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

    def activation(self, g, z):
        """a = g(z) for an activation g of nnkernel.nn.activations (a twin may compute it in
        fewer passes)."""
        return g.forward(self.xp, z)

    def activation_backward(self, g, z, a, da):
        """dz = da ⊙ g′(z) for an activation g of nnkernel.nn.activations (a twin fuses it)."""
        return g.backward(self.xp, z, a, da)

    # -- LayerNorm over the last axis ------------------------------------------------------
    def layer_norm(self, x, gamma, beta, eps: float):
        """(y, saved): y = γ x̂ + β with x̂ = (x − μ)/√(σ² + eps), μ and σ² the mean and the
        biased variance of each row (the last axis); γ, β broadcast against x."""
        xp = self.xp
        mean = xp.mean(x, axis=-1, keepdims=True)
        var = xp.var(x, axis=-1, keepdims=True)
        inv_std = 1.0 / xp.sqrt(var + eps)
        xhat = (x - mean) * inv_std
        return gamma * xhat + beta, (xhat, inv_std)

    def layer_norm_backward(self, dy, gamma, saved, axes):
        """(dx, dγ, dβ) of `layer_norm`: dγ = Σ dy ⊙ x̂ and dβ = Σ dy over ``axes`` (the rows);
        dx = (1/σ)(dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂)), dx̂ = dy ⊙ γ, means along each row."""
        xp = self.xp
        xhat, inv_std = saved
        dgamma = xp.sum(dy * xhat, axis=axes)
        dbeta = xp.sum(dy, axis=axes)
        dxhat = dy * gamma
        mean_d = xp.mean(dxhat, axis=-1, keepdims=True)
        mean_dx = xp.mean(dxhat * xhat, axis=-1, keepdims=True)
        return inv_std * (dxhat - mean_d - xhat * mean_dx), dgamma, dbeta

    def dropout(self, x, p: float, random):
        """Inverted dropout: (x ⊙ mask, mask), mask = [u ≥ p] / (1 − p), u ~ U[0, 1) of `random`."""
        xp = self.xp
        keep = random.uniform(x.shape, x.dtype) >= p
        mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - p))
        return x * mask, mask


def fill(buffer, value):
    """Write ``value`` into ``buffer`` (same shape) and return the buffer."""
    buffer[...] = value
    return buffer
