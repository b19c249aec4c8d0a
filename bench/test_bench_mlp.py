"""pytest-benchmark: the "mlp" cases of `nnkernel bench`, one group per case (conftest.py)."""

SECTION = "mlp"


def test_mlp(bench_case, case, impl):
    bench_case(case, impl)
