"""Sequential: the chain rule through a list of layers, and the parameters they share.

    y = model.forward(x, train=True)     # each layer's (output, backprop) is recorded
    dx = model.backward(dy)              # the recorded backprops, last to first

The model owns every array: parameters and gradients in its `ParameterStore`
(one flat buffer each), non-learned buffers (BatchNorm statistics) in
``model.state``. Layers hold only their configuration; where each one sits and
which arrays it uses is the model's plan (`nnkernel.nn.plan`).
"""

from __future__ import annotations

import numpy as np

from ..backend import Backend, dtype_name, is_float, is_integer
from ..checks import integer, is_int
from ..errors import ConfigError, DTypeError, PassError, ShapeError
from .context import Cell, LayerContext, Pass
from .layer import Layer
from .mappings import Gradients, Parameters, State
from .model_data import ModelData
from .parameters import Gathered, ParameterStore
from .plan import initial_arrays, model_input_shape, plan
from .summary import summary_table


class Sequential(ModelData):
    """A feed-forward network: ``Sequential(Dense(784, 256), ReLU(), Dense(256, 10))``.

    Parameters are initialised from ``seed`` on the host, so the same seed gives
    the same weights on every backend; ``backend`` is "numpy" (default), "cupy",
    "torch", "array_api_strict", a namespace module or a `Backend`; ``device`` a
    device of it. ``input_shape`` is the per-sample input shape, needed only where
    the first layers do not fix it (convolutions: (channels, height, width)).
    The same layer object placed twice shares its parameters (their gradients add).
    ``model.layers`` is a tuple: the architecture is fixed once built.
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
        if ensemble is not None and not (is_int(ensemble) and ensemble >= 1):
            raise ConfigError(f"ensemble must be a positive number of members, got {ensemble!r}")
        if not is_int(seed):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        self.layers = tuple(layers)
        self.seed = int(seed)
        self.identity = object()  # kept by `to`: an optimizer's state belongs to this model
        self.ensemble = None if ensemble is None else int(ensemble)
        self._plan_shapes(input_shape)
        host = initial_arrays(self.plan, np.random.default_rng(self.seed), self.ensemble)
        self._bind(backend if isinstance(backend, Backend) else Backend(backend, device),
                   dtype_name(dtype), host)

    # -- construction -------------------------------------------------------------------------
    def _plan_shapes(self, input_shape):
        shape = self.input_shape = model_input_shape(self.layers, input_shape)
        self.plan = plan(self.layers, shape)
        self.output_shape = self.plan.output_shape
        self._shapes: dict = {}  # per-sample input shape -> output shape, for the input check
        self._flat_io = len(self.input_shape) == 1 and len(self.output_shape) == 1
        self.n_in = self.input_shape[-1] if len(self.input_shape) == 1 else None
        self.n_out = self.output_shape[-1]
        self.integer_input = self.layers[0].integer_input
        self.side_inputs = frozenset(n for pos in self.plan.walk() for n in pos.layer.side_inputs)

    def _bind(self, backend: Backend, dtype: str, host: dict, flat=None):
        """Put the arrays on a backend: a new store, state and layer contexts.

        ``flat``: the parameters already on the backend as one buffer (`to` over DLPack).
        """
        self.backend = backend
        self.xp, self.k = backend.xp, backend.kernels
        self.dtype = backend.dtype(dtype)
        self.random = backend.random(self.seed)
        keys = self.plan.param_keys
        lead = 1 if self.ensemble is not None else 0
        shapes = {k: np.shape(host[k])[lead:] for k in keys}
        self.store = ParameterStore(backend, self.dtype, shapes, self.ensemble,
                                    self.plan.shared_keys, owner=self.identity)
        if flat is None:
            flat = backend.asarray(_flat_host(host, shapes, self.ensemble), dtype=self.dtype)
        self.store.set_flat(flat)
        self._state = {k: backend.asarray(host[k], dtype=self.dtype) for k in self.plan.state_keys}
        self._params, self._grads = Parameters(self.store), Gradients(self.store)
        self._own_pass = Pass(self.store.views, self.store.collector(), self._state,
                              self.random)
        self._cell = Cell(self._own_pass)
        self._contexts = [self._context(pos) for pos in self.plan.positions]
        self._recorded = None

    def _context(self, pos) -> LayerContext:
        return LayerContext(self._cell, pos.layer, pos.path, pos.keys, backend=self.backend,
                            ensemble=self.ensemble, sample_ndim=pos.sample_ndim,
                            children=[self._context(c) for c in pos.children])

    @property
    def params(self) -> Parameters:
        """Parameter key -> array, views of ``store.flat``, in forward order (assigning
        writes into the store; every write is checked, see `nnkernel.nn.mappings`)."""
        return self._params

    @property
    def grads(self) -> Gradients:
        """Parameter key -> dL/dparameter after `backward`, views of ``store.grad``."""
        return self._grads

    @property
    def state(self) -> State:
        """Non-learned arrays by key (BatchNorm's running statistics); writes are checked."""
        return State(self, self._state)

    @state.setter
    def state(self, values) -> None:
        checked = State(self, dict(self._state))
        if set(values) != set(self._state):
            raise ConfigError(f"model.state must have the keys {', '.join(self._state)}, got "
                              f"{', '.join(map(str, values))}")
        checked.update(values)
        self._state.update(dict(checked))

    @property
    def device(self):
        return self.backend.device

    @property
    def stochastic(self) -> bool:
        return any(pos.layer.stochastic for pos in self.plan.walk())

    def reseed(self, seed) -> None:
        """Restart the random stream of Dropout masks (an int or a tuple like (seed, epoch))."""
        self.random.reseed(seed)

    # -- the chain rule -----------------------------------------------------------------------
    def forward(self, x, train: bool = False, *, record: bool | None = None, **inputs):
        """y = f(x). With train=True, Dropout draws masks and BatchNorm uses batch statistics.

        A training pass is recorded for `backward`; an evaluation pass is not, unless
        ``record=True`` (to differentiate the evaluation-mode function, as a gradient
        check of BatchNorm's running statistics does). ``model(x)`` and `predict` never
        record. ``inputs`` are side inputs of layers that take them (``lengths=`` of a
        recurrent layer).
        """
        self.store.fresh()  # views of what a rebinding update or a compiled step left
        if self.backend.needs_context:  # every buffer and launch on the model's device
            with self.backend.activate():
                return self._forward(x, train, record, inputs)
        return self._forward(x, train, record, inputs)

    def _forward(self, x, train, record, inputs):
        x, out_shape, shared = self._check_input(x)
        y, backprops = self.run(self._own_pass, x, train, self._side(inputs) if inputs
                                else None)
        if train if record is None else record:
            self._recorded = (backprops, out_shape, shared)
        return y

    def __call__(self, x, train: bool = False, **inputs):
        """y = f(x), evaluation mode by default; nothing is recorded for a backward."""
        return self.forward(x, train, record=False, **inputs)

    def run(self, run: Pass, x, train: bool, side=None):
        """(y, backprops) of one pass over the arrays of ``run`` (the model's own `Pass`, or
        one over other arrays: a compiled step's). ``x`` is already checked."""
        cell = self._cell
        if cell.run is not run:  # another pass (a compiled step's): for this call only
            previous, cell.run = cell.run, run
            try:
                return self.run(run, x, train, side)
            finally:
                cell.run = previous
        backprops = []
        keep = backprops.append
        if not side:
            for ctx in self._contexts:
                x, backprop = ctx.layer.forward(ctx, x, train)
                keep(backprop)
        else:
            for ctx in self._contexts:
                wanted = {k: v for k, v in side.items() if k in ctx.layer.side_inputs}
                x, backprop = ctx.layer.forward(ctx, x, train, **wanted)
                keep(backprop)
        return x, backprops

    def backward(self, dy, input_grad: bool = True):
        """Backpropagate dL/dy through the last recorded pass; fills ``grads``, returns dL/dx.

        With input_grad=False the first layer skips dx (its matmul is a large share
        of the step's work) and None is returned.
        """
        if self._recorded is None:
            raise PassError("backward() needs a recorded pass: call forward(x, train=True) "
                               "first (a new, copied, loaded or moved model has none, and "
                               "model(x) and predict do not record)")
        backprops, out_shape, shared = self._recorded
        self.backend.check(dy, "dy")
        if tuple(dy.shape) != out_shape:
            raise ShapeError(f"dy has shape {tuple(dy.shape)}, but the recorded forward "
                             f"returned {out_shape}")
        self._grads.left_out.clear()
        if self.backend.needs_context:
            with self.backend.activate():
                return self._backward(backprops, dy, input_grad, shared)
        return self._backward(backprops, dy, input_grad, shared)

    def _backward(self, backprops, dy, input_grad, shared):
        dy = self.backprop(self._own_pass, backprops, dy, input_grad)
        if dy is not None and self.ensemble is not None and shared:
            dy = self.xp.sum(dy, axis=0)  # one input feeds every member
        return dy

    def backprop(self, run: Pass, backprops, dy, input_grad: bool = True):
        """The backprops of one pass, last to first, collecting gradients in ``run.grads``."""
        cell = self._cell
        if cell.run is not run:
            previous, cell.run = cell.run, run
            try:
                return self.backprop(run, backprops, dy, input_grad)
            finally:
                cell.run = previous
        grads = run.grads
        grads.begin()
        for i in range(len(backprops) - 1, -1, -1):
            dy = backprops[i](dy, input_grad or i > 0)
        grads.end()
        return dy if input_grad else None

    def traced_pass(self, params: dict, state: dict, random) -> Pass:
        """A pass over other arrays (per-key ``params``, ``state``), whose gradients are
        gathered (`Gathered.parts`) instead of written into the store."""
        return Pass(params, Gathered(self.store, adopt=False), dict(state), random)

    def _side(self, inputs: dict) -> dict:
        unknown = sorted(set(inputs) - self.side_inputs)
        if unknown:
            takes = ", ".join(sorted(self.side_inputs)) or "none"
            raise ConfigError(f"unknown input(s) {', '.join(unknown)} for this model (its layers "
                              f"take: {takes})")
        return inputs

    def _check_input(self, x):
        """(x in the model's dtype, the output shape, whether an ensemble's input is shared)."""
        x = self.backend.accept(x, "input x")  # another library's array on this device: DLPack
        shape = x.shape
        if (self._flat_io and x.dtype == self.dtype and self.ensemble is None and len(shape) > 1
                and shape[-1] == self.n_in):  # the common case, checked in a few operations
            return x, (*shape[:-1], self.n_out), False
        if self.integer_input:
            if not is_integer(x.dtype):
                raise DTypeError(f"input x has dtype {dtype_name(x.dtype)}; this model's first "
                                 f"layer ({type(self.layers[0]).__name__}) takes integer ids")
        elif x.dtype != self.dtype:
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
                             + (" features" if k == 1 and not self.integer_input else ""))
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

    def predict(self, x, batch_size: int | None = None, **inputs):
        """Outputs in evaluation mode, computed in batches of ``batch_size`` rows."""
        with self.backend.activate():
            return self._predict(x, batch_size, self._side(inputs))

    def _predict(self, x, batch_size, side):
        self.store.fresh()
        x, _, shared = self._check_input(x)
        k = len(self.input_shape)
        axis = x.ndim - k - 1  # the rows axis: 0, or 1 for a per-member ensemble input
        n = x.shape[axis] if x.ndim > k else 1
        if batch_size is not None:
            integer("batch_size", batch_size)
        if batch_size is None or batch_size >= n:
            return self.run(self._own_pass, x, False, side)[0]
        index = (slice(None),) * axis
        parts = []
        for i in range(0, n, batch_size):
            rows = (*index, slice(i, min(i + batch_size, n)), ...)
            part_side = {k: v[i:i + batch_size, ...] for k, v in side.items()}
            parts.append(self.run(self._own_pass, x[rows], False, part_side)[0])
        out_axis = axis if self.ensemble is None or not shared else 1
        return self.xp.concat(parts, axis=out_axis)

    def predict_proba(self, x, batch_size: int | None = None, loss: str = "cross_entropy",
                      **inputs):
        """Class probabilities: softmax of the outputs (sigmoid for binary_cross_entropy)."""
        from .activations import sigmoid, softmax

        with self.backend.activate():
            out = self._predict(x, batch_size, self._side(inputs))
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
        arrays = {**self.params, **self._state}  # shapes; the state moves by `asarray`
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
        lines = []
        for pos in self.plan.walk():
            depth = pos.path.count(".")
            share = f"  [shares layer {pos.owner.path}]" if not pos.owns else ""
            text = type(pos.layer).__name__ if pos.children else repr(pos.layer)
            lines.append(f"  {'  ' * depth}({pos.path}) {text}{share}")
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
