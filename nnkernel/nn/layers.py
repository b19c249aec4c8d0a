"""Layers: a forward that keeps what its backward needs, a backward that returns dX.

A layer owns no arrays. Its parameters live in the model's ``params`` dict under
"<layer index>.<name>" (the layer knows its keys after `build`), its gradients
go to ``model.grads`` under the same keys, and non-learned buffers (BatchNorm's
running statistics) to ``model.state``. Forward and backward receive the model
as ``net`` and read ``net.xp`` (the Array API namespace), ``net.k`` (the kernels)
and those dicts.

For an ensemble of E models (``net.ensemble = E``) every parameter has a leading
axis of length E and activations are (E, N, features); per-feature vectors
(b, gamma, beta) broadcast over the rows through `_rows`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError
from . import activations as _act
from .init import default_init, get_initializer


class Layer:
    param_names: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()
    stochastic = False  # draws random numbers in training (Dropout)

    def build(self, index: int, n_in: int | None, ensemble: int | None) -> int | None:
        """Bind to a position in a model; return the output width (None: unchanged)."""
        self.index = index
        self.ensemble = ensemble
        self.keys = {name: f"{index}.{name}" for name in self.param_names + self.state_names}
        return n_in

    def init_params(self, rng, next_layer=None) -> dict[str, np.ndarray]:
        return {}

    def init_state(self) -> dict[str, np.ndarray]:
        return {}

    def forward(self, net, x, train: bool):
        raise NotImplementedError

    def backward(self, net, dy, need_dx: bool = True):
        raise NotImplementedError

    def config(self) -> dict:
        """The constructor arguments, for checkpoints (`layer_from_config` inverts it)."""
        return {"type": type(self).__name__}

    def __repr__(self):
        hidden = {"type", "activation"} if isinstance(self, ActivationLayer) else {"type"}
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items()
                         if k not in hidden and v is not None and v != "identity")
        return f"{type(self).__name__}({args})"

    # -- helpers for ensembles ------------------------------------------------------
    def _stacked(self, shape):
        return shape if self.ensemble is None else (self.ensemble, *shape)

    def _rows(self, xp, v):
        """A per-feature vector, shaped to broadcast over rows: (E, D) -> (E, 1, D)."""
        return v if self.ensemble is None else xp.expand_dims(v, axis=-2)

    def _row_axes(self, x) -> tuple[int, ...]:
        """The axes a per-feature gradient sums over: all but the member and feature axes."""
        start = 0 if self.ensemble is None else 1
        return tuple(range(start, x.ndim - 1))

    def _per_member(self, xp, x):
        """Give a shared (N, D) input its member axis, so each member gets its own draw."""
        if self.ensemble is not None and x.ndim == 2:
            return xp.broadcast_to(x, (self.ensemble, *x.shape))
        return x


class Dense(Layer):
    """z = x W + b, a = g(z).  W: (n_in, n_out), b: (n_out,).

    Backward, with δ = da ⊙ g′(z):  dW = xᵀ δ,  db = Σ_rows δ,  dx = δ Wᵀ.
    """

    param_names = ("W", "b")

    def __init__(self, n_in: int, n_out: int, activation=None, init=None):
        if int(n_in) <= 0 or int(n_out) <= 0:
            raise ConfigError(f"Dense needs positive sizes, got n_in={n_in}, n_out={n_out}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation = _act.get_activation(activation)
        self.init = init

    def build(self, index, n_in, ensemble):
        super().build(index, n_in, ensemble)
        if n_in is not None and n_in != self.n_in:
            raise ShapeError(f"layer {index} Dense expects {self.n_in} inputs, "
                             f"but the layer before it gives {n_in}")
        return self.n_out

    def init_params(self, rng, next_layer=None):
        act = self.activation.name
        if act == "identity" and isinstance(next_layer, ActivationLayer):
            act = next_layer.activation.name  # Dense followed by ReLU(): He init
        init = get_initializer(self.init or default_init(act))
        W = init(self._stacked((self.n_in, self.n_out)), self.n_in, self.n_out, rng)
        return {"W": W, "b": np.zeros(self._stacked((self.n_out,)))}

    def forward(self, net, x, train):
        W, b = net.params[self.keys["W"]], net.params[self.keys["b"]]
        if self.activation.name in net.k.fused_activations:
            # a twin (CuPy) fuses bias + g into one kernel; these g need only a backward
            a = net.k.affine_act(x, W, b, self.activation.name)
            self.cache = (x, None, a)
            return a
        z = net.k.affine(x, W, b)                 # z = xW + b
        a = self.activation.forward(net.xp, z)    # a = g(z)
        self.cache = (x, z if self.activation.needs_z else None, a)
        return a

    def backward(self, net, da, need_dx=True):
        x, z, a = self.cache
        dz = self.activation.backward(net.xp, z, a, da)  # δ = da ⊙ g′(z)
        W = net.params[self.keys["W"]]
        out = (net.grad_out(self.keys["W"]), net.grad_out(self.keys["b"]))
        dx, dW, db = net.k.affine_backward(x, W, dz, need_dx, out)  # dW = xᵀδ, db = Σδ, dx = δWᵀ
        net.grads[self.keys["W"]] = dW
        net.grads[self.keys["b"]] = db
        return dx

    def config(self):
        return {"type": "Dense", "n_in": self.n_in, "n_out": self.n_out,
                **_activation_config(self.activation),
                "init": self.init if isinstance(self.init, str) or self.init is None else None}


class ActivationLayer(Layer):
    """A layer that applies an element-wise (or softmax) activation."""

    activation: _act.Activation

    def forward(self, net, x, train):
        a = self.activation.forward(net.xp, x)
        self.cache = (x if self.activation.needs_z else None, a)
        return a

    def backward(self, net, da, need_dx=True):
        z, a = self.cache
        return self.activation.backward(net.xp, z, a, da)

    def config(self):
        return _activation_config(self.activation) | {"type": type(self).__name__}


def _activation_layer(activation_cls, doc):
    """Define `class <Name>(ActivationLayer)` for one activation; keeps its parameters."""

    def __init__(self, *args, **kwargs):
        self.activation = activation_cls(*args, **kwargs)

    return type(activation_cls.__name__, (ActivationLayer,),
                {"__init__": __init__, "__doc__": doc, "__module__": __name__})


Identity = _activation_layer(_act.Identity, "a = z")
Sigmoid = _activation_layer(_act.Sigmoid, "a = 1 / (1 + e^−z)")
Tanh = _activation_layer(_act.Tanh, "a = tanh z")
ReLU = _activation_layer(_act.ReLU, "a = max(z, 0)")
LeakyReLU = _activation_layer(_act.LeakyReLU, "a = z if z > 0 else αz  (alpha=0.01)")
ELU = _activation_layer(_act.ELU, "a = z if z > 0 else α(e^z − 1)  (alpha=1.0)")
Swish = _activation_layer(_act.Swish, "a = z σ(z), also called SiLU")
SiLU = Swish
GELU = _activation_layer(_act.GELU, "a = ½ z (1 + tanh(√(2/π)(z + 0.044715 z³)))")
Softmax = _activation_layer(_act.Softmax, "a = e^z / Σ e^z over the last axis")


class Dropout(Layer):
    """Inverted dropout: in training keep each unit with probability 1 − p and scale by 1/(1 − p).

    The identity when not training, so evaluation needs no rescaling.
    """

    stochastic = True

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) < 1.0:
            raise ConfigError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, net, x, train):
        if not train or self.p == 0.0:
            self.mask = None
            return x
        xp = net.xp
        x = self._per_member(xp, x)
        keep = net.random.uniform(x.shape, x.dtype) >= self.p
        self.mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - self.p))
        return x * self.mask

    def backward(self, net, dy, need_dx=True):
        return dy if self.mask is None else dy * self.mask

    def config(self):
        return {"type": "Dropout", "p": self.p}


class _Normalization(Layer):
    """Shared parts of BatchNorm and LayerNorm: y = γ x̂ + β with x̂ = (x − μ)/σ."""

    param_names = ("gamma", "beta")

    def __init__(self, n: int, eps: float = 1e-5):
        self.n, self.eps = int(n), float(eps)

    def build(self, index, n_in, ensemble):
        super().build(index, n_in, ensemble)
        if n_in is not None and n_in != self.n:
            raise ShapeError(f"layer {index} {type(self).__name__}({self.n}) receives "
                             f"{n_in} features from the layer before it")
        return self.n

    def init_params(self, rng, next_layer=None):
        shape = self._stacked((self.n,))
        return {"gamma": np.ones(shape), "beta": np.zeros(shape)}

    def _affine_out(self, net, xhat):
        xp = net.xp
        gamma = self._rows(xp, net.params[self.keys["gamma"]])
        beta = self._rows(xp, net.params[self.keys["beta"]])
        return gamma * xhat + beta

    def _param_grads(self, net, dy, xhat):
        """dγ = Σ dy ⊙ x̂, dβ = Σ dy over rows; returns dx̂ = dy ⊙ γ."""
        xp = net.xp
        axes = self._row_axes(dy)
        net.grads[self.keys["gamma"]] = xp.sum(dy * xhat, axis=axes)
        net.grads[self.keys["beta"]] = xp.sum(dy, axis=axes)
        return dy * self._rows(xp, net.params[self.keys["gamma"]])

    def config(self):
        return {"type": type(self).__name__, "n": self.n, "eps": self.eps}


class BatchNorm(_Normalization):
    """Normalise each feature over the batch (per member in an ensemble).

    Training uses the batch mean and biased variance and updates running
    averages (momentum 0.1, unbiased variance, as torch); evaluation uses the
    running averages.
    """

    state_names = ("running_mean", "running_var")

    def __init__(self, n: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(n, eps)
        self.momentum = float(momentum)

    def init_state(self):
        shape = self._stacked((self.n,))
        return {"running_mean": np.zeros(shape), "running_var": np.ones(shape)}

    def forward(self, net, x, train):
        xp = net.xp
        x = self._per_member(xp, x)  # a shared (N, D) input: statistics still per member
        axes = self._row_axes(x)
        mean_key, var_key = self.keys["running_mean"], self.keys["running_var"]
        if train:
            rows = int(np.prod([x.shape[a] for a in axes]))
            if rows < 2:
                raise ShapeError("BatchNorm needs at least 2 rows per batch in training")
            mean = xp.mean(x, axis=axes)
            var = xp.var(x, axis=axes)
            m = self.momentum
            net.state[mean_key] = (1.0 - m) * net.state[mean_key] + m * mean
            net.state[var_key] = (1.0 - m) * net.state[var_key] + m * var * (rows / (rows - 1))
        else:
            mean, var = net.state[mean_key], net.state[var_key]
        inv_std = self._rows(xp, 1.0 / xp.sqrt(var + self.eps))
        xhat = (x - self._rows(xp, mean)) * inv_std
        self.cache = (xhat, inv_std, train)
        return self._affine_out(net, xhat)

    def backward(self, net, dy, need_dx=True):
        xhat, inv_std, train = self.cache
        dxhat = self._param_grads(net, dy, xhat)
        if not train:  # the statistics were constants
            return dxhat * inv_std
        xp = net.xp
        axes = self._row_axes(dy)
        # dx = (1/σ)(dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂)), the means over the batch rows
        mean_d = xp.mean(dxhat, axis=axes, keepdims=True)
        mean_dx = xp.mean(dxhat * xhat, axis=axes, keepdims=True)
        return inv_std * (dxhat - mean_d - xhat * mean_dx)

    def config(self):
        return super().config() | {"momentum": self.momentum}


class LayerNorm(_Normalization):
    """Normalise each row over its features; the same in training and evaluation."""

    def forward(self, net, x, train):
        xp = net.xp
        mean = xp.mean(x, axis=-1, keepdims=True)
        var = xp.var(x, axis=-1, keepdims=True)
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        xhat = (x - mean) * inv_std
        self.cache = (xhat, inv_std)
        return self._affine_out(net, xhat)

    def backward(self, net, dy, need_dx=True):
        xhat, inv_std = self.cache
        dxhat = self._param_grads(net, dy, xhat)
        xp = net.xp
        mean_d = xp.mean(dxhat, axis=-1, keepdims=True)
        mean_dx = xp.mean(dxhat * xhat, axis=-1, keepdims=True)
        return inv_std * (dxhat - mean_d - xhat * mean_dx)


def _activation_config(activation) -> dict:
    cfg = {"activation": activation.name}
    if hasattr(activation, "alpha"):
        cfg["alpha"] = activation.alpha
    return cfg


LAYERS = {cls.__name__: cls for cls in (Dense, Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU,
                                         Swish, GELU, Softmax, Dropout, BatchNorm, LayerNorm)}


def layer_from_config(cfg: dict) -> Layer:
    """Rebuild a layer from `Layer.config()` (used when loading checkpoints)."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    if kind not in LAYERS:
        raise ConfigError(f"unknown layer type {kind!r}; valid: {', '.join(sorted(LAYERS))}")
    if kind == "Dense":
        act = cfg.pop("activation")
        alpha = cfg.pop("alpha", None)
        act_obj = _act.get_activation(act)
        if alpha is not None:
            act_obj = type(act_obj)(alpha)
        return Dense(cfg["n_in"], cfg["n_out"], activation=act_obj, init=cfg.get("init"))
    if issubclass(LAYERS[kind], ActivationLayer):
        cfg.pop("activation", None)
    return LAYERS[kind](**cfg)
