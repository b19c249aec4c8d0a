"""Issue 16, Low, API: each bad argument is an nnkernel error that names it.

Before: ``evaluate(batch_size=-1)`` returned (0.0, 0.0), ``huber(delta=-1)`` returned
-1.5, ``fit(initial_step=999)`` wrote NaN into the history, ``Dense(64.5, 10)`` and
``Dense(True, 10)`` were accepted, ``BatchNorm(-1)`` and ``LayerNorm(0)`` constructed,
``binary_cross_entropy`` took a target of 2, ``mse`` broadcast a (1, 3) target, and
string or None labels, a 3-tuple validation_data and ``predict(batch_size=0)`` raised
raw Python exceptions.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnkernel as nk
from nnkernel import losses
from nnkernel.errors import NnkernelError

RNG = np.random.default_rng(0)
X = RNG.random((20, 4)).astype(np.float32)
Y = np.arange(20) % 3


def model():
    return nk.Sequential(nk.Dense(4, 3), seed=0)


def fit(**kw):
    options = {"epochs": 1, "batch_size": 4, "progress": False, **kw}
    return nk.fit(model(), options.pop("X", X), options.pop("y", Y), **options)


CASES = {
    "Dense(64.5, 10)": (lambda: nk.Dense(64.5, 10), "Dense n_in must be a positive integer, "
                        "got 64.5"),
    "Dense(True, 10)": (lambda: nk.Dense(True, 10), "Dense n_in must be a positive integer, "
                        "got True"),
    "BatchNorm(-1)": (lambda: nk.BatchNorm(-1), "BatchNorm n must be a positive integer"),
    "LayerNorm(0)": (lambda: nk.LayerNorm(0), "LayerNorm n must be a positive integer"),
    "huber(delta=-1)": (lambda: losses.huber(np.zeros((2, 1)), np.ones((2, 1)), delta=-1),
                        "huber delta must be in (0.0, inf), got -1"),
    "evaluate(batch_size=-1)": (lambda: nk.evaluate(model(), X, Y, batch_size=-1),
                                "batch_size must be a positive integer, got -1"),
    "predict(batch_size=0)": (lambda: model().predict(X, batch_size=0),
                              "batch_size must be a positive integer, got 0"),
    "fit(initial_step=999)": (lambda: fit(initial_step=999),
                              "initial_step 999 is past the end of an epoch of 5 steps"),
    "3-tuple validation_data": (lambda: fit(validation_data=(X, Y, Y)),
                                "validation_data must be a pair (X_val, y_val)"),
    "string labels": (lambda: fit(y=np.array(["a"] * 20)), "y has dtype <U1; it must hold "
                      "numbers"),
    "list of string labels": (lambda: fit(y=["cat"] * 20), "y holds <U3 values"),
    "None labels": (lambda: fit(y=None), "y is missing"),
    "mse with a (1, 3) target": (lambda: losses.mse(np.zeros((4, 3)), np.zeros((1, 3))),
                                 "mse: target shape (1, 3) does not match output shape (4, 3)"),
    "binary_cross_entropy target 2": (
        lambda: losses.binary_cross_entropy(np.zeros((4, 1)), np.full((4, 1), 2.0)),
        "binary_cross_entropy: targets must be in [0, 1]"),
    "uint64 labels past int64": (lambda: fit(y=np.full(20, 2**63, dtype=np.uint64)),
                                 "found values in [9223372036854775808, 9223372036854775808]"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_argument_is_an_nnkernel_error_naming_it(name):
    call, message = CASES[name]
    with pytest.raises(NnkernelError) as info:
        call()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_initial_step_in_range_still_resumes():
    history = fit(initial_step=4)  # the last of 5 steps: a legal mid-epoch resume
    assert history.epochs == [0] and np.isfinite(history["loss"][0])
