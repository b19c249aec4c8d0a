"""An optimizer's state for one parameter store: flat arrays shaped like the store's buffer.

Adam's m and v, SGD's momentum buffer, ... are one array each, laid out as
``store.flat``, so an update is a few whole-buffer operations. Each parameter
keeps its own step count (a parameter left out of the gradients is frozen and
its count stays, as torch.optim counts); usually every count is the same, and
``uniform`` is that count. A compiled step on a large model may hand the state
back as one array per parameter (`adopt_parts`); it is joined when next asked for.
"""

from __future__ import annotations

import numpy as np

from ..backend import to_numpy


class FlatState:
    def __init__(self, store, names: tuple):
        self.store = store
        self.names = tuple(names)
        self._parts = None  # {name: {key: segment}} a compiled step left, joined when asked
        self.arrays = {n: store.backend.zeros(store.flat.shape, store.dtype) for n in names}
        self.uniform: int | None = 0  # the count of every parameter, while they agree
        self._counts: dict | None = None  # key -> updates it has had, once they differ

    @property
    def arrays(self) -> dict:
        """State name -> flat array laid out as ``store.flat``."""
        if self._parts is not None:
            self._arrays = {n: self.store.join(p) for n, p in self._parts.items()}
            self._parts = None
        return self._arrays

    @arrays.setter
    def arrays(self, value) -> None:
        self._arrays, self._parts = dict(value), None

    def parts(self) -> dict:
        """{name: {key: segment}}: the state per parameter, each shaped lead + (size,)."""
        if self._parts is not None:
            return self._parts
        store = self.store
        return {n: {k: store.segment(a, k) for k in store.keys} for n, a in self._arrays.items()}

    def adopt_parts(self, parts: dict) -> None:
        """A compiled step's new state, per parameter (`arrays` joins it when asked)."""
        self._parts = parts

    def adopt(self, p, state: dict) -> None:
        """The updated parameters and state, settled together: a lazy library (Dask) computes
        them in one pass instead of once per array; a no-op where they were updated in place."""
        store = self.store
        if p is store.flat and store.mutable:  # updated in place (a twin's kernels)
            self._arrays = state
            return
        names = tuple(state)
        p, *arrays = self.store.backend.settle(p, *(state[n] for n in names)) if names else (p,)
        self.arrays = dict(zip(names, arrays, strict=True))
        self.store.set_flat(p)

    # -- step counts ---------------------------------------------------------------------------
    @property
    def counts(self) -> dict:
        """Parameter key -> number of updates it has had."""
        return dict.fromkeys(self.store.keys, self.uniform) if self._counts is None \
            else dict(self._counts)

    def step_of(self, key) -> int:
        return self.uniform if self._counts is None else self._counts[key]

    def advance(self, keys) -> None:
        """One more update for ``keys``."""
        if self._counts is None and len(keys) == len(self.store.keys):
            self.uniform += 1
            return
        counts = self._counts = self.counts
        for key in keys:
            counts[key] += 1
        self._agree()

    def set_count(self, key, count: int) -> None:
        counts = self._counts = self.counts
        counts[key] = int(count)
        self._agree()

    def _agree(self) -> None:
        values = set(self._counts.values())
        if len(values) <= 1:  # back in step: one count for all
            self.uniform, self._counts = (values.pop() if values else 0), None
        else:
            self.uniform = None

    # -- following the parameters --------------------------------------------------------------
    def move_to(self, store) -> None:
        """Follow the parameters to another backend, device or dtype (after model.to())."""
        be = store.backend
        self.arrays = {n: be.asarray(np.array(to_numpy(a)), dtype=store.dtype)
                       for n, a in self.arrays.items()}
        self.store = store

    def per_key(self, name, key):
        """State ``name`` of one parameter, shaped like it."""
        store = self.store
        return store.xp.reshape(store.segment(self.arrays[name], key),
                                store.lead + store.shapes[key])
