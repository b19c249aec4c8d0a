"""The model's parameter store: one flat parameter buffer, one flat gradient buffer, views.

Every parameter of a model is a view of one flat buffer, and every gradient a
view of another, in parameter order:

    store.flat   (P,)  or (E, P) for an ensemble of E members (member-major:
                       member i's parameters are the contiguous row i)
    store.grad   the same shape: after backward, dL/dθ in the same layout

so an optimizer, gradient clipping, weight decay or a data-parallel allreduce
works on the whole model with a few whole-buffer operations, and optimizer
state is flat too. Where arrays can be written in place (NumPy, CuPy, torch)
the views stay fixed and layers write their gradients into them; where they
cannot (array-api-strict, JAX) an update returns a new flat buffer and the
store rebinds the views to it. Nothing else negotiates who owns memory.

``model.params`` and ``model.grads`` are the key → view mappings of a store.
"""

from __future__ import annotations

import math

from ..errors import ShapeError


class ParameterStore:
    def __init__(self, backend, dtype, shapes: dict, ensemble: int | None = None):
        self.backend, self.xp, self.dtype = backend, backend.xp, dtype
        self.ensemble = ensemble
        self.mutable = backend.mutable
        self.keys = tuple(shapes)
        self.shapes = {k: tuple(s) for k, s in shapes.items()}  # per member
        self.lead = () if ensemble is None else (ensemble,)
        self.bounds, start = {}, 0
        for key, shape in self.shapes.items():
            n = math.prod(shape)
            self.bounds[key] = (start, start + n)
            start += n
        self.size = start  # parameters per member
        self._parts = self._grad_parts = None  # per-key arrays a compiled step left (`defer`)
        self.flat = backend.zeros(self.lead + (self.size,), dtype)
        self.grad = backend.zeros(self.lead + (self.size,), dtype)
        self.params = Parameters(self)
        self.grads = Gradients(self)
        self._listeners: list = []  # per-layer dicts of views to refresh on rebinding
        self._rebind_params()
        self._rebind_grads()
        self._written: set = set()  # keys of shared parameters written in this backward
        self._pending: dict = {}    # immutable backends: the gradients until end_backward
        self._stale = False         # views behind flat/grad after `defer` (made by `fresh`)

    # -- the buffers: flat arrays, or per-key arrays joined when first asked for --------------
    @property
    def flat(self):
        if self._parts is not None:
            self._flat, self._parts = self.join(self._parts), None
        return self._flat

    @flat.setter
    def flat(self, value):
        self._flat, self._parts = value, None

    @property
    def grad(self):
        if self._grad_parts is not None:
            self._grad, self._grad_parts = self.join(self._grad_parts), None
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad, self._grad_parts = value, None

    def join(self, parts: dict):
        """One flat buffer, (P,) or (E, P), from per-key arrays in store order."""
        xp = self.xp
        return xp.concat([xp.reshape(parts[k], self.lead + (-1,)) for k in self.keys], axis=-1)

    # -- views -------------------------------------------------------------------------------
    def _views(self, flat) -> dict:
        xp = self.xp
        out = {}
        for key, (a, b) in self.bounds.items():
            out[key] = xp.reshape(flat[..., a:b], self.lead + self.shapes[key])
        return out

    def _rebind_params(self, views=None) -> None:
        views = self._views(self.flat) if views is None else views
        dict.update(self.params, views)
        for names, target in self._listeners:
            for name, key in names.items():
                target[name] = views[key]

    def _rebind_grads(self, views=None) -> None:
        self._grad_views = self._views(self.grad) if views is None else views
        dict.clear(self.grads)
        dict.update(self.grads, self._grad_views)

    def watch(self, names: dict, target: dict) -> None:
        """Keep ``target[name]`` equal to the view of ``names[name]`` (a layer's parameters)."""
        self._listeners.append((names, target))
        for name, key in names.items():
            target[name] = dict.__getitem__(self.params, key)

    def set_flat(self, flat, views=None) -> None:
        """Adopt an updated parameter buffer (a no-op when it was updated in place).

        ``views``: its per-key views, where the caller has them already.
        """
        self.fresh()
        if flat is not self.flat:
            self.flat = self.backend.settle(flat)  # a lazy library: the numbers, not a graph
            self._rebind_params(views)

    def set_grad(self, grad) -> None:
        self.fresh()
        if grad is not self.grad:
            self.grad = self.backend.settle(grad)
            self._rebind_grads()

    # -- a compiled step's buffers, viewed when next looked at ----------------------------------
    def defer(self, params, grads=None) -> None:
        """Adopt a compiled step's new parameters (and gradients): each a flat buffer, or a
        dict of per-key arrays (joined into ``flat`` only when someone asks for it). Views
        are made by `fresh`, when the model is next used or looked at: one output per view
        costs a compiled step more than a small network's whole step."""
        if isinstance(params, dict):
            self._parts = params
        else:
            self.flat = params
        if isinstance(grads, dict):
            self._grad_parts = grads
        elif grads is not None:
            self.grad = grads
        self._stale = True

    def fresh(self) -> None:
        """Make the views of what `defer` adopted (the model calls it before use)."""
        if self._stale:
            self._stale = False
            self._rebind_params(None if self._parts is None else dict(self._parts))
            self._rebind_grads(None if self._grad_parts is None else dict(self._grad_parts))

    def snapshot(self) -> tuple:
        """Everything a trace re-points at tracers (`restore` puts it back as it was); read
        raw, so that nothing is joined inside the trace."""
        return (self._flat, self._parts, dict(self.params), self._grad, self._grad_parts,
                dict(self.grads), self._stale)

    def restore(self, snap: tuple) -> None:
        self._flat, self._parts, params, self._grad, self._grad_parts, grads, stale = snap
        self._rebind_params(params)
        self._rebind_grads(grads)
        self._pending, self._stale = {}, stale

    def assign(self, key, value) -> None:
        """Set one parameter (already of the right backend, dtype and shape)."""
        with self.backend.activate():  # the copy runs on the buffer's GPU
            if self.mutable:
                view = dict.__getitem__(self.params, key)
                view[...] = value
                return
            self.set_flat(self._replaced(self.flat, key, value))

    def assign_grad(self, key, value) -> None:
        with self.backend.activate():
            if self.mutable:
                view = self._grad_views[key]
                view[...] = value
                dict.__setitem__(self.grads, key, view)
                return
            self.set_grad(self._replaced(self.grad, key, value))

    def _replaced(self, flat, key, value):
        xp = self.xp
        a, b = self.bounds[key]
        piece = xp.reshape(value, self.lead + (b - a,))
        return xp.concat([flat[..., :a], piece, flat[..., b:]], axis=-1)

    def segment(self, flat, keys):
        """The part of a flat buffer holding a run of consecutive keys (a view)."""
        return flat[..., self.bounds[keys[0]][0]:self.bounds[keys[-1]][1]]

    # -- one backward pass -------------------------------------------------------------------
    def slot(self, keys: dict, shared: bool):
        """Where one layer position puts its gradients (``keys``: short name -> store key)."""
        if not self.mutable:
            return PendingSlot(self, keys)
        return SharedSlot(self, keys) if shared else DirectSlot(self, keys)

    def begin_backward(self) -> None:
        self._written.clear()
        self._pending = {}
        if len(self.grads) != len(self.keys):  # entries removed by the caller come back
            dict.update(self.grads, self._grad_views)

    def end_backward(self) -> None:
        if self.mutable:
            return
        xp = self.xp
        pieces = []
        for key in self.keys:
            g = self._pending.get(key)
            if g is None:  # a parameter the last forward did not use
                g = xp.zeros(self.lead + self.shapes[key], dtype=self.dtype,
                             device=self.backend.device)
            pieces.append(xp.reshape(g, self.lead + (-1,)))
        if pieces:
            self.set_grad(xp.concat(pieces, axis=-1))
        self._pending = {}


class DirectSlot:
    """A position whose parameters no other position shares, on a mutable backend.

    ``out`` hands the store's own gradient views to the kernel, which writes into
    them; ``add`` copies a gradient computed elsewhere (BatchNorm's dγ) into its view.
    """

    def __init__(self, store, keys: dict):
        self._views = {n: store._grad_views[k] for n, k in keys.items()}
        self._groups: dict = {}

    def out(self, *names):
        bufs = self._groups.get(names)
        if bufs is None:
            bufs = self._groups[names] = (self._views[names[0]] if len(names) == 1 else
                                          tuple(self._views[n] for n in names))
        return bufs

    def add(self, name, value) -> None:
        view = self._views[name]
        if value is not view:  # not the buffer a kernel just filled
            view[...] = value


class SharedSlot:
    """A position sharing its parameters with another: the first use writes, later ones add."""

    def __init__(self, store, keys: dict):
        self._store, self._keys = store, keys

    def out(self, *names):
        store, keys = self._store, [self._keys[n] for n in names]
        if not store._written.isdisjoint(keys):
            return None  # a second use: the kernel returns new arrays, `add` sums them
        store._written.update(keys)
        bufs = tuple(store._grad_views[k] for k in keys)
        return bufs[0] if len(bufs) == 1 else bufs

    def add(self, name, value) -> None:
        store, key = self._store, self._keys[name]
        view = store._grad_views[key]
        if value is view:
            return
        if key in store._written:
            view[...] = view + value
        else:
            store._written.add(key)
            view[...] = value


class PendingSlot:
    """An immutable backend: gradients are collected and concatenated at the end."""

    def __init__(self, store, keys: dict):
        self._store, self._keys = store, keys

    def out(self, *names):
        return None

    def add(self, name, value) -> None:
        pending, key = self._store._pending, self._keys[name]
        pending[key] = value if key not in pending else pending[key] + value


class Parameters(dict):
    """``model.params``: parameter key -> array (a view of the store's flat buffer).

    Assigning converts the value to the model's backend, dtype and device, refuses a
    wrong shape, and writes it into the store (so optimizers see it).
    """

    def __init__(self, store: ParameterStore):
        super().__init__()
        self.store = store

    @property
    def ensemble(self):
        return self.store.ensemble

    @property
    def flat(self):
        """Every parameter, in order, in one buffer: (P,) or (E, P)."""
        return self.store.flat

    def __setitem__(self, key, value):
        store = self.store
        if key not in store.bounds:
            raise KeyError(f"{key!r} is not a parameter of this model; parameters: "
                           f"{', '.join(store.keys)}")
        shape = store.lead + store.shapes[key]
        value = store.backend.asarray(value, dtype=store.dtype)
        if tuple(value.shape) != shape:
            raise ShapeError(f"parameter {key!r} must have shape {shape}, got "
                             f"{tuple(value.shape)}")
        store.assign(key, value)

    def __delitem__(self, key):
        raise TypeError("a model's parameters cannot be removed; to freeze one, leave it out "
                        "of the gradients passed to the optimizer")

    def __reduce__(self):  # a plain dict when copied or pickled on its own
        return dict, (dict(self),)


class Gradients(dict):
    """``model.grads``: parameter key -> dL/dparameter, views of ``flat``.

    The next backward overwrites the buffer, as PyTorch reuses ``.grad``: copy an
    entry to keep it. Assigning an entry writes into the buffer; removing one
    freezes that parameter for the optimizer step it is passed to.
    """

    def __init__(self, store: ParameterStore):
        super().__init__()
        self.store = store

    @property
    def flat(self):
        """Every gradient, in parameter order, in one buffer: (P,) or (E, P)."""
        return self.store.grad

    def __setitem__(self, key, value):
        store = self.store
        if key not in store.bounds:
            raise KeyError(f"{key!r} is not a parameter of this model")
        value = store.backend.asarray(value, dtype=store.dtype)
        shape = store.lead + store.shapes[key]
        if tuple(value.shape) != shape:
            raise ShapeError(f"gradient {key!r} must have shape {shape}, got "
                             f"{tuple(value.shape)}")
        store.assign_grad(key, value)

    def __reduce__(self):
        return dict, (dict(self),)
