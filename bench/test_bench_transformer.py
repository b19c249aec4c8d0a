"""pytest-benchmark: the "transformer" cases of `nnkernel bench`, one group per case."""

SECTION = "transformer"


def test_transformer(bench_case, case, impl):
    bench_case(case, impl)
