"""A model as data: its config and arrays, and the copies made from them.

`Sequential` inherits these: ``config()`` / ``from_config`` (the architecture,
JSON-ready), ``arrays()`` / ``load_arrays`` (host NumPy copies of every parameter
and state array), and what is built from the two: ``copy``, ``copy.deepcopy``,
pickling, ``member(i)`` of an ensemble and ``Sequential.stack(models)``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..backend import Backend, dtype_name, to_numpy
from ..errors import ConfigError, NnkernelError, ShapeError
from .layer import layer_from_config
from .plan import find_path


class ModelData:
    def config(self) -> dict:
        """The architecture, JSON-ready: ``Sequential.from_config(model.config())`` rebuilds it.

        A position that repeats an earlier layer is {"type": "Shared", "same_as": path}; a
        combinator lists its own layers under "layers"; a tied layer names the layer it ties
        to under "tied_to" (paths: "3", or "3.0" inside position 3; top-level ones as ints).
        """
        cfg = {"layers": [_position_config(pos, self.plan) for pos in self.plan.positions],
               "seed": self.seed, "dtype": dtype_name(self.dtype), "ensemble": self.ensemble}
        if len(self.input_shape) > 1 or self.input_shape != self.layers[0].input_shape():
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    @classmethod
    def from_config(cls, cfg: dict, backend="numpy", device=None, dtype=None) -> ModelData:
        if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
            raise ConfigError("a model config is a JSON object with a 'layers' list")
        layers = layers_from_config(cfg)
        return cls(*layers, seed=cfg.get("seed", 0), dtype=dtype or cfg.get("dtype", "float32"),
                   backend=backend, device=device, ensemble=cfg.get("ensemble"),
                   input_shape=cfg.get("input_shape"))

    def arrays(self) -> dict[str, np.ndarray]:
        """Parameters and state as host NumPy arrays (copies, for checkpoints)."""
        return {k: np.array(to_numpy(v)) for k, v in {**self.params, **self.state}.items()}

    def load_arrays(self, arrays: dict) -> None:
        """Set parameters and state from `arrays()` output; shapes are checked."""
        missing = [k for k in list(self.params) + list(self.state) if k not in arrays]
        if missing:
            raise ShapeError(f"arrays lack {', '.join(missing)}")
        for k in self.params:  # written into the store: the caller's arrays are not aliased
            self.params[k] = arrays[k]
        for k in self.state:
            value = self.backend.asarray(arrays[k], dtype=self.dtype, copy=True)
            if tuple(value.shape) != tuple(self.state[k].shape):
                raise ShapeError(f"state {k!r} must have shape {tuple(self.state[k].shape)}, "
                                 f"got {tuple(value.shape)}")
            self.state[k] = value

    def copy(self, backend=None, device=None, dtype=None) -> ModelData:
        """A new model with the same architecture and arrays (optionally elsewhere)."""
        twin = type(self).from_config(self.config(), backend=self._backend_for(backend, device),
                                      dtype=dtype_name(dtype or self.dtype))
        twin.load_arrays(self.arrays())
        return twin

    def __deepcopy__(self, memo) -> ModelData:
        """``copy.deepcopy(model)``: the same architecture, backend, device, dtype and arrays.

        Rebuilt rather than copied attribute by attribute: backend modules cannot be
        copied, and the views must stay views of the copy's own buffers. The copy starts
        its Dropout stream afresh from the seed and has no recorded forward pass.
        """
        twin = self.copy()
        memo[id(self)] = twin
        return twin

    def __getstate__(self):
        """Pickling stores the architecture, the arrays and where the model lives."""
        return {"config": self.config(), "arrays": self.arrays(), "backend": self.backend.name,
                "device": self.backend.device_name}

    def __setstate__(self, state):
        try:
            backend = Backend(state["backend"], state["device"])
        except NnkernelError as err:  # e.g. pickled on a GPU machine, unpickled on a CPU one
            warnings.warn(f"unpickling a {state['backend']} model onto numpy: {err}",
                          RuntimeWarning, stacklevel=2)
            backend = Backend("numpy")
        twin = type(self).from_config(state["config"], backend=backend)
        twin.load_arrays(state["arrays"])
        self.__dict__.update(twin.__dict__)

    def member(self, i: int) -> ModelData:
        """Member i of an ensemble as an ordinary model (a copy)."""
        if self.ensemble is None:
            raise ConfigError("member() needs an ensemble model (Sequential(..., ensemble=E))")
        if not -self.ensemble <= i < self.ensemble:
            raise IndexError(f"member {i} out of range for an ensemble of {self.ensemble}")
        cfg = {**self.config(), "ensemble": None}
        model = type(self).from_config(cfg, backend=self.backend)
        model.load_arrays({k: v[i] for k, v in self.arrays().items()})
        return model

    @classmethod
    def stack(cls, models: list) -> ModelData:
        """An ensemble whose member i is models[i] (same architecture, backend and dtype)."""
        if not models:
            raise ConfigError("stack() needs at least one model")
        first = models[0]
        cfgs = [m.config()["layers"] for m in models]
        if any(c != cfgs[0] for c in cfgs):
            raise ConfigError("stack() needs models of one architecture")
        places = {(m.backend.name, m.backend.device_name, dtype_name(m.dtype)) for m in models}
        if len(places) > 1:
            raise ConfigError(f"stack() needs models of one backend, device and dtype; got "
                              f"{', '.join(sorted(' '.join(p) for p in places))}")
        ens = cls.from_config({**first.config(), "ensemble": len(models)},
                                     backend=first.backend)
        host = [m.arrays() for m in models]
        ens.load_arrays({k: np.stack([h[k] for h in host]) for k in host[0]})
        return ens



def layers_from_config(cfg: dict) -> list:
    """The layer objects of a model config, shared and tied references resolved."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise ConfigError("a model config is a JSON object with a 'layers' list")
    built: dict = {}  # path -> layer object, in forward order
    return [_layer_of(c, str(i), built) for i, c in enumerate(cfg["layers"])]


def _path_text(path: str):
    return int(path) if "." not in path else path


def _position_config(pos, the_plan) -> dict:
    if not pos.owns:
        return {"type": "Shared", "same_as": _path_text(pos.owner.path)}
    cfg = pos.layer.config()
    if pos.children:
        cfg["layers"] = [_position_config(child, the_plan) for child in pos.children]
    ties = pos.layer.ties
    if ties:
        (source, _), = ties.values()  # one tied layer per tying layer
        cfg["tied_to"] = _path_text(find_path(the_plan, source))
    return cfg


def _layer_of(c, path: str, built: dict):
    """The layer object of one position's config, resolving shared and tied references to
    layers built before it (``built``: path -> layer)."""
    if not isinstance(c, dict):
        raise ConfigError(f"layer {path}: a layer config is a JSON object, got "
                          f"{type(c).__name__}")
    c = dict(c)
    if c.get("type") == "Shared":
        ref = str(c.get("same_as"))
        if ref not in built:
            raise ConfigError(f"layer {path} shares the arrays of layer {c.get('same_as')!r}, "
                              f"which does not come before it")
        layer = built[ref]
        built[path] = layer
        return layer
    if "layers" in c:
        if not isinstance(c["layers"], list):
            raise ConfigError(f"layer {path}: 'layers' must be a list of layer configs")
        built[path] = None  # its place in forward order comes before its own layers
        c["layers"] = [_layer_of(child, f"{path}.{j}", built)
                       for j, child in enumerate(c["layers"])]
    if "tied_to" in c:
        ref = str(c["tied_to"])
        if built.get(ref) is None:
            raise ConfigError(f"layer {path} ties to layer {c['tied_to']!r}, which does not "
                              f"come before it")
        c["tied_to"] = built[ref]
    layer = layer_from_config(c)
    built[path] = layer
    return layer
