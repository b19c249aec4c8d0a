"""What a layer sees of the model at its position: arrays, kernels, randomness, gradients.

A layer object holds only its configuration, so one object can sit in several
places (or several models). The model gives it a `LayerContext` per position:

    ctx.xp, ctx.k       the Array API namespace and the kernels
    ctx.ensemble        None, or the number of members E (arrays gain a leading E axis)
    ctx.sample_ndim     the number of per-sample axes of this position's input
    ctx.params[name]    this position's parameters (views of the model's store)
    ctx.state[name]     non-learned buffers (BatchNorm's running statistics); assignable,
                        several at once with ctx.state.update({...})
    ctx.random          the model's random source (Dropout masks)
    ctx.grads           where backprop puts dL/dparameter:
                          ctx.grads.out(name)        a buffer to fill in place, or None
                          ctx.grads.add(name, value) a contribution (sharing adds them)
"""

from __future__ import annotations


class StateView:
    """ctx.state: this position's entries of ``model.state`` by short name."""

    def __init__(self, model, keys: dict):
        self._model, self._keys = model, keys

    def __getitem__(self, name):
        return self._model.state[self._keys[name]]

    def __setitem__(self, name, value):
        self.update({name: value})

    def update(self, values: dict) -> None:
        """Assign several entries; on a lazy library (Dask) they are computed together and
        kept as numbers, not as a graph (one pass over the shared forward, not one each)."""
        settled = self._model.backend.settle(*values.values())
        settled = settled if len(values) > 1 else (settled,)
        for name, value in zip(values, settled, strict=True):
            self._model.state[self._keys[name]] = value


class LayerContext:
    def __init__(self, model, index: int, layer, param_keys: dict, state_keys: dict,
                 sample_ndim: int = 1, shared: bool = False):
        self.model, self.index, self.layer = model, index, layer
        self.sample_ndim = sample_ndim
        self.xp, self.k = model.xp, model.k
        self.ensemble = model.ensemble
        self.params: dict = {}
        model.store.watch(param_keys, self.params)
        self.state = StateView(model, state_keys)
        self.grads = model.store.slot(param_keys, shared)

    @property
    def random(self):
        return self.model.random
