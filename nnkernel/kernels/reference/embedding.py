"""Token embeddings, the reference: a gather forward, a scatter-add backward, and the tied output.

    y = W[ids]                     (..., C) from ids (...), W (V, C)
    dW[v] = Σ_{i: ids_i = v} dy_i  repeated ids sum (a scatter-add)
    logits = x Wᵀ                  the output projection tied to the embedding's W
    dW = dyᵀ x,  dx = dy W

The standard has no scatter. The reference adds rows up in one of two ways, both
inside the standard, with the same result up to rounding:

- a one-hot matrix product dW = onehot(ids)ᵀ dy, for small V·N (one GEMM);
- sort + cumulative_sum + searchsorted for large vocabularies: the rows of dy in
  id order, their running sums, and each id's total as the difference of the running
  sum at the end and at the start of its run. O(N log N + (N + V)·C), no (N, V)
  matrix; the difference of two running sums loses about ε·|running sum| per entry
  (float32: ~1e-7 · √N relative for random-signed gradients).

(`array_api_extra.at(...).add()` does not accumulate repeated indices on NumPy.)
"""

from __future__ import annotations

import array_api_compat

# One-hot product up to this many (N, V) entries; sort + running sums above it.
ONE_HOT_LIMIT = 1 << 20


class EmbeddingKernels:
    """Mixed into `Kernels` (which provides ``self.xp``)."""

    def embedding(self, W, ids):
        """y = W[ids]: rows of W gathered, shape ids.shape + (C,)."""
        xp = self.xp
        rows = xp.take(W, xp.reshape(ids, (-1,)), axis=0)
        return xp.reshape(rows, (*ids.shape, W.shape[-1]))

    def embedding_backward(self, ids, dy, num_embeddings: int, out=None):
        """dW (V, C) with dW[v] = Σ of the rows of dy whose id is v; ``out``: fill that buffer."""
        flat = self.xp.reshape(ids, (-1,))
        dy2 = self.xp.reshape(dy, (-1, dy.shape[-1]))
        if flat.shape[0] * num_embeddings <= ONE_HOT_LIMIT:
            dW = self.scatter_add_one_hot(flat, dy2, num_embeddings)
        else:
            dW = self.scatter_add_sorted(flat, dy2, num_embeddings)
        if out is not None:
            out[...] = dW
            return out
        return dW

    def scatter_add_one_hot(self, ids, rows, num_embeddings: int):
        """dW = onehot(ids)ᵀ rows: ids (N,), rows (N, C) -> (V, C)."""
        xp = self.xp
        vocab = xp.arange(num_embeddings, dtype=ids.dtype, device=array_api_compat.device(ids))
        one_hot = xp.astype(xp.expand_dims(ids, axis=-1) == vocab, rows.dtype)  # (N, V)
        return xp.matmul(xp.matrix_transpose(one_hot), rows)

    def scatter_add_sorted(self, ids, rows, num_embeddings: int):
        """The same by sorting: with s = ids in order and R the running sums of rows in that
        order (R[0] = 0), dW[v] = R[end(v)] − R[start(v)], start/end = searchsorted(s, v)."""
        xp = self.xp
        order = xp.argsort(ids, stable=True)
        ids_sorted = xp.take(ids, order)
        running = xp.cumulative_sum(xp.take(rows, order, axis=0), axis=0, include_initial=True)
        vocab = xp.arange(num_embeddings, dtype=ids.dtype, device=array_api_compat.device(ids))
        start = xp.searchsorted(ids_sorted, vocab, side="left")
        end = xp.searchsorted(ids_sorted, vocab, side="right")
        return xp.take(running, end, axis=0) - xp.take(running, start, axis=0)

    # -- the output projection tied to an embedding ------------------------------------------
    def unembed(self, x, W):
        """logits = x Wᵀ: x (..., C), W (V, C) -> (..., V)."""
        xp = self.xp
        return xp.matmul(x, xp.matrix_transpose(W))

    def unembed_backward(self, x, W, dy, need_dx: bool = True, out=None):
        """(dx, dW) of logits = x Wᵀ:  dW = dyᵀ x (rows folded),  dx = dy W."""
        xp = self.xp
        x2 = xp.reshape(x, (-1, x.shape[-1]))
        dy2 = xp.reshape(dy, (-1, dy.shape[-1]))
        dW = xp.matmul(xp.matrix_transpose(dy2), x2)
        if out is not None:
            out[...] = dW
            dW = out
        return (xp.matmul(dy, W) if need_dx else None), dW
