"""Dask: lazy, chunked arrays on the CPU, through array-api-compat's dask.array namespace.

Every operation on a Dask array adds to a task graph; nothing runs until a
value is asked for. A training loop written eagerly would then grow one graph
over every step (each update depends on all before it) and recompute it on
each read. The policy here:

- the model's arrays (parameters, gradients, optimizer state, BatchNorm
  statistics) are single-chunk arrays, *persisted* after every update
  (`settle`): each step's graph starts from numbers in memory and stays the
  size of one step;
- data may be chunked along the rows (a dataset larger than memory): a
  minibatch is a gather from it, computed with the step that uses it;
- numbers are computed with the synchronous scheduler: a step's graph is a
  short chain of small tasks, for which threads only add overhead;
- random numbers are NumPy's generator on the host (the same streams as the
  NumPy backend, so a run from one seed matches it), wrapped as one chunk.

Dask arrays are treated as immutable (the store rebinds) and have no devices
and no DLPack: a NumPy input is wrapped without a copy, another library's data
comes in through the host.
"""

from __future__ import annotations

import numpy as np

from ..errors import DeviceError
from .base import Backend

SCHEDULER = "synchronous"


class DaskBackend(Backend):
    name = "dask"
    module_name = "dask.array"
    install_hint = 'pip install "dask[array]"'
    namespaces = ("dask.array", "array_api_compat.dask.array")
    type_modules = ("dask",)
    mutable = False

    @classmethod
    def probe(cls):
        return cls.load().asarray(np.zeros(1))

    @staticmethod
    def host(x) -> np.ndarray:
        return np.asarray(x.compute(scheduler=SCHEDULER))

    def _resolve_device(self, device):
        if device not in (None, "cpu", "CPU") and str(device).lower() != "cpu":
            raise DeviceError(f"nnkernel's Dask backend runs on the CPU only, got "
                              f"device={device!r}")
        return "cpu"

    def same_device(self, x) -> bool:
        return True

    def asarray(self, obj, dtype=None, copy=None):
        if isinstance(obj, self.array_type):
            return super().asarray(obj, dtype=dtype, copy=copy)
        host = np.asarray(self._from_foreign(obj))
        if dtype is not None:
            host = host.astype(dtype, copy=False)  # dask's dtypes are NumPy's
        return self.module.from_array(np.array(host, copy=True) if copy else host,
                                      chunks=-1 if host.ndim else ())

    def exchange(self, obj):
        # dask.array has no from_dlpack; a NumPy array is wrapped as it is (no copy)
        return self.asarray(obj) if isinstance(obj, np.ndarray) else None

    def settle(self, *arrays):
        """Compute the arrays now (in one pass) and keep the results in memory: later graphs
        start from them. Anything that is not a Dask array passes through."""
        lazy = [i for i, a in enumerate(arrays) if isinstance(a, self.array_type)]
        out = list(arrays)
        if lazy:
            import dask

            # one chunk each: a concatenation (the store's gradients) leaves one per piece
            whole = [arrays[i] if arrays[i].npartitions == 1 else arrays[i].rechunk(-1)
                     for i in lazy]
            done = dask.persist(*whole, scheduler=SCHEDULER, optimize_graph=False)
            for i, a in zip(lazy, done, strict=True):
                out[i] = a
        return out[0] if len(out) == 1 else tuple(out)

    def zeros(self, shape, dtype):
        return self.module.zeros(shape, dtype=dtype, chunks=-1)
