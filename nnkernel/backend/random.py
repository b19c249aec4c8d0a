"""Random numbers, which the Array API standard leaves out.

`Random` draws on the host with NumPy's generator and moves the result to the
device: it serves NumPy natively and array-api-strict through a copy. CuPy and
torch subclass it to draw on their device, so a Dropout mask never crosses the
bus. Seeds are ints or tuples of ints, so (seed, epoch, step) names a stream;
`reseed` restarts the stream without making a new object.
"""

from __future__ import annotations

import numpy as np

from .arrays import dtype_name, seed_words


class Random:
    def __init__(self, backend, seed):
        self.backend = backend
        self.reseed(seed)

    def reseed(self, seed) -> None:
        self.rng = np.random.default_rng(seed_words(seed))

    def _host_dtype(self, dtype):
        return np.float32 if dtype_name(dtype) == "float32" else np.float64

    def uniform(self, shape, dtype):
        """Uniform [0, 1) samples of the given shape and backend dtype."""
        host = self.rng.random(shape, dtype=self._host_dtype(dtype))
        return host if self.backend.name == "numpy" else self.backend.asarray(host)

    def permutation(self, n: int):
        """A random permutation of 0..n-1 as a backend int64 array."""
        host = self.rng.permutation(n)
        return host if self.backend.name == "numpy" else self.backend.asarray(host)
