"""An optimizer's state for one parameter store: flat arrays shaped like the store's buffer.

Adam's m and v, SGD's momentum buffer, ... are one array each, laid out as
``store.flat``, so an update is a few whole-buffer operations. Each parameter
keeps its own step count (a parameter left out of the gradients is frozen and
its count stays); parameters whose counts agree and that sit next to each other
are updated together, as one segment. Usually that is the whole model.
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
        self.uniform: int | None = 0   # the step count of every parameter, while they agree
        self._steps: dict | None = None  # per-key counts, once a step left some out
        self.everything = (tuple(store.keys),)

    @property
    def arrays(self) -> dict:
        """State name -> flat array laid out as ``store.flat``."""
        if self._parts is not None:
            self._arrays = {n: self.store.join(p) for n, p in self._parts.items()}
            self._parts = None
        return self._arrays

    @arrays.setter
    def arrays(self, value) -> None:
        self._arrays, self._parts = value, None

    def parts(self) -> dict:
        """{name: {key: segment}}: the state per parameter, each shaped lead + (size,)."""
        if self._parts is not None:
            return self._parts
        store = self.store
        return {n: {k: store.segment(a, (k,)) for k in store.keys}
                for n, a in self._arrays.items()}

    def adopt_parts(self, parts: dict) -> None:
        """A compiled step's new state, per parameter (`arrays` joins it when asked)."""
        self._parts = parts

    @property
    def steps(self) -> dict:
        """Parameter key -> number of updates it has had."""
        if self._steps is None:
            return dict.fromkeys(self.store.keys, self.uniform)
        return self._steps

    def step_of(self, key) -> int:
        return self.uniform if self._steps is None else self._steps[key]

    def set_steps(self, keys, step: int) -> None:
        if self._steps is None and len(keys) == len(self.store.keys):
            self.uniform = step
            return
        if self._steps is None:
            self._steps = self.steps
        for key in keys:
            self._steps[key] = step
        counts = set(self._steps.values())
        if len(counts) == 1:  # back in step: the fast path again
            self.uniform, self._steps = counts.pop(), None
        else:
            self.uniform = None

    def segments(self, keys) -> tuple:
        """Runs of consecutive keys (in store order) with equal step counts."""
        if self.uniform is not None and len(keys) == len(self.store.keys):
            return self.everything
        wanted, runs, run = set(keys), [], []
        for key in self.store.keys:
            if key in wanted and run and self.step_of(key) == self.step_of(run[-1]):
                run.append(key)
                continue
            if run:
                runs.append(tuple(run))
            run = [key] if key in wanted else []
        if run:
            runs.append(tuple(run))
        return tuple(runs)

    def view(self, name, keys):
        """The state ``name`` of a segment (a view of the flat array where it can be)."""
        arr = self.arrays[name]
        return arr if len(keys) == len(self.store.keys) else self.store.segment(arr, keys)

    def fits(self, store) -> bool:
        """Whether this state can serve ``store`` (the same keys and shapes)."""
        return store.keys == self.store.keys and store.shapes == self.store.shapes and (
            store.ensemble == self.store.ensemble)

    def move_to(self, store) -> None:
        """Follow the parameters to another backend, device or dtype (after model.to())."""
        be = store.backend
        self.arrays = {n: be.asarray(np.array(to_numpy(a)), dtype=store.dtype)
                       for n, a in self.arrays.items()}
        self.store = store

    def per_key(self, name, key):
        """State ``name`` of one parameter, shaped like it."""
        store = self.store
        return store.xp.reshape(store.segment(self.arrays[name], (key,)),
                                store.lead + store.shapes[key])


def splice(xp, flat, pieces):
    """``flat`` with the ranges [a, b) of the last axis replaced: pieces [(a, b, new), ...]."""
    parts, at = [], 0
    for a, b, new in pieces:
        if a > at:
            parts.append(flat[..., at:a])
        parts.append(new)
        at = b
    if at < flat.shape[-1]:
        parts.append(flat[..., at:])
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=-1)
