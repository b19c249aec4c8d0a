"""Token input and output: `Embedding`, `PositionEmbedding` and the tied `TiedOutput`.

    tok = nk.Embedding(V, C)                 # ids (...) -> (..., C)
    model = nk.Sequential(tok, nk.PositionEmbedding(T_max, C), ..., nk.TiedOutput(tok))

`Embedding` is the only way integer ids enter a model (its first layer); its
backward is a scatter-add (`nnkernel.kernels.reference.embedding`): repeated ids
sum. `TiedOutput` is the output projection logits = x Wᵀ that uses the
embedding's W instead of a weight of its own (weight tying, as GPT-2): the model
keeps one W, and its gradient is the sum of both uses.

These layers refuse ensembles (a leading member axis E): the attention stack they
feed does not take one either.
"""

from __future__ import annotations

import math

import array_api_compat

from ..backend import backend_class_of, dtype_name, is_integer
from ..errors import ConfigError, DTypeError, ShapeError
from .layer import Layer, positive_int, register_layer


def no_ensemble(layer, ensemble) -> None:
    """Refuse an ensemble by name (called where a model draws the layer's parameters)."""
    if ensemble is not None:
        raise ConfigError(f"{type(layer).__name__} does not support ensembles (ensemble="
                          f"{ensemble}); build the members as separate models")


def positive_std(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@register_layer
class Embedding(Layer):
    """y = W[ids]: integer ids of any shape (...) -> (..., dim).  W: (num_embeddings, dim).

    Backward: dW[v] = Σ over the positions i with ids_i = v of dy_i (repeated ids sum);
    ids carry no gradient. Initialised N(0, std²), std 0.02 as GPT-2. Ids outside
    0..num_embeddings−1 raise a ShapeError where checking them costs no wait for a
    device; on a GPU (CuPy) such an id gives a NaN row instead (never a read outside W).
    """

    param_names = ("W",)
    integer_input = True

    def __init__(self, num_embeddings: int, dim: int, std: float = 0.02):
        self.num_embeddings = positive_int("Embedding num_embeddings", num_embeddings)
        self.dim = positive_int("Embedding dim", dim)
        self.std = positive_std("Embedding std", std)

    def input_shape(self):
        return (None,)  # a sequence of ids of any length

    def output_shape(self, shape):
        return (*shape, self.dim)

    def param_shapes(self):
        return {"W": (self.num_embeddings, self.dim)}

    def vocabulary(self):
        return self.num_embeddings

    def init_params(self, rng, ensemble=None, next_layer=None):
        no_ensemble(self, ensemble)
        return {"W": rng.normal(0.0, self.std, size=(self.num_embeddings, self.dim))}

    def forward(self, ctx, x, train):
        V = self.num_embeddings
        check_ids(ctx, x, V, self)
        y = ctx.k.embedding(ctx.params["W"], x)  # y = W[ids]

        def backprop(dy, need_dx=True):
            # dW[v] = Σ_{i: ids_i = v} dy_i, written into the store where it can be
            ctx.grads.add("W", ctx.k.embedding_backward(x, dy, V, out=ctx.grads.out("W")))
            return None  # integer ids have no gradient

        return y, backprop

    def output(self) -> TiedOutput:
        """The output projection logits = x Wᵀ tied to this embedding's W."""
        return TiedOutput(self)

    def config(self):
        return {"type": "Embedding", "num_embeddings": self.num_embeddings, "dim": self.dim,
                "std": self.std}


def check_ids(ctx, x, V: int, layer) -> None:
    """Integer ids in 0..V−1, checked where that costs no wait for a device (not on a GPU,
    not inside a traced JAX step)."""
    if not is_integer(x.dtype):
        raise DTypeError(f"{type(layer).__name__} takes integer token ids, got dtype "
                         f"{dtype_name(x.dtype)}")
    if math.prod(x.shape) == 0 or backend_class_of(x).array_is_asynchronous(x):
        return
    bad = ctx.k.labels_outside(x, V)
    if bad is not None:
        raise ShapeError(f"{type(layer).__name__}({V}, ...): token ids must be in [0, {V - 1}], "
                         f"found values in [{bad[0]}, {bad[1]}]")


@register_layer
class PositionEmbedding(Layer):
    """y = x + W[:T] on (..., T, dim): a learned vector per position.  W: (max_len, dim).

    Backward: dx = dy, dW[t] = Σ over the batch of dy[..., t, :] for t < T, 0 beyond.
    A sequence longer than max_len is refused (a ShapeError naming max_len).
    """

    param_names = ("W",)

    def __init__(self, max_len: int, dim: int, std: float = 0.02):
        self.max_len = positive_int("PositionEmbedding max_len", max_len)
        self.dim = positive_int("PositionEmbedding dim", dim)
        self.std = positive_std("PositionEmbedding std", std)

    def input_shape(self):
        return (None, self.dim)

    def output_shape(self, shape):
        if len(shape) < 2 or (shape[-1] is not None and shape[-1] != self.dim):
            raise ShapeError(f"PositionEmbedding({self.max_len}, {self.dim}) takes (T, "
                             f"{self.dim}) per sample, got {tuple(shape)}")
        self._check_length(shape[-2])
        return tuple(shape)

    def _check_length(self, T):
        if T is not None and T > self.max_len:
            raise ShapeError(f"a sequence of {T} positions is longer than PositionEmbedding's "
                             f"max_len={self.max_len}")

    def param_shapes(self):
        return {"W": (self.max_len, self.dim)}

    def init_params(self, rng, ensemble=None, next_layer=None):
        no_ensemble(self, ensemble)
        return {"W": rng.normal(0.0, self.std, size=(self.max_len, self.dim))}

    def forward(self, ctx, x, train):
        xp = ctx.xp
        if x.ndim < 2:
            raise ShapeError(f"PositionEmbedding takes (..., T, {self.dim}), got shape "
                             f"{tuple(x.shape)}")
        T = x.shape[-2]
        self._check_length(T)
        y = x + ctx.params["W"][:T, :]  # y = x + W[:T]

        def backprop(dy, need_dx=True):
            summed = xp.sum(dy, axis=tuple(range(dy.ndim - 2))) if dy.ndim > 2 else dy
            buf = ctx.grads.out("W")
            if buf is not None:  # dW[:T] = Σ_batch dy, dW[T:] = 0, into the store
                buf[:T, :] = summed
                buf[T:, :] = 0.0
                ctx.grads.add("W", buf)
            else:
                rest = xp.zeros((self.max_len - T, self.dim), dtype=dy.dtype,
                                device=array_api_compat.device(dy))
                ctx.grads.add("W", xp.concat([summed, rest], axis=0))
            return dy  # dx = dy

        return y, backprop

    def config(self):
        return {"type": "PositionEmbedding", "max_len": self.max_len, "dim": self.dim,
                "std": self.std}


@register_layer
class TiedOutput(Layer):
    """logits = x Wᵀ with the W (V, dim) of an earlier `Embedding`; no weight of its own.

    Backward: dx = dy W, and dW = dyᵀ x is added to the embedding's own dW (the model
    keeps one W for both uses). Build it as ``nk.TiedOutput(embedding)`` or
    ``embedding.output()``; the embedding must come earlier in the model.
    """

    def __init__(self, embedding: Embedding):
        if not isinstance(embedding, Embedding):
            raise ConfigError(f"TiedOutput ties to an Embedding, got "
                              f"{type(embedding).__name__}")
        self.embedding = embedding

    @property
    def ties(self):
        return {"W": (self.embedding, "W")}

    def input_shape(self):
        return (self.embedding.dim,)

    def output_shape(self, shape):
        if not shape or (shape[-1] is not None and shape[-1] != self.embedding.dim):
            raise ShapeError(f"TiedOutput of an Embedding of dim {self.embedding.dim} receives "
                             f"{shape[-1] if shape else 'no'} features")
        return (*shape[:-1], self.embedding.num_embeddings)

    def init_params(self, rng, ensemble=None, next_layer=None):
        no_ensemble(self, ensemble)
        return {}

    def forward(self, ctx, x, train):
        W = ctx.params["W"]
        y = ctx.k.unembed(x, W)  # logits = x Wᵀ

        def backprop(dy, need_dx=True):
            dx, dW = ctx.k.unembed_backward(x, W, dy, need_dx, ctx.grads.out("W"))
            ctx.grads.add("W", dW)  # dW = dyᵀ x, summed with the embedding's own
            return dx               # dx = dy W

        return y, backprop

    def config(self):
        return {"type": "TiedOutput"}  # the model adds "tied_to": the embedding's path

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["tied_to"])

    def __repr__(self):
        return (f"TiedOutput(Embedding({self.embedding.num_embeddings}, "
                f"{self.embedding.dim}))")


__all__ = ["Embedding", "PositionEmbedding", "TiedOutput"]
