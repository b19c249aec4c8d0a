"""Properties of the public API under random use (hypothesis), on every backend.

One property, from issue 22: whatever a user does through the public API — mapping
operations on ``params``/``grads``/``state``, values of any dtype, shape or library,
forward/evaluation/backward in any order, optimizer steps and reuse — the model's
behaviour equals what its own state says, or a nnkernel error is raised and nothing
changed. "What its own state says" is checked against a host shadow of every array
the test has successfully written, and against a model rebuilt from the model's own
config and arrays (and from a saved file).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import TRAJECTORY_BACKENDS, host, make

import nnkernel as nk
from nnkernel.errors import NnkernelError

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

SHAPES = {"0.W": (3, 4), "0.b": (4,), "1.gamma": (4,), "1.beta": (4,), "2.W": (4, 2),
          "2.b": (2,)}
STATE = {"1.running_mean": (4,), "1.running_var": (4,)}
ACTIONS = ("set", "update", "ior", "setdefault", "remove", "state", "forward_eval",
           "forward_train_backward", "interleaved", "step", "other_optimizer", "grads_update")


def build(backend):
    return nk.Sequential(nk.Dense(3, 4, "tanh"), nk.BatchNorm(4), nk.Dense(4, 2), seed=5,
                         dtype="float64", backend=backend)


def values(draw, shape):
    """A value to assign: right or wrong shape, a real or a refused dtype, any library."""
    kind = draw(st.sampled_from(["ok", "ok", "ok", "shape", "complex", "int", "bool",
                                 "list", "torch", "strict"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    base = rng.standard_normal(shape)
    if kind == "shape":
        return rng.standard_normal((*shape, 2)) if draw(st.booleans()) else base.reshape(-1)[:1]
    if kind == "complex":
        return base + 1j
    if kind == "int":
        return np.round(base * 3).astype(np.int64)
    if kind == "bool":
        return base > 0
    if kind == "list":
        return base.tolist()
    if kind == "torch":
        return make("torch", base, "float64")
    if kind == "strict":
        return make("array_api_strict", base, "float64")
    return base


def expected(value, shape):
    """The host float64 array a successful write must leave, or None (must be refused)."""
    arr = np.asarray(host(value) if hasattr(value, "shape") else value)
    if arr.dtype.kind == "c" or arr.shape != tuple(shape):
        return None
    return arr.astype(np.float64)


def check_matches(model, shadow, backend, x):
    for key, want in shadow.items():
        got = host(model.params[key] if key in SHAPES else model.state[key])
        np.testing.assert_array_equal(got, want, err_msg=key)
    rebuilt = nk.Sequential.from_config(model.config(), backend=backend)
    rebuilt.load_arrays(model.arrays())
    np.testing.assert_array_equal(host(model(x)), host(rebuilt(x)))


@pytest.mark.parametrize("backend", TRAJECTORY_BACKENDS)
@hypothesis.settings(max_examples=12, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(data=st.data())
def test_the_model_is_what_its_state_says(backend, data, tmp_path_factory):
    model = build(backend)
    shadow = {k: host(v).astype(np.float64).copy() for k, v in model.arrays().items()}
    rng = np.random.default_rng(0)
    x = make(backend, rng.standard_normal((6, 3)), "float64")
    t = make(backend, rng.integers(0, 2, 6))
    opt = nk.optim.Adam(lr=0.01)
    for _ in range(data.draw(st.integers(3, 8))):
        action = data.draw(st.sampled_from(ACTIONS))
        key = data.draw(st.sampled_from(sorted(SHAPES)))
        before = {k: v.copy() for k, v in shadow.items()}
        try:
            if action in ("set", "update", "ior", "setdefault"):
                value = values(data.draw, SHAPES[key])
                want = expected(value, SHAPES[key])
                if action == "set":
                    model.params[key] = value
                elif action == "update":
                    model.params.update({key: value})
                elif action == "ior":
                    params = model.params
                    params |= {key: value}
                else:  # an existing key: returns it and writes nothing
                    assert model.params.setdefault(key, value) is model.params[key]
                    want = shadow[key]
                assert want is not None, f"{action} of a refusable value was accepted"
                shadow[key] = want
            elif action == "remove":
                how = data.draw(st.sampled_from(["pop", "popitem", "clear", "del", "state"]))
                if how == "pop":
                    model.params.pop(key)
                elif how == "popitem":
                    model.params.popitem()
                elif how == "clear":
                    model.params.clear()
                elif how == "del":
                    del model.params[key]
                else:
                    model.state.pop("1.running_var")
                raise AssertionError(f"{how} removed an entry")
            elif action == "state":
                skey = data.draw(st.sampled_from(sorted(STATE)))
                value = values(data.draw, STATE[skey])
                want = expected(value, STATE[skey])
                model.state[skey] = value
                assert want is not None, "a refusable state value was accepted"
                shadow[skey] = want
            elif action == "forward_eval":
                model(x)
                model.predict(x, batch_size=4)
            elif action in ("forward_train_backward", "interleaved"):
                out = model.forward(x, train=True)
                if action == "interleaved":
                    model(x)  # an evaluation pass between forward and backward
                _, dy = nk.losses.cross_entropy(out, t)
                model.backward(dy, input_grad=False)
                shadow.update({k: host(model.state[k]).astype(np.float64) for k in STATE})
            elif action == "grads_update":
                model.grads.update({key: values(data.draw, SHAPES[key])})
            elif action == "step":
                twin, twin_opt = model.copy(), copy.deepcopy(opt)  # the state, rebuilt
                for m, o in ((model, opt), (twin, twin_opt)):
                    _, dy = nk.losses.cross_entropy(m.forward(x, train=True), t)
                    m.backward(dy, input_grad=False)
                    o.step(m.params, m.grads)
                np.testing.assert_array_equal(host(model.store.flat), host(twin.store.flat))
                shadow.update({k: host(v).astype(np.float64) for k, v in model.arrays().items()})
            elif action == "other_optimizer":
                had_state = opt.t > 0
                other = build(backend)
                out = other.forward(x, train=True)
                _, dy = nk.losses.cross_entropy(out, t)
                other.backward(dy, input_grad=False)
                opt.step(other.params, other.grads)  # must be refused once opt has state
                assert not had_state, "an optimizer with state stepped another model"
                opt.reset()  # it adopted the other model; start ours afresh
        except NnkernelError:
            shadow = before  # refused: nothing changed
        check_matches(model, shadow, backend, x)
    path = tmp_path_factory.mktemp("save") / "m.npz"
    nk.save(model, path)  # what the model holds is always a loadable file
    loaded = nk.load(path)
    np.testing.assert_array_equal(host(loaded(host(x))), host(model.copy(backend="numpy")(
        host(x))))
