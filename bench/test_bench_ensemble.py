"""pytest-benchmark: the "ensemble" cases of `nnkernel bench`, one group per case (conftest.py)."""

SECTION = "ensemble"


def test_ensemble(bench_case, case, impl):
    bench_case(case, impl)
