"""An optimizer's state as checkpoints hold it: per parameter key, checked whole on load."""

from __future__ import annotations

import numpy as np

from ..backend import kernels_for_array, to_numpy
from ..errors import ConfigError
from .flat import FlatState


class StateFiles:
    """state / state_arrays / load_state_arrays of `Optimizer` (a mixin of it)."""

    # -- state, for checkpoints ----------------------------------------------------------------
    @property
    def state(self) -> dict:
        """Parameter key -> {"step": int, name: array}, for the parameters stepped so far."""
        out = {}
        fs = self._flat
        if fs is not None:
            for key, step in fs.counts.items():
                if step:
                    out[key] = {"step": step, **{n: fs.per_key(n, key) for n in fs.names}}
        out.update({k: dict(v) for k, v in self._per_key.items()})
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Optimizer state as host arrays, keys "<param key>/<name>" (for checkpoints)."""
        if self._flat is None and self._unbound is not None:  # a copy not yet used
            return dict(self._unbound)
        out = {}
        for key, st in self.state.items():
            for name, value in st.items():
                out[f"{key}/{name}"] = (np.asarray(value, dtype=np.int64) if name == "step"
                                        else np.array(to_numpy(value)))
        return out

    def load_state_arrays(self, arrays: dict, params: dict) -> None:
        """Restore `state_arrays()` output onto the backend and device of ``params``.

        The whole state is checked first (keys, names, shapes, dtypes, step counts):
        a partial or foreign state is refused, never half-loaded.
        """
        per_key = self._validated(arrays, params)
        store = getattr(params, "store", None)
        self._hyper_cache.clear()
        self._unbound = None
        if store is None:
            self._flat = None
            self._per_key = {}
            for key, st in per_key.items():
                p = params[key]
                xp = kernels_for_array(p).xp
                import array_api_compat

                self._per_key[key] = {"step": st["step"], **{
                    n: xp.asarray(np.array(st[n]), dtype=p.dtype,
                                  device=array_api_compat.device(p)) for n in self.state_names}}
            return
        lead = store.lead
        host = {n: np.zeros(lead + (store.size,)) for n in self.state_names}
        fs = FlatState(store, self.state_names)
        for key, st in per_key.items():
            a, b = store.bounds[key]
            fs.set_count(key, st["step"])
            for n in self.state_names:
                host[n][..., a:b] = np.reshape(st[n], lead + (b - a,))
        fs.arrays = {n: store.backend.asarray(h, dtype=store.dtype) for n, h in host.items()}
        self._flat, self._per_key = fs, {}

    def _validated(self, arrays, params) -> dict:
        """{key: {"step": int, name: array}}, or a ConfigError naming the first problem."""
        per_key: dict = {}
        for flat_key, value in arrays.items():
            key, sep, name = str(flat_key).rpartition("/")
            if not sep or key not in params:
                raise ConfigError(f"optimizer state {flat_key!r} names no parameter of the "
                                  f"model (parameters: {', '.join(params)})")
            if name != "step" and name not in self.state_names:
                raise ConfigError(f"optimizer state {flat_key!r} is not state of "
                                  f"{type(self).__name__} (it keeps: "
                                  f"{', '.join(self.state_names) or 'only a step count'})")
            per_key.setdefault(key, {})[name] = np.asarray(value)
        for key, st in per_key.items():
            step = st.get("step")
            if step is None or step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
                raise ConfigError(f"optimizer state of {key!r} lacks a step count "
                                  f"(a non-negative integer at '{key}/step')")
            st["step"] = int(step)
            shape = tuple(params[key].shape)
            for n in self.state_names:
                if n not in st:
                    raise ConfigError(f"optimizer state '{key}/{n}' is missing: the state is "
                                      f"partial")
                if st[n].dtype.kind != "f" or tuple(st[n].shape) != shape:
                    raise ConfigError(f"optimizer state '{key}/{n}' has shape "
                                      f"{tuple(st[n].shape)} and dtype {st[n].dtype}; expected "
                                      f"{shape} floating point")
        return per_key

