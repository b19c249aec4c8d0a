"""NumPy twin of the dense kernels: the bias added in place, gradients written into the store.

Rows (..., T, n_in) fold into one GEMM: NumPy's matmul of a stack by a matrix
calls BLAS once per stacked matrix, which for a (12, 64, 128) batch of sequences
is several times slower than one (768, 128) product.

LayerNorm takes its sums along each row as matrix-vector products with a vector of
ones and dot products (NumPy's reductions along many short rows are several times
slower), and its sums over the rows likewise; the rest in place. The numbers are
the reference's up to rounding (the same sums, in another order).

GELU (tanh form) runs over blocks of ``ELEMENTWISE_BLOCK`` elements, each step of
the formula in place on the block, so its few buffers stay in the cache; every
step is the reference's operation on the same operands, in its order, so the
numbers are the reference's bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

ELEMENTWISE_BLOCK = 1 << 15  # elements: 128 KiB of float32 per buffer, within L2
_GELU_C = math.sqrt(2.0 / math.pi)  # nnkernel.nn.activations.GELU's constant
_GELU_K = 3.0 * 0.044715           # its backward's 3·0.044715, folded as Python folds it


class NumpyDenseKernels:
    def affine(self, x, W, b):
        if W.ndim == 2 and x.ndim > 2:  # (..., n_in) rows as one (rows, n_in) GEMM
            z = np.matmul(x.reshape(-1, x.shape[-1]), W).reshape(*x.shape[:-1], W.shape[-1])
        else:
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
        if W.ndim == 2:  # dx = δ Wᵀ over the folded rows
            return (dz2 @ W.T).reshape(*dz.shape[:-1], W.shape[0]), dW, db
        return np.matmul(dz, np.swapaxes(W, -1, -2)), dW, db

    # -- LayerNorm: row sums as matrix-vector products ------------------------------------
    def layer_norm(self, x, gamma, beta, eps):
        n = x.shape[-1]
        mean = _row_sums(x)
        mean /= n                                   # μ
        xhat = x - mean
        var = np.einsum("...j,...j->...", xhat, xhat)[..., None]
        var /= n                                    # σ² = mean((x − μ)²)
        var += eps
        inv_std = np.sqrt(var, out=var)
        np.divide(1.0, inv_std, out=inv_std)        # 1/√(σ² + eps)
        xhat *= inv_std                             # x̂ = (x − μ)/σ
        y = np.multiply(gamma, xhat)
        y += beta                                   # γ x̂ + β
        return y, (xhat, inv_std)

    def layer_norm_backward(self, dy, gamma, saved, axes):
        xhat, inv_std = saved
        n = dy.shape[-1]
        t = np.multiply(dy, xhat)
        if len(axes) == dy.ndim - 1 and dy.flags.c_contiguous:  # every row: 1ᵀ t, 1ᵀ dy
            ones = np.ones(dy.size // n, dtype=dy.dtype)
            dgamma, dbeta = ones @ t.reshape(-1, n), ones @ dy.reshape(-1, n)
        else:  # an ensemble's members, each its own sums
            dgamma, dbeta = np.add.reduce(t, axis=axes), np.add.reduce(dy, axis=axes)
        dxhat = np.multiply(dy, gamma)              # dx̂ = dy ⊙ γ
        mean_d = _row_sums(dxhat)
        mean_d /= n
        mean_dx = np.einsum("...j,...j->...", dxhat, xhat)[..., None]
        mean_dx /= n
        dxhat -= mean_d
        np.multiply(xhat, mean_dx, out=t)
        dxhat -= t
        dxhat *= inv_std                            # (dx̂ − mean dx̂ − x̂ mean(dx̂ x̂))/σ
        return dxhat, dgamma, dbeta

    # -- activations: GELU in place over blocks ------------------------------------------
    def activation(self, g, z):
        if g.name == "gelu" and _blockable(z):
            return _gelu(z)
        return super().activation(g, z)

    def activation_backward(self, g, z, a, da):
        if g.name == "gelu" and z is not None and _blockable(z, da):
            return _gelu_backward(z, da)
        return super().activation_backward(g, z, a, da)


def _row_sums(a):
    """Σ over the last axis, keeping it: a (rows, n) matrix times a vector of ones."""
    n = a.shape[-1]
    if not a.flags.c_contiguous:
        return np.add.reduce(a, axis=-1, keepdims=True)
    return (a.reshape(-1, n) @ np.ones(n, dtype=a.dtype)).reshape(*a.shape[:-1], 1)


def _blockable(*arrays) -> bool:
    """Same-shape C-contiguous float arrays of one dtype (flat views of them are free)."""
    a = arrays[0]
    return a.dtype in (np.float32, np.float64) and all(
        b.flags.c_contiguous and b.dtype == a.dtype and b.shape == a.shape for b in arrays)


def _gelu(z):
    """a = ½z(1 + tanh(c(z + 0.044715·z·z·z))), as GELU.forward orders it."""
    a = np.empty_like(z)
    zf, af = z.reshape(-1), a.reshape(-1)
    half = np.empty(min(zf.size, ELEMENTWISE_BLOCK), dtype=z.dtype)
    for s in range(0, zf.size, ELEMENTWISE_BLOCK):
        x, t = zf[s:s + ELEMENTWISE_BLOCK], af[s:s + ELEMENTWISE_BLOCK]
        h = half[:x.size]
        np.multiply(x, 0.044715, out=t)
        t *= x
        t *= x                       # 0.044715·z·z·z
        t += x
        t *= _GELU_C                 # c(z + 0.044715 z³)
        np.tanh(t, out=t)
        t += 1.0
        np.multiply(x, 0.5, out=h)
        t *= h                       # ½z · (1 + tanh(…))
    return a


def _gelu_backward(z, da):
    """dz = da ⊙ (½(1 + t) + ½z·(1 − t²)·c(1 + 3·0.044715 z²)), t = tanh(c(z + 0.044715 z³)),
    as GELU.backward orders it."""
    dz = np.empty_like(z)
    zf, df, of = z.reshape(-1), da.reshape(-1), dz.reshape(-1)
    n = min(zf.size, ELEMENTWISE_BLOCK)
    w1, w2 = np.empty(n, dtype=z.dtype), np.empty(n, dtype=z.dtype)
    for s in range(0, zf.size, ELEMENTWISE_BLOCK):
        x, t = zf[s:s + ELEMENTWISE_BLOCK], of[s:s + ELEMENTWISE_BLOCK]
        z2, dt = w1[:x.size], w2[:x.size]
        np.multiply(x, x, out=z2)            # z²
        np.multiply(z2, 0.044715, out=t)
        t *= x
        t += x
        t *= _GELU_C
        np.tanh(t, out=t)                    # t
        np.multiply(t, t, out=dt)
        np.subtract(1.0, dt, out=dt)         # 1 − t²
        z2 *= _GELU_K
        z2 += 1.0
        z2 *= _GELU_C                        # c(1 + 3·0.044715 z²)
        dt *= z2                             # dt/dz
        t += 1.0
        t *= 0.5                             # ½(1 + t)
        np.multiply(x, 0.5, out=z2)
        z2 *= dt                             # ½z · dt/dz
        t += z2
        t *= df[s:s + ELEMENTWISE_BLOCK]     # da ⊙ g′(z)
    return dz
