"""NumPy twin of the dense kernels: the bias added in place, gradients written into the store."""

from __future__ import annotations

import numpy as np


class NumpyDenseKernels:
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
