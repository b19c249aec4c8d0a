"""A compiled training step: forward, loss, backward and update as one traced program.

    step = CompiledStep(model, loss_fn, optimizer)
    value, correct = step(xb, yb, wb, seed=(seed, epoch, step))

It runs the hand-written code `fit` runs eagerly: `Sequential.forward`, the
loss, `Sequential.backward` and the optimizer's update (`Optimizer.update_whole`,
or `update_parts`: the same update per parameter), traced once by the
backend's compiler (`Backend.compile`, which is ``jax.jit`` on JAX) as a pure
function

    (params, optimizer state, step count, lr, weight decay, model state,
     x, y, weights, seed words)
      -> (new optimizer state, new params, the gradients, new model state,
          loss, correct predictions)

The arrays are the store's flat buffers for small networks, or one array per
parameter for large ones (`PER_KEY_FROM`): XLA slices a view out of a flat
buffer by copying it, so per-key arrays save copies proportional to the model,
while each extra buffer costs every call a few microseconds.

The parameter store already rebinds on immutable backends (an update returns a
new flat buffer, `ParameterStore.set_flat` adopts it), so tracing only points
the store, the optimizer's flat state, ``model.state`` (BatchNorm statistics)
and the random stream at the tracers, and puts them back afterwards. The step
count, learning rate and weight decay are inputs: Adam's bias correction and a
schedule never recompile. The per-key views of the new buffers are made only
when the model is next used or looked at (`ParameterStore.defer`): an output
per view would cost more than a small network's step. A new input shape (an
epoch's shorter last batch) compiles once more. The optimizer's state buffers
are donated to the program, which updates them in place (an array of
``optimizer`` state kept from before a step is then invalid).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..losses import cross_entropy

# Per-key arrays cost each call ~5 µs per buffer more than one flat buffer; the flat layout
# costs XLA copies proportional to the parameters (views sliced out before each matrix product,
# gradients concatenated). Per-key from this many parameters per key on (bench/RESULTS.md).
PER_KEY_FROM = 16384


class CompiledStep:
    """One training step of ``model`` with ``loss_fn`` and ``optimizer``, compiled."""

    def __init__(self, model, loss_fn, optimizer):
        self.model, self.loss_fn, self.opt = model, loss_fn, optimizer
        self.members = model.ensemble is not None
        self.classify = loss_fn is cross_entropy
        store = model.store
        self.per_key = store.size * (model.ensemble or 1) >= PER_KEY_FROM * len(store.keys)
        # the optimizer state is donated (updated in place); the parameters are not: they are
        # read by the forward and the update, and XLA copied the whole donated buffer first
        self._fn = model.backend.compile(self._pure, donate=(1,))
        self.traces = 0  # how many times the step was traced (one per input shape)

    # -- the host side of one step ---------------------------------------------------------
    def __call__(self, x, y, w=None, seed=None):
        """One step on a minibatch; returns (loss value, correct predictions or None)."""
        model, opt = self.model, self.opt
        store = model.store
        fs = opt.flat_state(store)
        if fs.uniform is None:
            raise ConfigError("a compiled step updates every parameter at one step count, "
                              "but this optimizer's parameters are at different steps (some "
                              "were frozen); train this optimizer without compile")
        lr, wd = opt.step_hypers(store)
        step = fs.uniform + 1
        words = (model.random.traceable_seed(seed)
                 if seed is not None and model.stochastic else None)
        if self.per_key:  # the views are the arrays: no slicing, no joining, per step
            params, opt_state = dict(model.params), fs.parts()
        else:
            params, opt_state = store.flat, fs.arrays
        new_state, new_params, grads, state, value, correct = self._fn(
            params, opt_state, step, lr, wd, dict(model.state), x, y, w, words)
        store.defer(new_params, grads)  # views when next looked at: an output per view costs
        if self.per_key:
            fs.adopt_parts(new_state)
        else:
            fs.arrays = new_state
        fs.uniform = step
        model.state.update(state)
        opt.t += 1
        return value, correct

    # -- the traced function -------------------------------------------------------------------
    def _pure(self, params, opt_state, step, lr, wd, state, x, y, w, words):
        from .loop import _correct

        self.traces += 1
        model, opt = self.model, self.opt
        store = model.store
        saved = _Saved(model, opt.flat_state(store))
        try:
            store.defer(params)
            store.fresh()
            model.state.update(state)
            if words is not None:
                model.random.reseed(words)
            out = model.forward(x, train=True)
            options = {"num_check": False} if self.classify else {}  # no host reads here
            value, dy = self.loss_fn(out, y, members=self.members, weights=w, **options)
            model.backward(dy, input_grad=False)
            if self.per_key:
                new_state = {n: dict(parts) for n, parts in opt_state.items()}
                grads = dict(store.grads)
                new_params = opt.update_parts(store, params, grads, new_state, lr, wd, step)
            else:
                new_state, grads = dict(opt_state), store.grad
                new_params = opt.update_whole(store, new_state, lr, wd, step)
            correct = _correct(model.xp, out, y) if self.classify else None
            # the donated state's outputs first: each donated buffer goes to the first output
            # of its shape, and a mismatch (new parameters into m's buffer) costs copies
            return new_state, new_params, grads, dict(model.state), value, correct
        finally:
            saved.restore()


class _Saved:
    """What a trace points at tracers, to put back when it ends (tracers must not leak)."""

    def __init__(self, model, fs):
        self.model, self.fs = model, fs
        self.store = model.store.snapshot()  # views stay as they were (perhaps deferred)
        self.fs_raw = (fs._arrays, fs._parts)  # raw: nothing joined inside the trace
        self.state = dict(model.state)
        self.random = dict(vars(model.random))

    def restore(self) -> None:
        model = self.model
        model.store.restore(self.store)
        self.fs._arrays, self.fs._parts = self.fs_raw
        model.state.clear()
        model.state.update(self.state)
        vars(model.random).update(self.random)
        model._backprops = None  # closures over tracers
