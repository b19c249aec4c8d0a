"""Dense layers, activations, dropout and normalisation: each a forward and its backprop.

Every layer here follows `nnkernel.nn.layer.Layer`: ``forward(ctx, x, train)``
returns the output and the ``backprop`` closure that undoes it, with the
formulas written beside the lines that compute them.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import in_range
from ..errors import ConfigError, ShapeError
from . import activations as _act
from .init import default_init, get_initializer
from .layer import (  # noqa: F401 - Layer and its helpers, where nnkernel 0.1 had them
    LAYERS,
    Layer,
    layer_from_config,
    pass_through,
    per_member,
    positive_int,
    register_layer,
    row_axes,
    rows,
    stacked,
)


class Dense(Layer):
    """z = x W + b, a = g(z).  W: (n_in, n_out), b: (n_out,).

    Backward, with δ = da ⊙ g′(z):  dW = xᵀ δ,  db = Σ_rows δ,  dx = δ Wᵀ.
    """

    param_names = ("W", "b")

    def __init__(self, n_in: int, n_out: int, activation=None, init=None):
        self.n_in, self.n_out = positive_int("Dense n_in", n_in), positive_int("Dense n_out",
                                                                               n_out)
        self.activation = _act.get_activation(activation)
        self.init = init
        if init is not None:
            get_initializer(init)

    def input_shape(self):
        return (self.n_in,)

    def output_shape(self, shape):
        if shape and shape[-1] is not None and shape[-1] != self.n_in:
            raise ShapeError(f"Dense({self.n_in}, {self.n_out}) expects {self.n_in} input "
                             f"features, but the layer before it gives {shape[-1]}")
        return (*shape[:-1], self.n_out) if shape else (self.n_out,)

    def param_shapes(self):
        return {"W": (self.n_in, self.n_out), "b": (self.n_out,)}

    def init_params(self, rng, ensemble=None, next_layer=None):
        act = self.activation.name
        if act == "identity" and isinstance(next_layer, ActivationLayer):
            act = next_layer.activation.name  # Dense followed by ReLU(): He init
        init = get_initializer(self.init or default_init(act))
        W = init(stacked((self.n_in, self.n_out), ensemble), self.n_in, self.n_out, rng)
        return {"W": W, "b": np.zeros(stacked((self.n_out,), ensemble))}

    def forward(self, ctx, x, train):
        W, b = ctx.params["W"], ctx.params["b"]
        g = self.activation
        linear = g.name == "identity"
        if g.name in ctx.k.fused_activations:  # a twin (CuPy) fuses bias + g into one kernel
            z, a = None, ctx.k.affine_act(x, W, b, g.name)
        else:
            z = ctx.k.affine(x, W, b)           # z = xW + b
            a = z if linear else ctx.k.activation(g, z)  # a = g(z)
            z = z if g.needs_z else None

        def backprop(da, need_dx=True):
            dz = da if linear else ctx.k.activation_backward(g, z, a, da)  # δ = da ⊙ g′(z)
            into = ctx.grads.out("W", "b")      # the store's gradient buffers, or None
            dx, dW, db = ctx.k.affine_backward(x, W, dz, need_dx, into)
            if into is None:                    # (a kernel given buffers filled them)
                ctx.grads.add("W", dW)          # dW = xᵀδ
                ctx.grads.add("b", db)          # db = Σ_rows δ
            return dx                           # dx = δWᵀ

        return a, backprop

    def config(self):
        return {"type": "Dense", "n_in": self.n_in, "n_out": self.n_out,
                **activation_config(self.activation),
                "init": self.init if isinstance(self.init, str) or self.init is None else None}

    @classmethod
    def from_config(cls, cfg):
        cfg = dict(cfg)
        act = _act.get_activation(cfg.pop("activation", None))
        alpha = cfg.pop("alpha", None)
        if alpha is not None:
            act = type(act)(alpha)
        return cls(cfg.pop("n_in"), cfg.pop("n_out"), activation=act, init=cfg.pop("init", None),
                   **cfg)


class ActivationLayer(Layer):
    """A layer that applies an element-wise (or softmax) activation."""

    activation: _act.Activation

    def forward(self, ctx, x, train):
        g = self.activation
        a = ctx.k.activation(g, x)  # a = g(x)
        z = x if g.needs_z else None

        def backprop(da, need_dx=True):
            return ctx.k.activation_backward(g, z, a, da)

        return a, backprop

    def config(self):
        return activation_config(self.activation) | {"type": type(self).__name__}

    @classmethod
    def from_config(cls, cfg):
        return cls(**{k: v for k, v in cfg.items() if k != "activation"})

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items()
                         if k not in ("type", "activation"))
        return f"{type(self).__name__}({args})"


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
        self.p = in_range("Dropout probability", p, 0.0, 1.0, hi_open=True)

    def forward(self, ctx, x, train):
        if not train or self.p == 0.0:
            return x, pass_through
        x = per_member(ctx, x)
        y, mask = ctx.k.dropout(x, self.p, ctx.random)  # one fused launch on the CuPy twin

        def backprop(dy, need_dx=True):
            return dy * mask

        return y, backprop

    def config(self):
        return {"type": "Dropout", "p": self.p}


class _Normalization(Layer):
    """Shared parts of BatchNorm and LayerNorm: y = γ x̂ + β with x̂ = (x − μ)/σ."""

    param_names = ("gamma", "beta")

    def __init__(self, n: int, eps: float = 1e-5):
        self.n = positive_int(f"{type(self).__name__} n", n)
        if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0
                and math.isfinite(eps)):
            raise ConfigError(f"{type(self).__name__} eps must be a positive number, got {eps!r}")
        self.eps = float(eps)

    def input_shape(self):
        return (self.n,)

    def output_shape(self, shape):
        if shape and shape[-1] is not None and shape[-1] != self.n:
            raise ShapeError(f"{type(self).__name__}({self.n}) receives {shape[-1]} features "
                             f"from the layer before it")
        return shape or (self.n,)

    def param_shapes(self):
        return {"gamma": (self.n,), "beta": (self.n,)}

    def init_params(self, rng, ensemble=None, next_layer=None):
        shape = stacked((self.n,), ensemble)
        return {"gamma": np.ones(shape), "beta": np.zeros(shape)}

    def _affine_out(self, ctx, xhat):
        return rows(ctx, ctx.params["gamma"]) * xhat + rows(ctx, ctx.params["beta"])

    def _param_grads(self, ctx, dy, xhat):
        """dγ = Σ dy ⊙ x̂, dβ = Σ dy over rows; returns dx̂ = dy ⊙ γ."""
        xp = ctx.xp
        axes = row_axes(ctx, dy)
        ctx.grads.add("gamma", xp.sum(dy * xhat, axis=axes))
        ctx.grads.add("beta", xp.sum(dy, axis=axes))
        return dy * rows(ctx, ctx.params["gamma"])

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
        self.momentum = in_range("BatchNorm momentum", momentum, 0.0, 1.0)

    def state_shapes(self):
        return {"running_mean": (self.n,), "running_var": (self.n,)}

    def init_state(self, ensemble=None):
        shape = stacked((self.n,), ensemble)
        return {"running_mean": np.zeros(shape), "running_var": np.ones(shape)}

    def forward(self, ctx, x, train):
        x = per_member(ctx, x)  # a shared (N, D) input: statistics still per member
        return batch_norm(self, ctx, x, train, row_axes(ctx, x), lambda v: rows(ctx, v),
                          "rows per batch")

    def config(self):
        return super().config() | {"momentum": self.momentum}


def batch_norm(layer, ctx, x, train, axes, per_feature, unit: str):
    """y = γ x̂ + β with x̂ = (x − μ)/√(σ² + ε): μ and σ² over ``axes`` (the batch rows, and
    for images the pixels) in training, the running averages otherwise; ``per_feature``
    shapes a per-feature vector to broadcast against x. BatchNorm and BatchNorm2D both.

    Training updates the running averages (momentum, unbiased variance, as torch)."""
    xp = ctx.xp
    if train:
        count = math.prod(x.shape[a] for a in axes)
        if count < 2:
            raise ShapeError(f"{type(layer).__name__} needs at least 2 {unit} in training")
        mean = xp.mean(x, axis=axes)
        var = xp.var(x, axis=axes)
        m = layer.momentum
        unbiased = var * (count / (count - 1))
        ctx.state.update({
            "running_mean": (1.0 - m) * ctx.state["running_mean"] + m * mean,
            "running_var": (1.0 - m) * ctx.state["running_var"] + m * unbiased,
        })
    else:
        mean, var = ctx.state["running_mean"], ctx.state["running_var"]
    inv_std = per_feature(1.0 / xp.sqrt(var + layer.eps))
    xhat = (x - per_feature(mean)) * inv_std
    gamma = per_feature(ctx.params["gamma"])

    def backprop(dy, need_dx=True):
        ctx.grads.add("gamma", xp.sum(dy * xhat, axis=axes))  # dγ = Σ dy ⊙ x̂
        ctx.grads.add("beta", xp.sum(dy, axis=axes))          # dβ = Σ dy
        dxhat = dy * gamma
        if not train:  # the statistics were constants
            return dxhat * inv_std
        # dx = (1/σ)(dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂)), the means over ``axes``
        mean_d = xp.mean(dxhat, axis=axes, keepdims=True)
        mean_dx = xp.mean(dxhat * xhat, axis=axes, keepdims=True)
        return inv_std * (dxhat - mean_d - xhat * mean_dx)

    return gamma * xhat + per_feature(ctx.params["beta"]), backprop


class LayerNorm(_Normalization):
    """Normalise each row over its features; the same in training and evaluation."""

    def forward(self, ctx, x, train):
        gamma, beta = rows(ctx, ctx.params["gamma"]), rows(ctx, ctx.params["beta"])
        y, saved = ctx.k.layer_norm(x, gamma, beta, self.eps)  # y = γ (x − μ)/σ + β

        def backprop(dy, need_dx=True):
            # dx = (1/σ)(dx̂ − mean(dx̂) − x̂ · mean(dx̂ ⊙ x̂)), dx̂ = dy ⊙ γ (the kernel's)
            dx, dgamma, dbeta = ctx.k.layer_norm_backward(dy, gamma, saved, row_axes(ctx, dy))
            ctx.grads.add("gamma", dgamma)  # dγ = Σ_rows dy ⊙ x̂
            ctx.grads.add("beta", dbeta)    # dβ = Σ_rows dy
            return dx

        return y, backprop


def activation_config(activation) -> dict:
    cfg = {"activation": activation.name}
    if hasattr(activation, "alpha"):
        cfg["alpha"] = activation.alpha
    return cfg


for _cls in (Dense, Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Swish, GELU, Softmax,
             Dropout, BatchNorm, LayerNorm):
    register_layer(_cls)
