"""The model's parameter store: one flat parameter buffer, one flat gradient buffer, views.

Every parameter of a model is a view of one flat buffer, and every gradient a
view of another, in parameter order (the model's forward order):

    store.flat   (P,)  or (E, P) for an ensemble of E members (member-major:
                       member i's parameters are the contiguous row i)
    store.grad   the same shape: after backward, dL/dθ in the same layout

so an optimizer, gradient clipping, weight decay or a data-parallel allreduce
works on the whole model with a few whole-buffer operations, and optimizer
state is flat too. Where arrays can be written in place (NumPy, CuPy, torch)
the views stay fixed and layers write their gradients into them; where they
cannot (array-api-strict, JAX) an update returns a new flat buffer and the
store slices new views from it when they are next asked for (a compiled step
may also hand back one array per parameter, joined into ``flat`` when asked).

``model.params`` and ``model.grads`` (`nnkernel.nn.mappings`) are the checked
key → view mappings of a store; the gradient collectors below are where a
backward pass puts each layer's dL/dθ.
"""

from __future__ import annotations

import math


class ParameterStore:
    def __init__(self, backend, dtype, shapes: dict, ensemble: int | None = None,
                 shared_keys=frozenset(), owner=None):
        self.backend, self.xp, self.dtype = backend, backend.xp, dtype
        self.owner = owner  # the model's identity: an optimizer's state follows it, no other
        self.ensemble = ensemble
        self.mutable = backend.mutable
        self.keys = tuple(shapes)
        self.shapes = {k: tuple(s) for k, s in shapes.items()}  # per member
        self.shared_keys = frozenset(shared_keys)  # used at several positions: gradients add
        self.lead = () if ensemble is None else (ensemble,)
        self.bounds, start = {}, 0
        for key, shape in self.shapes.items():
            n = math.prod(shape)
            self.bounds[key] = (start, start + n)
            start += n
        self.size = start  # parameters per member
        self.views: dict = {}       # key -> parameter array (views of flat, where fresh)
        self.grad_views: dict = {}  # key -> gradient array
        self._flat = self._parts = self._grad = self._grad_parts = None
        self._stale = self._grad_stale = False
        self.grad_version = 0  # counts refills of grad_views (collectors cache their entries)
        self.set_flat(backend.zeros(self.lead + (self.size,), dtype))
        self.set_grad(backend.zeros(self.lead + (self.size,), dtype))

    # -- parameters: a flat buffer, or one array per key, each made from the other when asked --
    # ``views`` and ``grad_views`` are the same dict objects for the store's life (a pass reads
    # them directly); after a rebinding update on an immutable backend they are refilled by
    # `fresh`, which the model calls before each use, so a compiled loop that never looks at
    # them never pays for slicing them.
    @property
    def flat(self):
        if self._flat is None:
            self._flat = self.join(self._parts)
        return self._flat

    def set_flat(self, flat) -> None:
        """Adopt a parameter buffer (a no-op when it is the one in use, updated in place)."""
        if flat is self._flat and self._parts is None:
            return
        self._flat, self._parts = self.backend.settle(flat), None  # Dask: numbers, not a graph
        self._stale = True
        if self.mutable:
            self.fresh()

    def set_parts(self, parts: dict) -> None:
        """Adopt one array per parameter (a compiled step's layout for large models)."""
        self._flat, self._parts, self._stale = None, dict(parts), True

    @property
    def grad(self):
        if self._grad is None:
            self._grad = self.join(self._grad_parts)
        return self._grad

    def set_grad(self, grad) -> None:
        if grad is self._grad and self._grad_parts is None:
            return
        self._grad, self._grad_parts = self.backend.settle(grad), None
        self._grad_stale = True
        if self.mutable:
            self.fresh()

    def set_grad_parts(self, parts: dict) -> None:
        self._grad, self._grad_parts, self._grad_stale = None, dict(parts), True

    def fresh(self) -> None:
        """Refill ``views`` and ``grad_views`` from what was adopted last."""
        if self._stale:
            self._stale = False
            self._refill(self.views, self._parts if self._parts is not None else
                         self.split(self._flat))
        if self._grad_stale:
            self._grad_stale = False
            self.grad_version += 1
            self._refill(self.grad_views, self._grad_parts if self._grad_parts is not None else
                         self.split(self._grad))

    @staticmethod
    def _refill(target: dict, values: dict) -> None:
        target.clear()
        target.update(values)

    # -- layout ----------------------------------------------------------------------------
    def split(self, flat) -> dict:
        """Per-key views of a flat buffer, each shaped lead + the parameter's shape."""
        xp, lead = self.xp, self.lead
        return {key: xp.reshape(flat[..., a:b], lead + self.shapes[key])
                for key, (a, b) in self.bounds.items()}

    def join(self, parts: dict):
        """One flat buffer, (P,) or (E, P), from per-key arrays in store order."""
        xp, lead = self.xp, self.lead
        if not self.keys:
            return self.backend.zeros(lead + (0,), self.dtype)
        return xp.concat([xp.reshape(parts[k], lead + (-1,)) for k in self.keys], axis=-1)

    def segment(self, flat, key):
        """The part of a flat buffer (or of an optimizer's flat state) holding one key."""
        a, b = self.bounds[key]
        return flat[..., a:b]

    def mask(self, keys):
        """A boolean array laid out as ``flat`` (one member's row): True where ``keys`` live."""
        xp, device, keys = self.xp, self.backend.device, set(keys)
        parts = [xp.full((b - a,), k in keys, dtype=xp.bool, device=device)
                 for k, (a, b) in self.bounds.items()]
        return xp.concat(parts) if parts else xp.zeros((0,), dtype=xp.bool, device=device)

    # -- writing one entry ------------------------------------------------------------------
    def write(self, key, value) -> None:
        """Set one parameter (already of the right backend, dtype and shape)."""
        self.fresh()
        with self.backend.activate():  # the copy runs on the buffer's GPU
            if self.mutable and self._parts is None:
                self.views[key][...] = value
            else:
                self.set_parts({**self.views, key: value})
                self.fresh()

    def write_grad(self, key, value) -> None:
        self.fresh()
        with self.backend.activate():
            if self.mutable and self._grad_parts is None:
                self.grad_views[key][...] = value
            else:
                self.set_grad_parts({**self.grad_views, key: value})
                self.fresh()

    # -- where a backward pass puts gradients ------------------------------------------------
    def collector(self):
        """The gradient collector of an eager backward pass over this store."""
        return IntoBuffers(self) if self.mutable else Gathered(self)


class IntoBuffers:
    """A mutable backend: kernels write dL/dθ straight into the store's gradient views.

    ``out(keys)`` hands a layer the views to fill (or None: compute a new array and
    `add` it); a key used at several positions (shared or tied parameters) is
    written by its first use in the backward pass and summed into by the others.
    """

    def __init__(self, store: ParameterStore):
        self.store, self.shared = store, store.shared_keys
        self.views = store.grad_views
        self.written: set = set()
        self._buffers: dict = {}  # keys -> the views to fill (per refill of the views)
        self._version = store.grad_version

    def begin(self) -> None:
        self.written.clear()
        store = self.store
        store.fresh()
        if store.grad_version != self._version:
            self._version, self._buffers = store.grad_version, {}

    def out(self, keys: tuple):
        if self.shared.isdisjoint(keys):
            bufs = self._buffers.get(keys)
            if bufs is None:
                views = self.views
                bufs = self._buffers[keys] = (views[keys[0]] if len(keys) == 1
                                              else tuple(views[k] for k in keys))
            return bufs
        if not self.written.isdisjoint(keys):
            return None  # a second use: the kernel returns new arrays, `add` sums them
        self.written.update(keys)
        views = self.views
        return views[keys[0]] if len(keys) == 1 else tuple(views[k] for k in keys)

    def add(self, key, value) -> None:
        view = self.views[key]
        if value is view:  # the buffer a kernel just filled
            return
        if key in self.shared and key in self.written:
            view[...] = view + value
        else:
            self.written.add(key)
            view[...] = value

    def end(self) -> None:
        pass


class Gathered:
    """An immutable backend, or a traced pass: gradients are collected as new arrays, and
    ``end`` joins them (zeros for a parameter the pass did not use)."""

    def __init__(self, store: ParameterStore, adopt: bool = True):
        self.store, self.adopt = store, adopt
        self.pending: dict = {}

    def begin(self) -> None:
        self.pending = {}

    def out(self, keys: tuple):
        return None

    def add(self, key, value) -> None:
        pending = self.pending
        pending[key] = value if key not in pending else pending[key] + value

    def parts(self) -> dict:
        """Every key's gradient, shaped lead + its shape."""
        store, xp = self.store, self.store.xp
        return {key: self.pending[key] if key in self.pending else xp.zeros(
            store.lead + store.shapes[key], dtype=store.dtype, device=store.backend.device)
                for key in store.keys}

    def end(self) -> None:
        if self.adopt:
            self.store.set_grad(self.store.join(self.parts()))
