"""pytest-benchmark: the "kernels" cases of `nnkernel bench`, one group per case (conftest.py)."""

SECTION = "kernels"


def test_kernels(bench_case, case, impl):
    bench_case(case, impl)
