"""Sequential: a stack of layers, its parameters, and the chain rule through them.

    y  = layer_L(... layer_1(x))                     forward
    dx = layer_1.backward(... layer_L.backward(dy))  backward, filling model.grads

With ``ensemble=E`` the model is E independent networks evaluated as one: every
parameter gets a leading axis of length E, inputs are (N, D) shared by all
members or (E, N, D), outputs are (E, N, K), and each Dense layer is one batched
matrix product over the members.
"""

from __future__ import annotations

import operator

import numpy as np

from ..backend import Backend, dtype_name, to_numpy
from ..errors import ConfigError, DTypeError, ShapeError
from ..kernels import kernels_for
from .layers import Layer, layer_from_config


class Parameters(dict):
    """The model's parameters by key ("0.W", "0.b", ...).

    Assigning an entry converts an array-like to the model's backend, dtype and
    device and refuses a wrong shape; an array already in the right form is
    stored as is, which is what optimizers do every step.
    """

    def __init__(self, model: Sequential, arrays: dict):
        super().__init__()
        self._model = model
        for key, value in arrays.items():
            super().__setitem__(key, value)

    @property
    def ensemble(self) -> int | None:
        """The model's number of members (None for one model): optimizers clip per member."""
        return self._model.ensemble

    def __setitem__(self, key, value):
        if key not in self:
            raise KeyError(f"no parameter {key!r}; parameters are: {', '.join(self)}")
        old = dict.__getitem__(self, key)
        if (type(value) is not type(old) or value.shape != old.shape
                or value.dtype != old.dtype):
            value = self._model._convert(value, old.shape, f"parameter {key!r}")
        else:  # the right form, but maybe on another device: refuse, never copy
            self._model.backend.check(value, f"parameter {key!r}")
        dict.__setitem__(self, key, value)


class Gradients(dict):
    """``model.grads``: parameter key -> dL/dparameter, in parameter order.

    On backends that update in place (NumPy) every entry is a view of ``flat``,
    one buffer laid out in parameter order: optimizers update from it without
    first concatenating the gradients. The next backward overwrites it, as
    PyTorch reuses ``.grad``: copy an entry to keep it.
    """

    def __init__(self, items=(), flat=None, views=()):
        super().__init__(items)
        self._flat, self._views = flat, views  # views: the entries as made, in order

    @property
    def flat(self):
        """The buffer holding every entry in order; None once an entry is replaced or removed."""
        if self._flat is None or len(self) != len(self._views) or not all(
                map(operator.is_, self.values(), self._views)):
            return None
        return self._flat


class Sequential:
    """A feed-forward network: ``Sequential(Dense(784, 256), ReLU(), Dense(256, 10))``.

    Parameters are initialised from ``seed`` on the host, so the same seed gives
    the same weights on every backend; ``backend`` is "numpy" (default), "cupy",
    "torch", "array_api_strict" or a namespace module, ``device`` a device of it.
    """

    def __init__(self, *layers: Layer, seed: int = 0, dtype="float32", backend="numpy",
                 device=None, ensemble: int | None = None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ConfigError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"layer {i} is {type(layer).__name__}, not an nnkernel layer")
        if ensemble is not None and int(ensemble) < 1:
            raise ConfigError(f"ensemble must be a positive number of members, got {ensemble}")
        self.layers = list(layers)
        self.seed = int(seed)
        self.ensemble = None if ensemble is None else int(ensemble)
        self._bind(Backend(backend, device), dtype_name(dtype) if not isinstance(dtype, str)
                   else dtype)
        self.n_in, self.n_out = self._build()
        self.params, self.state = self._initial_arrays(np.random.default_rng(self.seed))
        self.grads: dict = Gradients()

    # -- construction -----------------------------------------------------------------
    def _bind(self, backend: Backend, dtype: str):
        self.backend = backend
        self.xp = backend.xp
        self.k = kernels_for(backend)
        self.dtype = backend.dtype(dtype)
        self.random = backend.random(self.seed)
        self._grad_flat, self._grad_views = None, {}  # built by the first backward
        self._grad_order: tuple = ()  # the views in parameter order

    def _build(self):
        n = None
        n_in = next((layer.n_in for layer in self.layers if hasattr(layer, "n_in")), None)
        if n_in is None:
            raise ConfigError("the model needs a Dense layer to know its input width")
        for i, layer in enumerate(self.layers):
            n = layer.build(i, n, self.ensemble)
        return n_in, n

    def _initial_arrays(self, rng):
        params, state = {}, {}
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            for name, value in layer.init_params(rng, nxt).items():
                params[layer.keys[name]] = self.backend.asarray(value, dtype=self.dtype)
            for name, value in layer.init_state().items():
                state[layer.keys[name]] = self.backend.asarray(value, dtype=self.dtype)
        return Parameters(self, params), state

    @property
    def device(self):
        return self.backend.device

    @property
    def stochastic(self) -> bool:
        return any(layer.stochastic for layer in self.layers)

    def reseed(self, seed) -> None:
        """Restart the random stream of Dropout masks (an int or a tuple like (seed, epoch))."""
        self.random = self.backend.random(seed)

    # -- the chain rule ------------------------------------------------------------------
    def forward(self, x, train: bool = False):
        """y = f(x). With train=True, Dropout draws masks and BatchNorm uses batch statistics."""
        x = self._check_input(x)
        for layer in self.layers:
            x = layer.forward(self, x, train)
        return x

    __call__ = forward

    def backward(self, dy, input_grad: bool = True):
        """Backpropagate dL/dy through the last forward; fills ``grads``, returns dL/dx.

        With input_grad=False the first layer skips dx (its matmul is a fifth of
        the step's work) and None is returned.
        """
        if not hasattr(self.layers[-1], "cache"):
            raise RuntimeError("backward() needs a forward() first")
        self.backend.check(dy, "dy")
        out_shape = self._last_out_shape
        if tuple(dy.shape) != out_shape:
            raise ShapeError(f"dy has shape {tuple(dy.shape)}, but the last forward returned "
                             f"{out_shape}")
        if self.k.in_place and len(self._grad_views) != len(self.params):
            self._build_gradient_buffer()
        grads: dict = {}
        self.grads = grads  # layers fill it
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(self, dy, need_dx=input_grad or i > 0)
        if dy is not None and self.ensemble is not None and self._shared_input:
            dy = self.xp.sum(dy, axis=0)  # one input feeds every member
        self.grads = self._gather_gradients(grads)
        return dy if input_grad else None

    def grad_out(self, key):
        """Where a layer may write the gradient of params[key] in place, or None."""
        return self._grad_views.get(key)

    def _build_gradient_buffer(self):
        xp, sizes = self.xp, [int(np.prod(p.shape)) for p in self.params.values()]
        self._grad_flat = flat = xp.zeros(sum(sizes), dtype=self.dtype, device=self.device)
        self._grad_views, start = {}, 0
        for (key, p), n in zip(self.params.items(), sizes, strict=True):
            self._grad_views[key] = xp.reshape(flat[start:start + n], p.shape)
            start += n
        self._grad_order = tuple(self._grad_views.values())

    def _gather_gradients(self, grads) -> Gradients:
        """The layers' gradients in parameter order; on in-place backends, in the flat buffer."""
        views = self._grad_views
        if not views:
            return Gradients({k: grads[k] for k in self.params if k in grads})
        for key, g in grads.items():
            if g is not views[key]:  # layers without an in-place kernel (BatchNorm, LayerNorm)
                views[key][...] = g
        if len(grads) == len(views):
            return Gradients(views, self._grad_flat, self._grad_order)
        return Gradients({k: views[k] for k in self.params if k in grads})

    def _check_input(self, x):
        self.backend.check(x, "input x")
        if x.dtype != self.dtype and not _is_float(x):
            raise DTypeError(f"input x has dtype {dtype_name(x.dtype)}; nnkernel models take "
                             f"floating-point inputs (convert with xp.astype(x, xp.float32))")
        if x.dtype != self.dtype:
            x = self.xp.astype(x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.n_in:
            raise ShapeError(f"input x has shape {tuple(x.shape)}, but the model expects "
                             f"(..., {self.n_in}) features")
        if self.ensemble is not None:
            if x.ndim == 3 and x.shape[0] != self.ensemble:
                raise ShapeError(f"input x has shape {tuple(x.shape)}: a per-member input needs "
                                 f"a leading axis of {self.ensemble} members")
            if x.ndim not in (2, 3):
                raise ShapeError(f"an ensemble takes (N, {self.n_in}) or "
                                 f"({self.ensemble}, N, {self.n_in}) inputs, got {tuple(x.shape)}")
            self._shared_input = x.ndim == 2
        lead = (self.ensemble,) if self.ensemble is not None and x.ndim == 2 else ()
        self._last_out_shape = lead + tuple(x.shape[:-1]) + (self.n_out,)
        return x

    def predict(self, x, batch_size: int | None = None):
        """Outputs in evaluation mode, computed in batches of ``batch_size`` rows."""
        n = x.shape[-2] if x.ndim >= 2 else 1
        if batch_size is None or batch_size >= n:
            return self.forward(x, train=False)
        parts = [self.forward(x[..., i:min(i + batch_size, n), :], train=False)
                 for i in range(0, n, batch_size)]
        return self.xp.concat(parts, axis=-2)

    # -- moving and copying -------------------------------------------------------------
    def _convert(self, value, shape, what):
        arr = self.backend.asarray(value, dtype=self.dtype, copy=True)
        if tuple(arr.shape) != tuple(shape):
            raise ShapeError(f"{what} must have shape {tuple(shape)}, got {tuple(arr.shape)}")
        return arr

    def to(self, backend=None, device=None, dtype=None) -> Sequential:
        """Move parameters and state to another backend, device or dtype, in place; returns self."""
        name = self.backend.name if backend is None else backend
        dt = dtype_name(self.dtype) if dtype is None else dtype
        arrays = {k: to_numpy(v) for k, v in self.params.items()}
        state = {k: to_numpy(v) for k, v in self.state.items()}
        self._bind(Backend(name, device), dt)
        self.params = Parameters(self, {k: self.backend.asarray(v, dtype=self.dtype)
                                        for k, v in arrays.items()})
        self.state = {k: self.backend.asarray(v, dtype=self.dtype) for k, v in state.items()}
        self.grads = Gradients()
        return self

    def config(self) -> dict:
        """The architecture, JSON-ready: ``Sequential.from_config(model.config())`` rebuilds it."""
        return {"layers": [layer.config() for layer in self.layers], "seed": self.seed,
                "dtype": dtype_name(self.dtype), "ensemble": self.ensemble}

    @classmethod
    def from_config(cls, cfg: dict, backend="numpy", device=None, dtype=None) -> Sequential:
        layers = [layer_from_config(c) for c in cfg["layers"]]
        return cls(*layers, seed=cfg.get("seed", 0), dtype=dtype or cfg.get("dtype", "float32"),
                   backend=backend, device=device, ensemble=cfg.get("ensemble"))

    def arrays(self) -> dict[str, np.ndarray]:
        """Parameters and state as host NumPy arrays (for checkpoints)."""
        # Copies: NumPy parameters are updated in place, and a snapshot must not move.
        return {k: np.array(to_numpy(v)) for k, v in {**self.params, **self.state}.items()}

    def load_arrays(self, arrays: dict) -> None:
        """Set parameters and state from `arrays()` output; shapes are checked."""
        missing = [k for k in list(self.params) + list(self.state) if k not in arrays]
        if missing:
            raise ShapeError(f"arrays lack {', '.join(missing)}")
        for k in self.params:  # copied, so the caller's arrays never alias live parameters
            self.params[k] = self._convert(arrays[k], self.params[k].shape, f"parameter {k!r}")
        for k in self.state:
            self.state[k] = self._convert(arrays[k], self.state[k].shape, f"state {k!r}")

    def __deepcopy__(self, memo) -> Sequential:
        """``copy.deepcopy(model)``: the same architecture, backend, device, dtype and arrays.

        Rebuilt rather than copied attribute by attribute: backend modules cannot be
        copied, and the gradient buffer's views must stay views of one buffer. The copy
        starts its Dropout stream afresh from the seed and has no cached forward pass.
        """
        twin = Sequential.from_config(self.config(), backend=self.backend.name,
                                      device=self.device, dtype=dtype_name(self.dtype))
        twin.load_arrays(self.arrays())
        memo[id(self)] = twin
        return twin

    def member(self, i: int) -> Sequential:
        """Member i of an ensemble as an ordinary model (a copy)."""
        if self.ensemble is None:
            raise ConfigError("member() needs an ensemble model (Sequential(..., ensemble=E))")
        if not -self.ensemble <= i < self.ensemble:
            raise IndexError(f"member {i} out of range for an ensemble of {self.ensemble}")
        model = Sequential(*_copy_layers(self.layers), seed=self.seed, dtype=self.dtype,
                           backend=self.backend.name, device=self.device)
        model.load_arrays({k: v[i] for k, v in self.arrays().items()})
        return model

    @classmethod
    def stack(cls, models: list[Sequential]) -> Sequential:
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
        ens = Sequential(*_copy_layers(first.layers), seed=first.seed, dtype=first.dtype,
                         backend=first.backend.name, device=first.device, ensemble=len(models))
        host = [m.arrays() for m in models]
        ens.load_arrays({k: np.stack([h[k] for h in host]) for k in host[0]})
        return ens

    def num_parameters(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.params.values())

    def __repr__(self):
        lines = [f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers)]
        ens = f", ensemble={self.ensemble}" if self.ensemble else ""
        return ("Sequential(\n" + "\n".join(lines) + f"\n) on {self.backend.name} "
                f"({self.backend.device_name}), {dtype_name(self.dtype)}{ens}, "
                f"{self.num_parameters():,} parameters")


def _is_float(x) -> bool:
    return dtype_name(x.dtype) in ("float32", "float64", "float16")


def _copy_layers(layers):
    """Fresh, unbound layers of the same configuration (no cached activations)."""
    return [layer_from_config(layer.config()) for layer in layers]
