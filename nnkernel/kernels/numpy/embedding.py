"""NumPy twin of the embedding kernels: the scatter-add by sorting, into the store.

The rows of dy are put in id order (a stable argsort of the ids) and each id's run
summed with ``np.add.reduceat``; the sums go to their rows of dW, the rest is 0.
For a GPT batch (768 ids, 128 wide) this is several times faster than ``np.add.at``
(which also accumulates repeated indices, but row by row through a generic loop);
the sums are the same up to rounding (another order of the same additions). The
gradient is written straight into the model's gradient buffer when the store hands
one over.
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
        flat = ids.reshape(-1)
        if flat.size == 0:
            return out
        order = np.argsort(flat, kind="stable")
        ids_sorted = flat[order]
        starts = np.flatnonzero(np.concatenate(([True], ids_sorted[1:] != ids_sorted[:-1])))
        rows = dy.reshape(-1, dy.shape[-1])[order]  # dy in id order
        # dW[v] = Σ_{i: ids_i = v} dy_i, one run of equal ids at a time
        out[ids_sorted[starts]] = np.add.reduceat(rows, starts, axis=0)
        return out

    def unembed_backward(self, x, W, dy, need_dx=True, out=None):
        x2 = x.reshape(-1, x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        dW = np.matmul(dy2.T, x2, out=out)  # dW = dyᵀ x, BLAS reading the transpose in place
        return (np.matmul(dy, W) if need_dx else None), dW
