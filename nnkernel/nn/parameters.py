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
        self.flat = backend.zeros(self.lead + (self.size,), dtype)
        self.grad = backend.zeros(self.lead + (self.size,), dtype)
        self.params = Parameters(self)
        self.grads = Gradients(self)
        self._listeners: list = []  # per-layer dicts of views to refresh on rebinding
        self._rebind_params()
        self._rebind_grads()
        self._written: set = set()  # gradient keys written in the current backward
        self._filled: set = set()   # ... of those, the ones a kernel filled in place
        self._pending: dict = {}    # immutable backends: the gradients until end_backward

    # -- views -------------------------------------------------------------------------------
    def _views(self, flat) -> dict:
        xp = self.xp
        out = {}
        for key, (a, b) in self.bounds.items():
            out[key] = xp.reshape(flat[..., a:b], self.lead + self.shapes[key])
        return out

    def _rebind_params(self) -> None:
        views = self._views(self.flat)
        dict.update(self.params, views)
        for names, target in self._listeners:
            for name, key in names.items():
                target[name] = views[key]

    def _rebind_grads(self) -> None:
        views = self._views(self.grad)
        dict.clear(self.grads)
        dict.update(self.grads, views)

    def watch(self, names: dict, target: dict) -> None:
        """Keep ``target[name]`` equal to the view of ``names[name]`` (a layer's parameters)."""
        self._listeners.append((names, target))
        for name, key in names.items():
            target[name] = dict.__getitem__(self.params, key)

    def set_flat(self, flat) -> None:
        """Adopt an updated parameter buffer (a no-op when it was updated in place)."""
        if flat is not self.flat:
            self.flat = flat
            self._rebind_params()

    def set_grad(self, grad) -> None:
        if grad is not self.grad:
            self.grad = grad
            self._rebind_grads()

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
                view = dict.__getitem__(self.grads, key)
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
    def begin_backward(self) -> None:
        self._written.clear()
        self._filled.clear()
        self._pending = {}
        if len(self.grads) != len(self.keys):  # entries removed by the caller come back
            self._rebind_grads()

    def out(self, keys):
        """Buffers a kernel may fill in place with the gradients of ``keys``, or None.

        None on immutable backends, and when any of them was written already in this
        backward (a shared parameter's second use): then the kernel returns new arrays
        and `add` accumulates them.
        """
        if not self.mutable or any(k in self._written for k in keys):
            return None
        self._filled.update(keys)
        self._written.update(keys)
        return tuple(dict.__getitem__(self.grads, k) for k in keys)

    def add(self, key, value) -> None:
        """Record a gradient contribution (the sum of all of them is dL/d key)."""
        if key in self._filled:
            self._filled.discard(key)  # the kernel wrote it already, into out(key)
            return
        if key not in self._written:
            self._written.add(key)
            if self.mutable:
                view = dict.__getitem__(self.grads, key)
                view[...] = value
            else:
                self._pending[key] = value
            return
        if self.mutable:  # a parameter used twice: the contributions add
            view = dict.__getitem__(self.grads, key)
            view[...] = view + value
        else:
            self._pending[key] = self._pending[key] + value

    def end_backward(self) -> None:
        xp = self.xp
        for key in self.keys:
            if key not in self._written:  # a parameter the last forward did not use
                if self.mutable:
                    view = dict.__getitem__(self.grads, key)
                    view[...] = 0.0
                else:
                    self._pending[key] = xp.zeros(self.lead + self.shapes[key], dtype=self.dtype,
                                                  device=self.backend.device)
        if not self.mutable and self.keys:
            pieces = [xp.reshape(self._pending[k], self.lead + (-1,)) for k in self.keys]
            self.set_grad(xp.concat(pieces, axis=-1))
            self._pending = {}
        self._filled.clear()


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
