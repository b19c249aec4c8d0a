"""Sequential: the chain rule through a list of layers, and the parameters they share.

    y = model.forward(x, train=True)     # each layer's (output, backprop) is recorded
    dx = model.backward(dy)              # the recorded backprops, last to first

The model owns every array: parameters and gradients in its `ParameterStore`
(one flat buffer each), non-learned buffers (BatchNorm statistics) in
``model.state``. Layers hold only their configuration.
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend, dtype_name, is_float
from ..errors import ConfigError, DTypeError, ShapeError
from .context import LayerContext
from .layers import Layer
from .model_data import ModelData
from .parameters import ParameterStore
from .summary import summary_table


class Sequential(ModelData):
    """A feed-forward network: ``Sequential(Dense(784, 256), ReLU(), Dense(256, 10))``.

    Parameters are initialised from ``seed`` on the host, so the same seed gives
    the same weights on every backend; ``backend`` is "numpy" (default), "cupy",
    "torch", "array_api_strict", a namespace module or a `Backend`; ``device`` a
    device of it. ``input_shape`` is the per-sample input shape, needed only where
    the first layers do not fix it (convolutions: (channels, height, width)).
    The same layer object placed twice shares its parameters (their gradients add).
    """

    def __init__(self, *layers: Layer, seed: int = 0, dtype="float32", backend="numpy",
                 device=None, ensemble: int | None = None, input_shape=None):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ConfigError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ConfigError(f"layer {i} is {type(layer).__name__}, not an nnkernel layer")
        if ensemble is not None and (isinstance(ensemble, bool) or not isinstance(
                ensemble, (int, np.integer)) or ensemble < 1):
            raise ConfigError(f"ensemble must be a positive number of members, got {ensemble!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.layers = list(layers)
        self.seed = int(seed)
        self.ensemble = None if ensemble is None else int(ensemble)
        self._plan(input_shape)
        host = self._initial_arrays(np.random.default_rng(self.seed))
        self._bind(backend if isinstance(backend, Backend) else Backend(backend, device),
                   dtype_name(dtype), host)

    # -- construction -------------------------------------------------------------------------
    def _plan(self, input_shape):
        """Keys, shapes and weight sharing of every position, from the layers alone."""
        shape = tuple(input_shape) if input_shape is not None else next(
            (layer.input_shape() for layer in self.layers if layer.input_shape() is not None),
            None)
        if shape is None:
            raise ConfigError("the model cannot tell its input shape; pass input_shape=")
        self.input_shape = shape
        self._keys, self._sample_ndim, first_at = [], [], {}
        for i, layer in enumerate(self.layers):
            self._sample_ndim.append(len(shape))
            try:
                shape = tuple(layer.output_shape(shape))
            except ShapeError as e:
                raise ShapeError(f"layer {i} {type(layer).__name__}: {e}") from None
            owner = first_at.setdefault(id(layer), i)  # a repeated object shares its arrays
            names = layer.param_names + layer.state_names
            self._keys.append({name: f"{owner}.{name}" for name in names})
        self.output_shape = shape
        self._shapes: dict = {}  # per-sample input shape -> output shape, for the input check
        self._flat_io = len(self.input_shape) == 1 and len(shape) == 1  # (..., n) -> (..., m)
        self.n_in = self.input_shape[-1] if len(self.input_shape) == 1 else None
        self.n_out = shape[-1]
        self._owners = [first_at[id(layer)] for layer in self.layers]

    def _initial_arrays(self, rng) -> dict:
        host = {}
        for i, layer in enumerate(self.layers):
            if self._owners[i] != i:
                continue
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            for name, value in layer.init_params(rng, self.ensemble, nxt).items():
                host[self._keys[i][name]] = value
            for name, value in layer.init_state(self.ensemble).items():
                host[self._keys[i][name]] = value
        return host

    def _param_shapes(self) -> dict:
        shapes = {}
        for i, layer in enumerate(self.layers):
            if self._owners[i] == i:
                for name in layer.param_names:
                    shapes[self._keys[i][name]] = None
        return shapes

    def _bind(self, backend: Backend, dtype: str, host: dict, flat=None):
        """Put the arrays on a backend: a new store, state dict and layer contexts.

        ``flat``: the parameters already on the backend as one buffer (`to` over DLPack).
        """
        self.backend = backend
        self.xp, self.k = backend.xp, backend.kernels
        self.dtype = backend.dtype(dtype)
        self.random = backend.random(self.seed)
        keys = self._param_shapes()
        lead = 1 if self.ensemble is not None else 0
        shapes = {k: np.shape(host[k])[lead:] for k in keys}
        self.store = ParameterStore(backend, self.dtype, shapes, self.ensemble)
        if flat is None:
            flat = backend.asarray(_flat_host(host, shapes, self.ensemble), dtype=self.dtype)
        self.store.set_flat(flat)
        self.state = {k: backend.asarray(v, dtype=self.dtype) for k, v in host.items()
                      if k not in keys}
        self._contexts = []
        for i, layer in enumerate(self.layers):
            params = {n: k for n, k in self._keys[i].items() if n in layer.param_names}
            states = {n: k for n, k in self._keys[i].items() if n in layer.state_names}
            shared = self._owners.count(self._owners[i]) > 1
            self._contexts.append(LayerContext(self, i, layer, params, states,
                                               self._sample_ndim[i], shared))
        self._backprops = None

    @property
    def params(self):
        """Parameter key -> array, views of ``store.flat`` (assigning writes into it)."""
        self.store.fresh()  # after a compiled step (`ParameterStore.defer`)
        return self.store.params

    @property
    def grads(self):
        """Parameter key -> dL/dparameter after `backward`, views of ``store.grad``."""
        self.store.fresh()
        return self.store.grads

    @property
    def device(self):
        return self.backend.device

    @property
    def stochastic(self) -> bool:
        return any(layer.stochastic for layer in self.layers)

    def reseed(self, seed) -> None:
        """Restart the random stream of Dropout masks (an int or a tuple like (seed, epoch))."""
        self.random.reseed(seed)

    # -- the chain rule -----------------------------------------------------------------------
    def forward(self, x, train: bool = False):
        """y = f(x). With train=True, Dropout draws masks and BatchNorm uses batch statistics.

        The layers' backprops are kept for `backward`; ``model(x)`` is forward(x, train=False).
        """
        self.store.fresh()  # views of buffers a compiled step left (a no-op otherwise)
        backprops = []
        keep = backprops.append
        with self.backend.activate():  # every buffer and launch on the model's device
            x, out_shape, shared = self._check_input(x)
            for ctx in self._contexts:
                x, backprop = ctx.layer.forward(ctx, x, train)
                keep(backprop)
        self._backprops, self._out_shape, self._shared_input = backprops, out_shape, shared
        return x

    __call__ = forward

    def _evaluate(self, x):
        """Outputs in evaluation mode, keeping nothing for a backward (predict, evaluate)."""
        self.store.fresh()
        with self.backend.activate():
            for ctx in self._contexts:
                x, _ = ctx.layer.forward(ctx, x, False)
        return x

    def backward(self, dy, input_grad: bool = True):
        """Backpropagate dL/dy through the last forward; fills ``grads``, returns dL/dx.

        With input_grad=False the first layer skips dx (its matmul is a large share
        of the step's work) and None is returned.
        """
        if self._backprops is None:
            raise RuntimeError("backward() needs a forward() first")
        self.backend.check(dy, "dy")
        if tuple(dy.shape) != self._out_shape:
            raise ShapeError(f"dy has shape {tuple(dy.shape)}, but the last forward returned "
                             f"{self._out_shape}")
        store = self.store
        with self.backend.activate():
            store.begin_backward()
            for i in range(len(self._backprops) - 1, -1, -1):
                dy = self._backprops[i](dy, input_grad or i > 0)
            store.end_backward()
            if not input_grad:
                return None
            if self.ensemble is not None and self._shared_input:
                dy = self.xp.sum(dy, axis=0)  # one input feeds every member
        return dy

    def _check_input(self, x):
        """(x in the model's dtype, the output shape, whether an ensemble's input is shared)."""
        x = self.backend.accept(x, "input x")  # another library's array on this device: DLPack
        shape = x.shape
        if (self._flat_io and x.dtype == self.dtype and self.ensemble is None and len(shape) > 1
                and shape[-1] == self.n_in):  # the common case, checked in a few operations
            return x, (*shape[:-1], self.n_out), False
        if x.dtype != self.dtype:
            if not is_float(x.dtype):
                raise DTypeError(f"input x has dtype {dtype_name(x.dtype)}; nnkernel models "
                                 f"take floating-point inputs (convert with "
                                 f"xp.astype(x, xp.float32))")
            x = self.xp.astype(x, self.dtype)
        shape, k = tuple(x.shape), len(self.input_shape)
        if len(shape) < k or any(want is not None and got != want
                                 for got, want in zip(shape[-k:], self.input_shape, strict=True)):
            raise ShapeError(f"input x has shape {shape}, but the model expects "
                             f"(..., {', '.join(str(d) for d in self.input_shape)})"
                             + (" features" if k == 1 else ""))
        lead, shared = shape[:-k], False
        if self.ensemble is not None:
            if len(lead) == 2 and lead[0] != self.ensemble:
                raise ShapeError(f"input x has shape {shape}: a per-member input needs a "
                                 f"leading axis of {self.ensemble} members")
            if len(lead) not in (1, 2):
                raise ShapeError(f"an ensemble takes (N, {self._sample_text()}) or "
                                 f"({self.ensemble}, N, {self._sample_text()}) inputs, got "
                                 f"{shape}")
            shared = len(lead) == 1
            lead = (self.ensemble, *lead) if shared else lead
        elif k > 1 and len(lead) != 1:
            raise ShapeError(f"input x has shape {shape}; expected (N, {self._sample_text()})")
        return x, tuple(lead) + self._out_sample_shape(shape[-k:]), shared

    def _sample_text(self):
        return ", ".join(str(d) for d in self.input_shape)

    def _out_sample_shape(self, sample) -> tuple:
        out = self._shapes.get(sample)
        if out is None:
            out = tuple(sample)
            for layer in self.layers:
                out = tuple(layer.output_shape(out))
            self._shapes[sample] = out
        return out

    def predict(self, x, batch_size: int | None = None):
        """Outputs in evaluation mode, computed in batches of ``batch_size`` rows."""
        with self.backend.activate():
            return self._predict(x, batch_size)

    def _predict(self, x, batch_size):
        x, _, shared = self._check_input(x)
        k = len(self.input_shape)
        axis = x.ndim - k - 1  # the rows axis: 0, or 1 for a per-member ensemble input
        n = x.shape[axis] if x.ndim > k else 1
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
                batch_size, (int, np.integer)) or batch_size <= 0):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size is None or batch_size >= n:
            return self._evaluate(x)
        index = (slice(None),) * axis
        parts = [self._evaluate(x[(*index, slice(i, min(i + batch_size, n)), ...)])
                 for i in range(0, n, batch_size)]
        out_axis = axis if self.ensemble is None or not shared else 1
        return self.xp.concat(parts, axis=out_axis)

    def predict_proba(self, x, batch_size: int | None = None, loss: str = "cross_entropy"):
        """Class probabilities: softmax of the outputs (sigmoid for binary_cross_entropy)."""
        from .activations import sigmoid, softmax

        with self.backend.activate():
            out = self._predict(x, batch_size)
            return sigmoid(self.xp, out) if loss in ("binary_cross_entropy", "bce") else \
                softmax(self.xp, out)

    # -- moving and copying -------------------------------------------------------------------
    def to(self, backend=None, device=None, dtype=None) -> Sequential:
        """Move parameters and state to another backend, device or dtype, in place; returns self.

        Optimizers follow: their state moves with the parameters at their next step.
        """
        dt = dtype_name(self.dtype) if dtype is None else dtype_name(dtype)
        target = self._backend_for(backend, device)
        flat = target.exchange(self.store.flat)  # the same device: DLPack, no host copy
        if flat is None:
            self._bind(target, dt, self.arrays())
            return self
        # the store writes in place: its own buffer, not the old model's (one copy, or the cast)
        flat = target.asarray(flat, dtype=target.dtype(dt), copy=True if target.mutable else None)
        arrays = {**self.params, **self.state}  # shapes; the state moves by `asarray`
        self._bind(target, dt, arrays, flat=flat)
        return self

    def _backend_for(self, backend, device) -> Backend:
        if backend is None and device is None:
            return self.backend
        if isinstance(backend, Backend):
            return backend
        return Backend(self.backend.name if backend is None else backend, device)

    def num_parameters(self) -> int:
        return self.store.size * (self.ensemble or 1)

    def summary(self) -> str:
        """A per-layer table of output shapes and parameter counts, as Keras prints."""
        return summary_table(self)

    def __repr__(self):
        lines = [f"  ({i}) {layer!r}" + (f"  [shares layer {self._owners[i]}]"
                                        if self._owners[i] != i else "")
                 for i, layer in enumerate(self.layers)]
        ens = f", ensemble={self.ensemble}" if self.ensemble else ""
        return ("Sequential(\n" + "\n".join(lines) + f"\n) on {self.backend.name} "
                f"({self.backend.device_name}), {dtype_name(self.dtype)}{ens}, "
                f"{self.num_parameters():,} parameters")


def _flat_host(host: dict, shapes: dict, ensemble) -> np.ndarray:
    """The parameters in store order as one host buffer: (P,) or member-major (E, P)."""
    if not shapes:
        return np.zeros((ensemble, 0) if ensemble else (0,))
    if ensemble is None:
        return np.concatenate([np.reshape(host[k], -1) for k in shapes])
    return np.concatenate([np.reshape(host[k], (ensemble, -1)) for k in shapes], axis=1)

