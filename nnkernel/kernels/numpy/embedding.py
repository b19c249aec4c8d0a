"""NumPy twin of the embedding kernels: the scatter-add as ``np.add.at``, into the store.

``np.add.at`` accumulates repeated indices (a fancy ``+=`` would keep only the last
of them); since NumPy 1.25 it is a fast loop for this 2-D case. The gradient is
written straight into the model's gradient buffer when the store hands one over.
"""

from __future__ import annotations

import numpy as np


class NumpyEmbeddingKernels:
    def embedding(self, W, ids):
        return np.take(W, ids, axis=0)  # y = W[ids], shape ids.shape + (C,)

    def embedding_backward(self, ids, dy, num_embeddings, out=None):
        if out is None:
            out = np.zeros((num_embeddings, dy.shape[-1]), dtype=dy.dtype)
        else:
            out.fill(0.0)
        np.add.at(out, ids.reshape(-1), dy.reshape(-1, dy.shape[-1]))  # dW[ids_i] += dy_i
        return out

    def unembed_backward(self, x, W, dy, need_dx=True, out=None):
        x2 = x.reshape(-1, x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        dW = np.matmul(dy2.T, x2, out=out)  # dW = dyᵀ x, BLAS reading the transpose in place
        return (np.matmul(dy, W) if need_dx else None), dW
