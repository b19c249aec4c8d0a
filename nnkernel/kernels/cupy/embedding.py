"""CuPy twin of the embedding kernels: a checked gather, `cupyx.scatter_add`, GEMMs into the store.

- `embedding`: y = W[ids] as one elementwise kernel over y that reads each element's
  row of W, and writes NaN for an id outside 0..V−1 (``cupy.take`` would wrap it
  silently; checking ids on the host would wait for the GPU every step). A NaN in
  the logits then shows in the loss.
- `embedding_backward`: dW[ids_i] += dy_i with ``cupyx.scatter_add`` (atomic adds:
  repeated ids sum, in an order that may change the last bits from run to run),
  into the model's gradient buffer.
- `unembed_backward`: dW = dyᵀ x by cuBLAS straight into the gradient buffer.

UNTESTED ON A GPU when written (no GPU in that session): the gather's body runs as
host C++ in tests/test_cupy_attention_source.py, the rest where a GPU is.
"""

from __future__ import annotations

import functools

import numpy as np

try:
    import cupy
    import cupyx
except ImportError:  # the CUDA sources stay readable, and compile-testable, without CuPy
    cupy = cupyx = None

from .specs import Elementwise

# The body of an ElementwiseKernel over y (N·C elements; i is the element's index).
_GATHER_CODE = """
const long long row = i / C, col = i % C;
const long long id = ids[row];
y = (id >= 0 && id < V) ? W[id * C + col] : (T)nan("");
"""
GATHER = Elementwise("nnk_embedding_gather", "raw T W, raw int64 ids, int64 V, int64 C", "T y",
                     _GATHER_CODE, dtypes=("float32", "float64"), scalars=frozenset({"V", "C"}))


@functools.cache
def _gather_kernel():
    return GATHER.build()


def cuda_sources() -> list:
    """Every kernel this module builds (nnkernel/kernels/cupy/specs.py's contract)."""
    return [GATHER]


class CupyEmbeddingKernels:
    def embedding(self, W, ids):
        if W.dtype not in (np.float32, np.float64):
            return super().embedding(W, ids)
        V, C = W.shape
        y = cupy.empty((*ids.shape, C), dtype=W.dtype)
        ids = cupy.ascontiguousarray(ids, dtype=np.int64)  # raw: read by flat index
        _gather_kernel()(W, ids, np.int64(V), np.int64(C), y)
        return y

    def embedding_backward(self, ids, dy, num_embeddings, out=None):
        if out is None:
            out = cupy.zeros((num_embeddings, dy.shape[-1]), dtype=dy.dtype)
        else:
            out.fill(0)
        cupyx.scatter_add(out, ids.reshape(-1), dy.reshape(-1, dy.shape[-1]))
        return out

    def unembed_backward(self, x, W, dy, need_dx=True, out=None):
        x2 = x.reshape(-1, x.shape[-1])
        dy2 = dy.reshape(-1, dy.shape[-1])
        dW = cupy.matmul(dy2.T, x2, out=out)  # cuBLAS reads the transpose in place
        return (cupy.matmul(dy, W) if need_dx else None), dW
