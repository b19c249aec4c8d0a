"""The NumPy twin's exactness claims for its speed tricks (moved here from test_bench_cli.py,
where they were written while benchmarking): Adam in L2-sized slices gives the same bits,
the column-wise row maximum equals z.max, and the subnormal flush is opt-in."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("weight_decay, decoupled", [(None, False), (0.1, False), (0.1, True)])
def test_twin_adam_in_slices_gives_the_same_numbers(weight_decay, decoupled):
    """The NumPy twin updates a large flat buffer slice by slice (for the cache): same bits."""
    import numpy as np

    from nnkernel.kernels.numpy import NumpyKernels

    sliced, whole = NumpyKernels(np), NumpyKernels(np)
    sliced.adam_chunk_bytes = 64  # 16 float32 per slice: 101 elements take 7 slices
    whole.adam_chunk_bytes = 1 << 30
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(101).astype(np.float32) for _ in range(2)] + \
        [np.zeros(101, np.float32)] * 2
    runs = []
    for k in (sliced, whole):
        p, g, m, v = (a.copy() for a in start)
        for step in range(1, 4):
            out = k.adam(p, g * step, m, v, 0.01, 0.9, 0.999, 1e-8, weight_decay, decoupled,
                         step)
            assert out[0] is p and out[1] is m and out[2] is v
        runs.append((p, m, v))
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(runs[0][0], start[0])


@pytest.mark.parametrize("shape", [(300, 10), (4, 128, 10), (256, 16), (256, 17), (3, 7)])
def test_twin_row_max_by_columns_is_exact(shape):
    """The twin's column-wise row maximum (softmax-CE of many short rows) equals z.max."""
    import numpy as np

    from nnkernel.kernels.numpy.losses import _row_max

    z = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    z.reshape(-1)[::37] = -np.inf
    z.reshape(-1)[5] = np.nan  # NaN propagates, as in z.max
    want = z.max(axis=-1, keepdims=True)
    np.testing.assert_array_equal(_row_max(z), want)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flush_subnormals_is_opt_in_and_flushes_first_moments_only(dtype):
    """With Adam(flush_subnormals=True), m entries that decayed into the subnormal range become
    0 every SUBNORMAL_FLUSH_EVERY steps, on the twin and the reference alike; without it,
    nothing is flushed."""
    import numpy as np

    from nnkernel.kernels import numpy as numpy_twin
    from nnkernel.kernels.reference import SUBNORMAL_FLUSH_EVERY, Kernels

    info = np.finfo(dtype)
    m = np.array([info.tiny / 4, -info.tiny / 1e3, info.tiny, -2.5, 0.0, np.inf, np.nan], dtype)
    before = m.copy()
    numpy_twin.flush_subnormals(m)
    assert m[0] == 0 and m[1] == 0 and not np.signbit(m[1])
    np.testing.assert_array_equal(m[2:], before[2:])

    def adam(kernels, flush):
        p, g = np.ones(3, dtype), np.array([0.0, 1.0, -1.0], dtype)
        m, v = np.array([info.tiny / 8, 0.5, 0.5], dtype), np.ones(3, dtype)
        p, m, v = kernels.adam(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, None, False,
                               SUBNORMAL_FLUSH_EVERY, flush)
        return p, m

    for flush in (True, False):
        p_twin, m_twin = adam(numpy_twin.NumpyKernels(np), flush)
        p_ref, m_ref = adam(Kernels(np), flush)
        assert (m_twin[0] == 0) == flush and m_twin[1] != 0
        np.testing.assert_array_equal(m_twin, m_ref)
        np.testing.assert_allclose(p_twin, p_ref, rtol=1e-6)
        assert p_twin[0] == 1.0  # the flushed entry moved its weight by nothing
