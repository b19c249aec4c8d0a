"""Run each script in examples/ as a user would and check the results it prints.

Each example runs in a fresh interpreter from a temporary working directory, so
it must find nnkernel on its own and depend on no file but the package's.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, tmp_path) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"no match for {pattern!r} in:\n{text}"
    return float(match.group(1))


def test_every_example_is_tested():
    tested = {"linear_regression.py", "sigmoid_neuron.py", "xor.py", "quickstart.py",
              "ensemble_sweep.py", "sequence_classification.py"}
    found = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert found == tested


def test_linear_regression_recovers_the_line(tmp_path):
    out = run_example("linear_regression.py", tmp_path)
    w = number(r"learned weight w = (-?[\d.]+)", out)
    b = number(r"learned bias\s+b = (-?[\d.]+)", out)
    assert abs(w - 2.0) < 0.05 and abs(b - 1.0) < 0.05, out


def classic_sigmoid_neuron():
    """The same exercise written out in NumPy: w ← w − 0.1 · Xᵀ((y − d) y (1 − y)) / N."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    d = np.array([0.0, 0.0, 1.0, 1.0])
    w, b = np.array([0.1, 0.5]), -3.0
    for _ in range(10_000):
        y = 1.0 / (1.0 + np.exp(-(X @ w + b)))
        w = w - 0.1 * X.T @ ((y - d) * y * (1.0 - y)) / 4
    y = 1.0 / (1.0 + np.exp(-(X @ w + b)))
    return w, np.sum((d - y) ** 2) / 8


def test_sigmoid_neuron_matches_the_worked_example(tmp_path):
    out = run_example("sigmoid_neuron.py", tmp_path)
    w1 = number(r"w1 = (-?[\d.]+)", out)
    w2 = number(r"w2 = (-?[\d.]+)", out)
    E = number(r"error E = ([\d.]+)", out)
    assert number(r"b = (-?[\d.]+)", out) == -3.0  # the frozen bias did not move
    w_ref, E_ref = classic_sigmoid_neuron()
    assert w1 == pytest.approx(w_ref[0], abs=1e-3) and w2 == pytest.approx(w_ref[1], abs=1e-3)
    assert E == pytest.approx(E_ref, abs=1e-5)
    assert w1 > 3.0  # x1 outweighs the fixed bias
    rounded = [int(m) for m in re.findall(r"rounded (\d)", out)]
    targets = [int(m) for m in re.findall(r"target (\d)", out)]
    assert rounded == targets == [0, 0, 1, 1], out


def test_xor_is_learned(tmp_path):
    out = run_example("xor.py", tmp_path)
    rows = re.findall(r"xor\((\d), (\d)\) = (\d): predicted ([\d.]+) -> (\d)", out)
    assert len(rows) == 4, out
    for a, b, target, prob, label in rows:
        assert int(target) == int(a) ^ int(b)
        assert int(label) == int(target) and abs(float(prob) - int(target)) < 0.1, out


def test_quickstart_trains_on_digits(tmp_path):
    out = run_example("quickstart.py", tmp_path)
    before = number(r"one batch: .*loss ([\d.]+)", out)
    after = number(r"same batch has loss ([\d.]+)", out)
    assert after < before
    assert len(re.findall(r"^epoch\s+\d+:", out, flags=re.M)) == 10
    assert number(r"test accuracy ([\d.]+)\s*$", out) > 0.9, out


def test_ensemble_sweep_reports_each_member(tmp_path):
    out = run_example("ensemble_sweep.py", tmp_path)
    rows = re.findall(r"^\s*(\d)\s+([\d.e-]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, flags=re.M)
    assert [int(r[0]) for r in rows] == [0, 1, 2], out
    acc = {float(r[1]): float(r[4]) for r in rows}
    assert set(acc) == {1e-4, 1e-3, 1e-2}
    assert acc[1e-2] > 0.9 and acc[1e-2] > acc[1e-4] + 0.2, out  # too small a rate lags behind


def test_sequence_classification_learns_the_frequencies_ignoring_padding(tmp_path):
    out = run_example("sequence_classification.py", tmp_path)
    losses = [float(m) for m in re.findall(r"train loss ([\d.]+)", out)]
    assert len(losses) == 6 and losses[-1] < losses[0] / 5, out
    assert "NaN or zero padding, same predictions: True" in out
    assert number(r"test accuracy ([\d.]+)\s*$", out) > 0.9, out
