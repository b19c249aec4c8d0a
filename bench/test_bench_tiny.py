"""pytest-benchmark: the "tiny" cases of `nnkernel bench`, one group per case (conftest.py)."""

SECTION = "tiny"


def test_tiny(bench_case, case, impl):
    bench_case(case, impl)
