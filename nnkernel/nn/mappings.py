"""``model.params``, ``model.grads`` and ``model.state``: mappings whose every write is checked.

Each is a `collections.abc.MutableMapping`, so ``update``, ``|=``, ``setdefault``,
``pop``, ``popitem`` and ``clear`` all go through the same ``__setitem__`` /
``__delitem__`` as ``m[key] = value`` does: a value is converted to the model's
backend, device and dtype, its shape must be the entry's (no broadcasting), and
a complex, string or object array is refused. Keys are fixed by the model's
architecture: a new key is refused, and so is removing a parameter or a state
entry. Removing a *gradient* leaves that parameter out of the optimizer step it
is passed to (it comes back with the next backward), as documented below.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from ..backend import dtype_name
from ..errors import ArchitectureError, DTypeError, MissingKeyError, NnkernelError, ShapeError


def checked(backend, dtype, value, shape: tuple, what: str):
    """``value`` on the backend in ``dtype`` with exactly ``shape``, or a clear error."""
    kind = dtype_name(getattr(value, "dtype", None)) if hasattr(value, "dtype") else None
    if kind is not None and (kind.startswith("complex") or kind in ("object", "str", "bytes")
                             or kind.startswith(("<U", "|S", "<M", "<m"))):
        raise DTypeError(f"{what} must be real numbers, got an array of dtype {kind}")
    try:
        value = backend.asarray(value, dtype=dtype)
    except NnkernelError:
        raise
    except (TypeError, ValueError) as err:
        raise DTypeError(f"{what} must be an array of real numbers: {err}") from None
    if tuple(value.shape) != tuple(shape):
        raise ShapeError(f"{what} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    return value


class _StoreMapping(MutableMapping):
    """Shared parts of the parameter and gradient mappings of a store."""

    def __init__(self, store):
        self.store = store

    def __len__(self):
        return len(self.store.keys)

    def __iter__(self):
        return iter(self.store.keys)

    def __contains__(self, key):
        return key in self.store.bounds

    def __or__(self, other):  # as dict | dict: a new plain dict, the model untouched
        return {**self, **dict(other)}

    def __ior__(self, other):  # as dict |= other: every entry through __setitem__
        self.update(other)
        return self

    def __reduce__(self):  # a plain dict when copied or pickled on its own
        return dict, (dict(self),)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(self.store.keys)})"

    @property
    def ensemble(self):
        return self.store.ensemble

    def _checked(self, key, value, what):
        store = self.store
        if key not in store.bounds:
            raise MissingKeyError(f"{key!r} is not a parameter of this model; parameters: "
                                  f"{', '.join(store.keys)}")
        return checked(store.backend, store.dtype, value, store.lead + store.shapes[key],
                       f"{what} {key!r}")


class Parameters(_StoreMapping):
    """``model.params``: parameter key -> array (a view of the store's flat buffer), in the
    model's forward order. Assigning writes into the store, so optimizers see it."""

    def __getitem__(self, key):
        store = self.store
        store.fresh()
        return store.views[key]

    def __setitem__(self, key, value):
        self.store.write(key, self._checked(key, value, "parameter"))

    def __delitem__(self, key):
        raise ArchitectureError("a model's parameters cannot be removed; to freeze one, leave "
                                "it out of the gradients passed to the optimizer")

    @property
    def flat(self):
        """Every parameter, in order, in one buffer: (P,) or (E, P)."""
        return self.store.flat


class Gradients(_StoreMapping):
    """``model.grads``: parameter key -> dL/dparameter after `backward`, views of ``flat``.

    The next backward overwrites the buffer, as PyTorch reuses ``.grad``: copy an
    entry to keep it. Assigning an entry writes into the buffer. Removing one
    (``del grads[key]``, ``pop``, ...) leaves that parameter out of the optimizer
    step this mapping is passed to; the next backward brings it back.
    """

    def __init__(self, store):
        super().__init__(store)
        self.left_out: set = set()

    def __getitem__(self, key):
        if key in self.left_out:
            raise KeyError(key)
        store = self.store
        store.fresh()
        return store.grad_views[key]

    def __setitem__(self, key, value):
        self.store.write_grad(key, self._checked(key, value, "gradient"))
        self.left_out.discard(key)

    def __delitem__(self, key):
        if key not in self.store.bounds or key in self.left_out:
            raise KeyError(key)
        self.left_out.add(key)

    def __len__(self):
        return len(self.store.keys) - len(self.left_out)

    def __iter__(self):
        left_out = self.left_out
        return (k for k in self.store.keys if k not in left_out)

    def __contains__(self, key):
        return key in self.store.bounds and key not in self.left_out

    @property
    def flat(self):
        """Every gradient, in parameter order, in one buffer: (P,) or (E, P)."""
        return self.store.grad


class State(MutableMapping):
    """``model.state``: non-learned buffers (BatchNorm's running statistics) by key.

    Assigning converts to the model's backend and dtype and refuses another shape; the
    entries are fixed by the architecture (none can be added or removed).
    """

    def __init__(self, model, arrays: dict):
        self._model, self._arrays = model, arrays

    def __getitem__(self, key):
        return self._arrays[key]

    def __setitem__(self, key, value):
        if key not in self._arrays:
            raise MissingKeyError(f"{key!r} is not a state entry of this model; state: "
                                  f"{', '.join(self._arrays) or 'none'}")
        model = self._model
        self._arrays[key] = checked(model.backend, model.dtype, value,
                                    tuple(self._arrays[key].shape), f"state {key!r}")

    def __delitem__(self, key):
        raise ArchitectureError("a model's state entries cannot be removed (they belong to its "
                                "layers)")

    def __len__(self):
        return len(self._arrays)

    def __iter__(self):
        return iter(self._arrays)

    def __contains__(self, key):
        return key in self._arrays

    def __or__(self, other):
        return {**self, **dict(other)}

    def __ior__(self, other):
        self.update(other)
        return self

    def __reduce__(self):
        return dict, (dict(self),)

    def __repr__(self):
        return f"State({', '.join(self._arrays)})"
