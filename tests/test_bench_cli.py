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
            code = bench.main(["--quick", "--only", "tiny,ensemble,transformer", "--members", "2",
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


def rows_under(text: str, label: str) -> list[str]:
    """The indented implementation lines printed under a case's own line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(label + "  "))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        rows.append(line)
    return rows


def test_quick_run_prints_a_row_per_implementation(quick_run):
    code, text, _, _ = quick_run
    assert code == 0, text
    assert bench.TABLE_HEAD in text
    assert "GEMM ceiling" in text and "load average before timing" in text
    impls = ["nnkernel", "numpy-loop"] + (["torch"] if HAVE_TORCH else []) + sorted(JAX_IMPLS)
    for opt in ("sgd", "adam"):
        rows = rows_under(text, f"2-16-1 tanh mse {opt} N=64")
        assert sorted(r.split()[0] for r in rows) == sorted(impls), (opt, text)
        assert all(" µs [" in r or " ms [" in r for r in rows), rows


def test_the_table_fits_100_columns(quick_run):
    _, text, _, _ = quick_run
    wide = [line for line in text.splitlines() if len(line) > 100]
    assert not wide, wide
    head = [line for line in text.splitlines() if line.startswith(bench.TABLE_HEAD)]
    assert any(line.split()[-4:] == ["vs", "torch-func", "vs", "torch-loop"] for line in head)


def test_a_side_that_is_not_available_is_said_not_timed(quick_run):
    """The transformer section's nnkernel side needs nk.gpt: until it exists the table says
    so in place of a row, and the JSON lists it apart from the measured rows."""
    import nnkernel as nk

    _, text, report, _ = quick_run
    gpt_rows = [r for r in report["rows"] if r["section"] == "transformer"]
    assert {r["impl"] for r in gpt_rows} == ({"torch"} if HAVE_TORCH else set()) | (
        {"nnkernel"} if hasattr(nk, "gpt") else set())
    for r in gpt_rows:
        assert r["unit"] == "tokens/s" and r["gflops"] > 0 and r["pct_ceiling"] > 0
    if not hasattr(nk, "gpt"):
        (entry,) = report["unavailable"]
        assert entry["impl"] == "nnkernel" and "nk.gpt" in entry["reason"]
        (label,) = {c.label for c in bench.plan(["transformer"], bench.QUICK, "float32", "cpu")}
        assert any("not available" in r and "nk.gpt" in r for r in rows_under(text, label))


def test_json_report_is_consistent(quick_run):
    _, _, report, _ = quick_run
    rows = [r for r in report["rows"] if r["section"] == "tiny"]
    assert all(r["refs"] == ["torch", "numpy-loop"] for r in rows)
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
        bench.main(["--only", "mlp,resnet"])
    assert exc.value.code == 2
    assert "resnet" in capsys.readouterr().err


def test_mlp_flops_count_real_matmuls():
    # forward 2·N·in·out per layer, backward 4·N·in·out except the first layer's dx
    n = 256
    fwd = 2 * n * (784 * 512 + 512 * 512 + 512 * 10)
    bwd = 4 * n * (512 * 512 + 512 * 10) + 2 * n * 784 * 512
    assert bench.mlp_flops((784, 512, 512, 10), n) == fwd + bwd


def load_script(name: str):
    """A developer script of bench/ as a module."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_goals_are_judged_from_rows_outside_the_package(tmp_path, capsys):
    """Project targets live in bench/goals.py, a developer script: nnkernel bench only measures."""
    goals = load_script("goals")

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


def test_compare_revisions_pools_rounds_and_flags_only_a_case_beyond_the_spread(tmp_path):
    compare = load_script("compare_revisions")

    def report(*cases):
        return {"rows": [{"section": "mlp", "case": c, "impl": "nnkernel", "seconds": s}
                         for c, s in cases]}

    before = [report(("a", [1.0, 1.2]), ("b", [1.0, 1.1]), ("c", [2e-3])),
              report(("a", [1.1, 1.3]), ("b", [1.05, 1.1]), ("c", [3e-3]))]
    after = [report(("a", [1.2, 1.3]), ("b", [1.4, 1.5]), ("c", [1e-3])),
             report(("a", [1.25, 1.2]), ("b", [1.6, 1.45]))]
    lines = compare.table(before, after, None)
    by = {line.split()[0]: line for line in lines[1:]}
    assert by["a"].endswith("1.07")  # 1.225 / 1.15, inside the before rounds' 1.0–1.3
    assert by["b"].endswith("1.37 slower")  # 1.475 / 1.075, above every before round
    assert by["c"].endswith("0.40 faster") and "2.50 [2.00–3.00] ms" in by["c"]
    assert compare.checkout(str(tmp_path), tmp_path / "unused") == tmp_path.resolve()
