"""nk.keep_freed_memory() keeps freed memory in the heap (glibc): no page faults in steady training.

Each check runs in a fresh interpreter, since the thresholds are set once per
process and would leak into the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nnkernel.backend import malloc

GLIBC = sys.platform.startswith("linux") and malloc._is_glibc()
needs_glibc = pytest.mark.skipif(
    not GLIBC, reason="the thresholds are glibc's; other C libraries are left alone")

# An ensemble of 64 64-64-10 MLPs at batch 128: each step frees and re-allocates 2 MiB
# temporaries, which glibc's default thresholds return to the OS after every step.
STEPS = """
import json, resource
import numpy as np
import nnkernel as nk
from nnkernel.backend import malloc
nk.keep_freed_memory()
model = nk.Sequential(nk.Dense(64, 64), nk.ReLU(), nk.Dense(64, 10), ensemble=64, seed=0)
opt = nk.optim.Adam(lr=1e-3)
rng = np.random.default_rng(0)
x = rng.standard_normal((128, 64)).astype(np.float32)
t = rng.integers(0, 10, 128)
def step():
    _, dy = nk.losses.cross_entropy(model.forward(x, train=True), t, members=True)
    model.backward(dy, input_grad=False)
    opt.step(model.params, model.grads)
for _ in range(20):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
print(json.dumps({"faults_per_step": faults, "applied": malloc.keep_freed_memory(),
                  "status": malloc.status()}))
"""


def _run(env_update):
    env = {k: v for k, v in os.environ.items()
           if k not in (malloc.OPT_OUT, *malloc.GLIBC_VARIABLES)}
    env.update(env_update)
    out = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_steady_training_does_not_fault_pages_back_in():
    tuned = _run({})
    assert tuned["applied"] is True
    assert "raised" in tuned["status"]
    # with glibc's defaults this step faults ~990 pages back in, every step
    assert tuned["faults_per_step"] < 10, tuned


@needs_glibc
@pytest.mark.parametrize("env, words", [
    ({malloc.OPT_OUT: "0"}, f"{malloc.OPT_OUT}=0"),
    ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, "MALLOC_TRIM_THRESHOLD_=1000000"),
])
def test_opt_out_and_user_settings_are_respected(env, words):
    result = _run(env)
    assert result["applied"] is False
    assert words in result["status"]


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(malloc, "_is_glibc", lambda: False)
    monkeypatch.delenv(malloc.OPT_OUT, raising=False)
    for name in malloc.GLIBC_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert malloc._apply() is False
    assert "not glibc" in malloc.status()


def test_nothing_changes_until_asked():
    """Process-wide tuning is opt-in: building and training a model leaves glibc alone."""
    code = STEPS.replace("nk.keep_freed_memory()\n", "").replace(
        '"applied": malloc.keep_freed_memory()', '"applied": malloc._state.get("applied")')
    env = {k: v for k, v in os.environ.items()
           if k not in (malloc.OPT_OUT, *malloc.GLIBC_VARIABLES)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["applied"] is None
    if GLIBC:
        assert "not called" in result["status"]
