"""What a layer sees of the model at its position: arrays, kernels, randomness, gradients.

A layer object holds only its configuration, so one object can sit in several
places (or several models). The model gives it a `LayerContext` per position:

    ctx.xp, ctx.k       the Array API namespace and the kernels
    ctx.ensemble        None, or the number of members E (arrays gain a leading E axis)
    ctx.sample_ndim     the number of per-sample axes of this position's input
    ctx.children        the contexts of a combinator's own layers (Residual), in order
    ctx.params[name]    this position's parameters
    ctx.state[name]     non-learned buffers (BatchNorm's running statistics); assignable,
                        several at once with ctx.state.update({...})
    ctx.random          the random source of the pass (Dropout masks)
    ctx.grads           where backprop puts dL/dparameter:
                          ctx.grads.out(name, ...)   buffers to fill in place, or None
                          ctx.grads.add(name, value) a contribution (sharing adds them)

The arrays themselves belong to a `Pass`: the model's own (its parameter store,
its state, its random stream) or another one over given arrays (a compiled step's
traced ones). Contexts read the pass in use through one shared cell, so switching
passes switches every position at once and nothing is copied.
"""

from __future__ import annotations


class Pass:
    """The arrays one forward/backward pass reads and writes."""

    __slots__ = ("params", "grads", "state", "random")

    def __init__(self, params, grads, state: dict, random):
        self.params = params  # key -> array (a mapping with __getitem__)
        self.grads = grads    # a gradient collector (nnkernel.nn.parameters)
        self.state = state    # key -> array, written by layers (BatchNorm)
        self.random = random


class Cell:
    """The pass in use, shared by every context of one model."""

    __slots__ = ("run",)

    def __init__(self, run: Pass | None = None):
        self.run = run


class ParamView:
    __slots__ = ("_cell", "_keys")

    def __init__(self, cell, keys):
        self._cell, self._keys = cell, keys

    def __getitem__(self, name):
        return self._cell.run.params[self._keys[name]]


class StateView:
    """ctx.state: this position's entries of the pass's state by short name."""

    __slots__ = ("_cell", "_keys", "_settle")

    def __init__(self, cell, keys, settle):
        self._cell, self._keys, self._settle = cell, keys, settle

    def __getitem__(self, name):
        return self._cell.run.state[self._keys[name]]

    def __setitem__(self, name, value):
        self.update({name: value})

    def update(self, values: dict) -> None:
        """Assign several entries; on a lazy library (Dask) they are computed together and
        kept as numbers, not as a graph (one pass over the shared forward, not one each)."""
        settled = self._settle(*values.values())
        settled = settled if len(values) > 1 else (settled,)
        state = self._cell.run.state
        for name, value in zip(values, settled, strict=True):
            state[self._keys[name]] = value


class GradView:
    __slots__ = ("_cell", "_keys", "_groups")

    def __init__(self, cell, keys):
        self._cell, self._keys = cell, keys
        self._groups: dict = {}  # short names -> store keys

    def out(self, *names):
        keys = self._groups.get(names)
        if keys is None:
            keys = self._groups[names] = tuple(self._keys[n] for n in names)
        return self._cell.run.grads.out(keys)

    def add(self, name, value) -> None:
        self._cell.run.grads.add(self._keys[name], value)


class LayerContext:
    def __init__(self, cell: Cell, layer, path: str, keys: dict, *, backend, ensemble,
                 sample_ndim: int = 1, children=()):
        self.layer, self.path = layer, path
        self.keys = keys  # short name -> store key (parameters, tied parameters and state)
        self.xp, self.k = backend.xp, backend.kernels
        self.ensemble = ensemble
        self.sample_ndim = sample_ndim
        self.children = tuple(children)
        self._cell = cell
        self.params = ParamView(cell, keys)
        self.state = StateView(cell, keys, backend.settle)
        self.grads = GradView(cell, keys)

    @property
    def random(self):
        return self._cell.run.random

    def __repr__(self):
        return f"LayerContext({self.path}: {self.layer!r})"
