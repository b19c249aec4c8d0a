"""The machinery every optimizer shares: one update over a model's flat parameter store.

For a model's parameters an optimizer works on the model's parameter store: the
whole model is one flat buffer, the gradients another and the optimizer's state
more of the same layout (`flat.FlatState`), so an update is a few whole-buffer
kernel calls (in place on NumPy and CuPy; new arrays, rebound by the store, on
array-api-strict and JAX). Any other dict of arrays is updated entry by entry with
the same kernels. A subclass (`optimizers.py`) names its state and writes `_update`.

Hyperparameters that are scalars in an update (``lr``, ``weight_decay``) may be
a sequence of E values for an ensemble of E members: member i then trains with
the i-th value, so a learning-rate sweep is one run.
"""


from __future__ import annotations

import math

import numpy as np

from ..backend import kernels_for_array
from ..checks import in_range
from ..errors import ConfigError
from ..nn.parameters import Gradients
from .clipping import clip_by_global_norm, clip_scale
from .flat import FlatState, splice
from .state import StateFiles


class Optimizer(StateFiles):
    """Shared machinery; a subclass names its state and writes `_update`."""

    def __init__(self, lr, *, weight_decay=0.0, clip_norm: float | None = None, schedule=None):
        self.lr = _check_hyper("lr", lr)
        self.weight_decay = _check_hyper("weight_decay", weight_decay, allow_zero=True)
        self.clip_norm = None if clip_norm is None else in_range(
            "clip_norm", clip_norm, 0.0, math.inf, lo_open=True, hi_open=True)
        if schedule is not None and not callable(schedule):
            raise ConfigError(f"schedule must be a function of the step number, got "
                              f"{schedule!r}")
        self.schedule = schedule
        self.t = 0                  # steps taken
        self.member_mask = None     # ensemble: 0/1 per member, 0 freezes a stopped member
        self._flat: FlatState | None = None  # state for a model's parameter store
        self._per_key: dict = {}    # state for plain dicts: key -> {"step": int, name: array}
        self._hyper_cache: dict = {}

    @property
    def state_names(self) -> tuple[str, ...]:
        """The state arrays this optimizer keeps per parameter (with its settings)."""
        return ()

    # -- the public step -----------------------------------------------------------------------
    def step(self, params: dict, grads: dict) -> None:
        if not grads:
            return
        factor = self._factor()
        store = getattr(params, "store", None)
        if store is not None:
            if self._members:
                self._check_members(store.ensemble)
            with store.backend.activate():
                self._step_store(store, grads, factor)
        else:
            self._check_members(getattr(params, "ensemble", None), known=False)
            self._step_arrays(params, grads, factor)
        self.t += 1

    def _step_store(self, store, grads, factor) -> None:
        keys = _active_keys(store, grads)
        fs = self.flat_state(store)
        k = store.backend.kernels
        segments = fs.segments(keys)
        lr, wd = self.step_hypers(store, factor)
        if segments is fs.everything:  # the whole model, every parameter at the same step
            step = fs.uniform + 1
            p = self.update_whole(store, fs.arrays, lr, wd, step)  # new state into fs.arrays
            fs.uniform = step
            _adopt(store, fs, p)
            return
        grad_parts = [store.segment(store.grad, s) for s in segments]
        if self.clip_norm is not None:
            grad_parts = self._clip(k, store, grad_parts)
        new_params, new_state = [], {n: [] for n in fs.names}
        for seg, g in zip(segments, grad_parts, strict=True):
            p = store.segment(store.flat, seg)
            st = {n: fs.view(n, seg) for n in fs.names}
            step = fs.step_of(seg[0]) + 1
            p = self._update(k, p, g, st, lr, wd, step)
            fs.set_steps(seg, step)
            if not k.in_place:
                a, b = store.bounds[seg[0]][0], store.bounds[seg[-1]][1]
                new_params.append((a, b, p))
                for n in fs.names:
                    new_state[n].append((a, b, st[n]))
        if not k.in_place:  # the reference returned new arrays: put them in place
            for n in fs.names:
                fs.arrays[n] = _merge(store, fs.arrays[n], new_state[n])
            _adopt(store, fs, _merge(store, store.flat, new_params))

    # -- the whole-model update, also traced by a compiled step (nnkernel.train.compiled) --
    def flat_state(self, store) -> FlatState:
        """This optimizer's flat state for ``store`` (made, or moved, on first use)."""
        fs = self._flat
        if fs is None or fs.store is not store:
            fs = self._flat = self._state_for(store)
        return fs

    def step_hypers(self, store, factor=None):
        """(lr, weight decay or None) of the next step: floats, or per-member (E, 1) arrays."""
        if factor is None:
            factor = self._factor()
        lr = self._flat_hyper("lr", self.lr, store, factor)
        wd = self._flat_hyper("weight_decay", self.weight_decay, store)
        return lr, None if _is_zero(wd) else wd

    def update_whole(self, store, arrays: dict, lr, wd, step):
        """Every parameter from ``store.grad``: returns the new flat parameters and writes the
        new state into ``arrays``. A function of arrays only (``step`` may be traced), so a
        compiled step runs exactly this code."""
        k = store.backend.kernels
        g = store.grad if self.clip_norm is None else self._clip(k, store, [store.grad])[0]
        return self._update(k, store.flat, g, arrays, lr, wd, step)

    def update_parts(self, store, params: dict, grads: dict, states: dict, lr, wd, step):
        """`update_whole` over per-key arrays (a compiled step's layout for large models):
        the same element-wise update on each parameter, the clipping norm over all of them.
        ``states``: {name: {key: segment}}, written with the new state; returns the new
        parameters, each shaped as in ``params``."""
        k, xp, lead = store.backend.kernels, store.xp, store.lead
        gs = [xp.reshape(grads[key], lead + (-1,)) for key in store.keys]
        if self.clip_norm is not None:
            gs = self._clip(k, store, gs)
        new = {}
        for key, g in zip(store.keys, gs, strict=True):
            st = {n: states[n][key] for n in self.state_names}
            p = self._update(k, xp.reshape(params[key], lead + (-1,)), g, st, lr, wd, step)
            new[key] = xp.reshape(p, tuple(params[key].shape))
            for n in self.state_names:
                states[n][key] = st[n]
        return new

    def _state_for(self, store) -> FlatState:
        """This optimizer's state for a store: new, or moved after ``model.to(...)``."""
        fs = self._flat
        if fs is None:
            return FlatState(store, self.state_names)
        if not fs.fits(store):
            raise ConfigError("this optimizer holds state for parameters of another shape "
                              "(another model); use a new optimizer for this model")
        fs.move_to(store)
        self._hyper_cache.clear()
        return fs

    def _clip(self, k, store, parts):
        """Scale the gradients of this step to at most ``clip_norm`` in global norm.

        An ensemble's members are clipped by their own norms, as if trained alone.
        """
        members = store.ensemble is not None
        xp = store.xp
        total = k.sum_of_squares(parts[0], members)
        for g in parts[1:]:
            total = total + k.sum_of_squares(g, members)
        scale = clip_scale(xp, xp.sqrt(total), self.clip_norm)
        if members:
            scale = xp.reshape(scale, (-1, 1))
        if store.mutable:
            for g in parts:
                g *= scale  # in the store's gradient buffer, as torch clips .grad in place
            return parts
        return [g * scale for g in parts]

    def _step_arrays(self, params, grads, factor) -> None:
        """The update for a plain dict of arrays: entry by entry, rebinding the dict."""
        members = self._members
        if self.clip_norm is not None:
            per_member = members or getattr(params, "ensemble", None) is not None
            grads = clip_by_global_norm(grads, self.clip_norm, members=per_member)
        for key, g in grads.items():
            if key not in params:
                raise KeyError(f"gradient {key!r} has no parameter; "
                               f"parameters: {', '.join(params)}")
            p = params[key]
            k = kernels_for_array(p)
            st = self._per_key.get(key)
            if st is None:
                xp = k.xp
                st = self._per_key[key] = {"step": 0, **{n: xp.zeros_like(p)
                                                         for n in self.state_names}}
            st["step"] += 1
            lr = self._hyper("lr", self.lr, p, factor)
            wd = self._hyper("weight_decay", self.weight_decay, p)
            arrays = {n: st[n] for n in self.state_names}
            new = self._update(k, p, g, arrays, lr, None if _is_zero(wd) else wd, st["step"])
            st.update(arrays)
            if new is not p:
                params[key] = new

    def _update(self, k, p, g, st: dict, lr, wd, step):
        """One update of p from g; writes the new state into ``st``; returns the new p."""
        raise NotImplementedError

    @property
    def current_lr(self):
        """The learning rate the next step will use (after the schedule)."""
        return self.lr * self._factor()

    def _factor(self) -> float:
        """The schedule's multiplier of the base rate at the next step (1 without one)."""
        return 1.0 if self.schedule is None else float(self.schedule(self.t))

    # -- per-member hyperparameters ------------------------------------------------------------
    def _check_members(self, ensemble, known=True):
        """Per-member values need a model with that many members."""
        if not known and ensemble is None:
            return  # a plain dict: nothing to check against
        for name in ("lr", "weight_decay", "member_mask"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.shape[0] != (ensemble or 0):
                members = f"an ensemble of {ensemble}" if ensemble else "one model"
                raise ConfigError(f"{name} has {value.shape[0]} per-member values, but the "
                                  f"parameters belong to {members}")

    @property
    def _members(self) -> bool:
        return type(self.lr) is np.ndarray or type(self.weight_decay) is np.ndarray \
            or self.member_mask is not None

    def _flat_hyper(self, name, value, store, factor=1.0):
        """A float, or for per-member values an (E, 1) array on the store's device."""
        mask = self.member_mask if name == "lr" else None
        if type(value) is float and mask is None:
            return value * factor
        host = np.broadcast_to(np.asarray(value, dtype=np.float64), (store.ensemble,)) * factor
        if mask is not None:
            host = host * mask
        return self._device_hyper((name, "flat", host.tobytes()), host.reshape(-1, 1), store)

    def _hyper(self, name, value, p, factor=1.0):
        """A float, or for per-member values an array shaped (E, 1, ..., 1) like p."""
        mask = self.member_mask if name == "lr" else None
        if not isinstance(value, np.ndarray) and mask is None:
            return value * factor
        host = np.broadcast_to(np.asarray(value, dtype=np.float64), (p.shape[0],)) * factor
        if mask is not None:
            host = host * mask
        k = kernels_for_array(p)
        arr = self._hyper_cache.get((name, p.ndim, host.tobytes()))
        if arr is None:
            import array_api_compat

            arr = k.xp.asarray(host.reshape((-1,) + (1,) * (p.ndim - 1)), dtype=p.dtype,
                               device=array_api_compat.device(p))
            self._remember((name, p.ndim, host.tobytes()), arr)
        return arr

    def _device_hyper(self, key, host, store):
        arr = self._hyper_cache.get(key)
        if arr is None:
            arr = store.backend.asarray(host, dtype=store.dtype)
            self._remember(key, arr)
        return arr

    def _remember(self, key, arr):
        if len(self._hyper_cache) > 64:  # schedules change lr every step
            self._hyper_cache.clear()
        self._hyper_cache[key] = arr

    def config(self) -> dict:
        """Name and hyperparameters, JSON-ready."""
        cfg = {"name": type(self).__name__, "t": self.t, "clip_norm": self.clip_norm}
        for k, v in vars(self).items():
            if k in ("schedule", "member_mask") or k.startswith("_") or k == "t":
                continue
            cfg[k] = v.tolist() if isinstance(v, np.ndarray) else v
        return cfg

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k not in ("name", "t"))
        return f"{type(self).__name__}({args})"


# -- helpers -------------------------------------------------------------------------------------
def _active_keys(store, grads):
    """The store keys this step updates; gradients from elsewhere are written into the store."""
    if not (type(grads) is Gradients and grads.store is store):
        unknown = [k for k in grads if k not in store.bounds]
        if unknown:
            raise KeyError(f"gradient {unknown[0]!r} has no parameter; "
                           f"parameters: {', '.join(store.keys)}")
        for key, g in grads.items():
            store.grads[key] = g
    if len(grads) == len(store.keys):
        return store.keys
    return [k for k in store.keys if k in grads]


def _adopt(store, fs, p) -> None:
    """The updated parameters and optimizer state, settled together: a lazy library (Dask)
    computes them in one pass instead of recomputing the new state once per array, and no
    state array keeps a growing graph. A no-op where the kernels updated in place."""
    names = tuple(fs.arrays)
    p, *state = store.backend.settle(p, *(fs.arrays[n] for n in names)) if names else (p,)
    fs.arrays = dict(zip(names, state, strict=True))
    store.set_flat(p)


def _merge(store, flat, pieces):
    if len(pieces) == 1 and pieces[0][0] == 0 and pieces[0][1] == store.size:
        return pieces[0][2]
    return splice(store.xp, flat, pieces)


def _check_hyper(name, value, allow_zero=False):
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ConfigError(f"{name} must be a number or a 1-D sequence (one per member)")
        bad = arr < 0 if allow_zero else arr <= 0
        if bad.any() or not np.isfinite(arr).all():
            raise ConfigError(f"{name} values must be finite and {'>= 0' if allow_zero else '> 0'}"
                              f", got {arr.tolist()}")
        return arr
    from ..checks import finite_positive

    return finite_positive(name, value, allow_zero)


def _is_zero(value) -> bool:
    return isinstance(value, float) and value == 0.0
