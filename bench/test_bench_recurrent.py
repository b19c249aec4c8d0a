"""pytest-benchmark: the "recurrent" cases of `nnkernel bench`, one group per case."""

SECTION = "recurrent"


def test_recurrent(bench_case, case, impl):
    bench_case(case, impl)
