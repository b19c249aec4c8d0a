"""A compiled training step: `train_step`'s sequence as one traced program.

    step = CompiledStep(model, loss_fn, optimizer, score)
    value, score = step((xb, yb, wb), seed=(seed, epoch, step))

It runs the hand-written code `train_step` runs eagerly: the model's forward
(`Sequential.run`), the loss, the backprops (`Sequential.backprop`) and the
optimizer's `update`, over a `Pass` of the arrays the program is given, traced
once by the backend's compiler (`Backend.compile`: ``jax.jit`` on JAX) as a pure
function

    (params, optimizer state, step count, lr, weight decay, model state,
     x, y, weights, seed words)
      -> (new optimizer state, new params, the gradients, new model state,
          loss, score)

The model is not touched while tracing: its store, state and random stream stay
as they are; the outputs are adopted after each call. The arrays are the store's
flat buffers for small networks, or one array per parameter for large ones
(`PER_KEY_FROM`): XLA slices a view out of a flat buffer by copying it, so
per-key arrays save copies proportional to the model, while each extra buffer
costs every call a few microseconds. The step count, learning rate and weight
decay are inputs: Adam's bias correction and a schedule never recompile. A new
input shape (an epoch's shorter last batch) compiles once more. The optimizer's
state buffers are donated to the program, which updates them in place (an array
of ``optimizer`` state kept from before a step is then invalid).
"""

from __future__ import annotations

from ..errors import ConfigError

# Per-key arrays cost each call ~5 µs per buffer more than one flat buffer; the flat layout
# costs XLA copies proportional to the parameters (views sliced out before each matrix
# product, gradients concatenated). A tunable measured on one machine: per-key from this many
# parameters per key on (bench/history/2026-12-01-jax-dask-compiled-step.md).
PER_KEY_FROM = 16384


class CompiledStep:
    """One training step of ``model`` with ``loss_fn`` and ``optimizer``, compiled."""

    def __init__(self, model, loss_fn, optimizer, score=None):
        self.model, self.loss_fn, self.opt, self.score = model, loss_fn, optimizer, score
        self.members = model.ensemble is not None
        store = model.store
        self.per_key = store.size * (model.ensemble or 1) >= PER_KEY_FROM * len(store.keys)
        # the optimizer state is donated (updated in place); the parameters are not: they are
        # read by the forward and the update, and XLA copied the whole donated buffer first
        self._fn = model.backend.compile(self._pure, donate=(1,))
        self.traces = 0  # how many times the step was traced (one per input shape)

    # -- the host side of one step ---------------------------------------------------------
    def __call__(self, batch, seed=None):
        """One step on a minibatch (x, y[, w]); returns (loss value, score or None)."""
        x, y, w = batch if len(batch) == 3 else (*batch, None)
        model, opt = self.model, self.opt
        store = model.store
        fs = opt.flat_state(store)
        if fs.uniform is None:
            raise ConfigError("a compiled step updates every parameter at one step count, "
                              "but this optimizer's parameters are at different steps (some "
                              "were frozen); train this optimizer without compile")
        lr, wd = opt.step_hypers(store, masked=not self.per_key)
        words = (model.random.traceable_seed(seed)
                 if seed is not None and model.stochastic else None)
        if self.per_key:  # the views are the arrays: no slicing, no joining, per step
            store.fresh()
            params, opt_state = dict(store.views), fs.parts()
        else:
            params, opt_state = store.flat, fs.arrays
        new_state, new_params, grads, state, value, score = self._fn(
            params, opt_state, fs.uniform + 1, lr, wd, dict(model.state), x, y, w, words)
        if self.per_key:
            store.set_parts(new_params)
            store.set_grad_parts(grads)
            fs.adopt_parts(new_state)
        else:
            store.set_flat(new_params)
            store.set_grad(grads)
            fs.arrays = new_state
        fs.advance(store.keys)
        model.state.update(state)
        opt.t += 1
        return value, score

    # -- the traced function -------------------------------------------------------------------
    def _pure(self, params, opt_state, step, lr, wd, state, x, y, w, words):
        self.traces += 1
        model, opt = self.model, self.opt
        store, k = model.store, model.backend.kernels
        xp, lead = store.xp, store.lead
        random = model.backend.random(model.seed)
        if words is not None:
            random.reseed(words)
        views = params if self.per_key else store.split(params)
        run = model.traced_pass(views, state, random)
        out, backprops = model.run(run, x, True)
        value, dy = self.loss_fn(out, y, members=self.members, weights=w)
        model.backprop(run, backprops, dy, input_grad=False)
        grads = run.grads.parts()
        if self.per_key:
            gs = [xp.reshape(grads[key], lead + (-1,)) for key in store.keys]
            if opt.clip_norm is not None:
                gs = opt.clip(k, gs, self.members, False)
            new_params, new_state = {}, {n: {} for n in opt.state_names}
            for key, g in zip(store.keys, gs, strict=True):
                st = {n: opt_state[n][key] for n in opt.state_names}
                decay = wd if wd is not None and opt.decays(key, store.shapes[key]) else None
                p, st = opt.update(k, xp.reshape(params[key], lead + (-1,)), g, st, lr, decay,
                                   step)
                new_params[key] = xp.reshape(p, tuple(params[key].shape))
                for n in opt.state_names:
                    new_state[n][key] = st[n]
        else:
            grads = store.join(grads)
            g = grads if opt.clip_norm is None else opt.clip(k, [grads], self.members, False)[0]
            new_params, new_state = opt.update(k, params, g, dict(opt_state), lr, wd, step)
        score = None if self.score is None else self.score(out, y)
        # the donated state's outputs first: each donated buffer goes to the first output of
        # its shape, and a mismatch (new parameters into m's buffer) costs copies
        return new_state, new_params, grads, run.state, value, score
