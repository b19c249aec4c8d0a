"""pytest-benchmark suite: the cases of `nnkernel bench`, timed in this one process.

Run it with ``pytest bench --benchmark-only`` (the nox "bench" session); it is not
part of the test run, whose testpaths are ["tests"]. Save and compare runs with
``--benchmark-json FILE`` / ``--benchmark-autosave`` and ``pytest-benchmark compare``.

Every case comes from `nnkernel.bench.plan` and every step from
`nnkernel.bench.workers.make_step`, so this suite and the sweep measure the
same code. Unlike the sweep, all libraries share this process: PyTorch's
OpenMP threads may still spin when a NumPy benchmark starts, so the
cross-library ratios of `nnkernel bench` (one process per library, rounds
interleaved) are the ones to quote; this suite tracks each case over time.
"""

from __future__ import annotations

import importlib.util

import pytest

from nnkernel.bench import FULL, Unavailable, plan
from nnkernel.bench.workers import calibrate, make_step

HAVE_TORCH = importlib.util.find_spec("torch") is not None

if HAVE_TORCH:
    import torch

    torch.set_num_threads(2)  # as the sweep's PyTorch worker


def pytest_generate_tests(metafunc):
    """Tests that take (case, impl) run over the cases of their module's SECTION."""
    if {"case", "impl"} <= set(metafunc.fixturenames):
        metafunc.parametrize(("case", "impl"), case_params(metafunc.module.SECTION))


def case_params(section: str, sizes: dict | None = None):
    """pytest params (case, impl) for one section, grouped by case; torch skipped if absent."""
    params = []
    for case in plan((section,), sizes or FULL, "float32", "cpu"):
        for impl in case.impls:
            marks = []
            if impl.startswith("torch") and not HAVE_TORCH:
                marks.append(pytest.mark.skip(reason="torch not installed"))
            params.append(pytest.param(case, impl, marks=marks, id=f"{case.label}|{impl}"))
    return params


@pytest.fixture
def bench_case(benchmark):
    """Time one (case, impl): warm up, then let pytest-benchmark repeat the step."""

    def run(case, impl):
        benchmark.group = f"{case.section}: {case.label}"
        benchmark.extra_info.update({"impl": impl, "unit": case.unit, "items": case.items,
                                     "flops": case.flops})
        try:
            step = make_step({**case.spec, "impl": impl})
        except Unavailable as why:  # e.g. the transformer's nnkernel side before nk.gpt
            pytest.skip(str(why))
        calibrate(step, 0.1, 0.0)

        def one():
            step.run()
            step.sync()

        benchmark(one)

    return run
