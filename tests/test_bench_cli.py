"""`nnkernel bench` end to end with tiny settings: workers, interleaved rounds, table, JSON.

One short run (the launch-bound 2-16-1 section, one round per implementation)
serves the checks on the printed table, the JSON report, the per-process
workers and --unset-openblas-env; the rest are pure functions.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from nnkernel import bench
from nnkernel.bench.workers import calibrate, make_step, time_round

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_JAX = importlib.util.find_spec("jax") is not None
JAX_IMPLS = {"jax", "jax-compiled"} if HAVE_JAX else set()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run the tiny section once; return (exit code, printed text, JSON report)."""
    import contextlib
    import io
    import os

    path = tmp_path_factory.mktemp("bench") / "report.json"
    saved = os.environ.get("OPENBLAS_L2_SIZE")
    # Set in this process only, to see it removed for the workers; OpenBLAS here is loaded.
    os.environ["OPENBLAS_L2_SIZE"] = "1048576"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = bench.main(["--quick", "--only", "tiny,ensemble", "--members", "2",
                               "--repeats", "2", "--round-seconds", "0.01", "--settle", "0.01",
                               "--ceiling-size", "512", "--unset-openblas-env",
                               "--json", str(path), "--plot", str(path.with_suffix(".png"))])
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_L2_SIZE")
        else:
            os.environ["OPENBLAS_L2_SIZE"] = saved
    report = json.loads(path.read_text()) if path.exists() else None
    return code, out.getvalue(), report, path.with_suffix(".png")


def test_quick_run_prints_a_row_per_implementation(quick_run):
    code, text, _, _ = quick_run
    assert code == 0, text
    assert bench.TABLE_HEAD in text
    assert "GEMM ceiling" in text and "load average before timing" in text
    impls = ["nnkernel", "numpy-loop"] + (["torch"] if HAVE_TORCH else []) + sorted(JAX_IMPLS)
    for opt in ("sgd", "adam"):
        for impl in impls:
            assert any(f"2-16-1 tanh mse {opt} N=64" in line and f" {impl} " in line
                       for line in text.splitlines()), (opt, impl, text)


def test_json_report_is_consistent(quick_run):
    _, _, report, _ = quick_run
    rows = [r for r in report["rows"] if r["section"] == "tiny"]
    assert {r["case"] for r in rows} == {"2-16-1 tanh mse sgd N=64", "2-16-1 tanh mse adam N=64"}
    ceiling = report["ceiling"]["nnkernel"]["median"]
    assert ceiling > 0.1  # GFLOP/s of a 2048 float32 matmul: any machine does more
    by = {(r["case"], r["impl"]): r for r in rows}
    for r in rows:
        assert len(r["seconds"]) == 2 and all(s > 0 for s in r["seconds"])
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["throughput"] == pytest.approx(64 / r["median_s"])
        assert r["pct_ceiling"] == pytest.approx(100 * r["gflops"] / ceiling)
        if HAVE_TORCH and r["impl"] != "torch":
            torch_secs = by[(r["case"], "torch")]["seconds"]
            ratios = [t / s for t, s in zip(torch_secs, r["seconds"], strict=True)]
            assert r["vs"]["torch"]["median"] == pytest.approx(sum(ratios) / 2)
    assert "goals" not in report  # targets are the project's, not the user's output


def test_each_library_runs_in_its_own_process(quick_run):
    _, _, report, _ = quick_run
    workers = report["workers"]
    assert len({w["pid"] for w in workers.values()}) == len(workers)
    assert workers["nnkernel"]["torch_loaded"] is False
    assert workers["numpy"]["torch_loaded"] is False
    if HAVE_TORCH:
        assert workers["torch"]["torch_threads"] == 2


def test_unset_openblas_env_reaches_the_workers(quick_run):
    _, text, report, _ = quick_run
    for w in report["workers"].values():
        assert w["env"]["OPENBLAS_L2_SIZE"] is None
        assert w["env"]["OPENBLAS_CORETYPE"] is None
    assert "UNSET for the worker processes" in text
    assert "OPENBLAS_L2_SIZE=1048576" in text  # what this shell had


def test_ensemble_rows_and_plot(quick_run):
    _, _, report, png = quick_run
    rows = [r for r in report["rows"] if r["section"] == "ensemble"]
    impls = {"nnkernel", "nnkernel-loop"} | ({"torch-func", "torch-loop"} if HAVE_TORCH else set())
    assert {r["impl"] for r in rows} == impls | JAX_IMPLS
    assert all(r["x"] == 2 and r["unit"] == "steps/s" for r in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--only", "mlp,gpt"])
    assert exc.value.code == 2
    assert "gpt" in capsys.readouterr().err


def test_mlp_flops_count_real_matmuls():
    # forward 2·N·in·out per layer, backward 4·N·in·out except the first layer's dx
    n = 256
    fwd = 2 * n * (784 * 512 + 512 * 512 + 512 * 10)
    bwd = 4 * n * (512 * 512 + 512 * 10) + 2 * n * 784 * 512
    assert bench.mlp_flops((784, 512, 512, 10), n) == fwd + bwd


def test_goals_are_judged_from_rows_outside_the_package(tmp_path, capsys):
    """Project targets live in bench/goals.py, a developer script: nnkernel bench only measures."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "goals.py"
    spec = importlib.util.spec_from_file_location("goals", path)
    goals = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(goals)

    def row(vs):
        return {"section": "mlp", "case": "784-512-512-10 N=256", "impl": "nnkernel",
                "pct_ceiling": None, "vs": {"torch": {"median": vs, "min": vs, "max": vs}}}

    assert goals.check_goals([row(1.3)])[0]["holds"] is True
    assert goals.check_goals([row(1.1)])[0]["holds"] is False
    report = tmp_path / "bench.json"
    report.write_text(json.dumps({"rows": [row(1.1)]}))
    assert goals.main([str(report)]) == 0
    assert "MISSED" in capsys.readouterr().out
    assert not hasattr(bench, "check_goals")


@pytest.mark.parametrize("kind", ["matmul", "bmm", "dense_fwd", "dense_fwd_bwd", "softmax_ce",
                                  "adam", "ensemble"])
def test_every_kernel_case_builds_and_runs(kind):
    cases = [c for c in bench.plan(bench.SECTIONS, bench.QUICK, "float32", "cpu")
             if c.spec["kind"] == kind]
    assert cases
    case = cases[0]
    impls = [i for i in case.impls if HAVE_TORCH or not i.startswith("torch")]
    # the same case with small sizes: this checks that each side builds and runs it
    spec = {**case.spec, "n": 64, "shape": [2, 8, 4, 4], "n_in": 16, "n_out": 8, "batch": 32}
    if kind in ("adam", "ensemble"):
        spec.update(sizes=[8, 4, 3], members=2)
    for impl in impls:
        step = make_step({**spec, "impl": impl})
        steps = calibrate(step, 0.0, 0.001)
        assert steps >= 1
        assert time_round(step, 1) > 0


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
