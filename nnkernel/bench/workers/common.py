"""What every side of a benchmark shares: the step object, the registry of step builders, and
the same input numbers."""

from __future__ import annotations

import numpy as np

N_BATCHES = 4  # distinct input batches a step cycles through (no cache-hot single batch)

# (kind, impl) -> build(case) -> Step; filled by the @step decorators of the side modules
BUILDERS: dict = {}


class Step:
    """A timed unit of work: ``run()`` does one step, ``sync()`` waits for the device."""

    def __init__(self, run, sync=None):
        self.run = run
        self.sync = sync or (lambda: None)


class Unavailable(Exception):
    """This implementation cannot run the case here: a library or an nnkernel feature (say
    ``nk.gpt``) is missing. The sweep prints the reason in place of a row; nothing is timed."""


def step(kind: str, *impls: str):
    """Register ``build(case) -> Step`` as the step of workload ``kind`` for each of ``impls``.

    A builder imports its library inside the function, so that each worker process
    loads only its own library (PyTorch's threads would spin against OpenBLAS's).
    """
    def register(build):
        for impl in impls:
            if (kind, impl) in BUILDERS:
                raise ValueError(f"two step builders for kind {kind!r}, impl {impl!r}")
            BUILDERS[(kind, impl)] = build
        return build

    return register


def nnkernel_with(name: str, issue: str):
    """nnkernel, if it has ``nk.<name>``; else Unavailable (no number is made up)."""
    import nnkernel as nk

    if not hasattr(nk, name):
        raise Unavailable(f"this nnkernel has no nk.{name} yet ({issue})")
    return nk


def inputs(case, n_in, rows=None):
    """N_BATCHES float inputs (rows, n_in) and integer labels / float targets, as NumPy."""
    rng = np.random.default_rng(case.get("seed", 0))
    rows = case["batch"] if rows is None else rows
    dt = np.dtype(case.get("dtype", "float32"))
    xs = [rng.standard_normal((rows, n_in)).astype(dt) for _ in range(N_BATCHES)]
    n_out = case["sizes"][-1] if "sizes" in case else 10
    if case.get("loss", "ce") == "ce":
        ts = [rng.integers(0, n_out, rows) for _ in range(N_BATCHES)]
    else:
        ts = [rng.standard_normal((rows, n_out)).astype(dt) for _ in range(N_BATCHES)]
    return xs, ts


def image_inputs(case):
    """N_BATCHES image batches (batch, C, H, W) in [0, 1) and integer labels, as NumPy."""
    rng = np.random.default_rng(case.get("seed", 0))
    dt = np.dtype(case.get("dtype", "float32"))
    shape = (case["batch"], *case["image"])
    xs = [rng.random(shape).astype(dt) for _ in range(N_BATCHES)]
    ts = [rng.integers(0, case["classes"], case["batch"]) for _ in range(N_BATCHES)]
    return xs, ts


def cycle(items):
    """A function returning items[0], items[1], ... round and round."""
    state = {"i": -1}
    n = len(items)

    def nxt():
        state["i"] = (state["i"] + 1) % n
        return items[state["i"]]

    return nxt


def matmul_shapes(case):
    if case["kind"] == "matmul":
        n = case["n"]
        return (n, n), (n, n)
    E, N, K, M = case["shape"]
    return (E, N, K), (E, K, M)


def random_arrays(case, *shapes):
    rng = np.random.default_rng(case.get("seed", 0))
    dt = np.dtype(case.get("dtype", "float32"))
    return [rng.standard_normal(s).astype(dt) for s in shapes]
