"""bench/gpu_check.py's own logic on the CPU: the one-line exit, the packages line, the
markdown written after every section, the time budget. The GPU parts run on the CuPy
test double, with the benchmarks replaced by stand-ins (they are measured on a GPU only).
"""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from pathlib import Path

import pytest
from cupy_double import STATE, fake_cupy  # noqa: F401 - the fixture

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def gpu_check(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SITE", tmp_path / "site")
    monkeypatch.setattr(module, "torch_cuda_usable", lambda: False)  # no import of torch
    monkeypatch.setenv("PYTHONPATH", "")
    return module


@pytest.mark.usefixtures("fake_cupy")
def test_without_a_gpu_it_says_so_in_one_line(gpu_check, capsys):
    STATE.available = False
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--quick"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "gpu_check: no usable GPU: cupy.is_available() is False\n"


def fake_wheel(folder: Path, name: str) -> Path:
    """A minimal wheel of an importable module `name` (pip installs it offline)."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: "
                   "true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_missing_packages_come_from_the_wheels_folder(gpu_check, tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "nnk_gpu_check_probe")
    monkeypatch.setitem(gpu_check.PACKAGES, "nnk_gpu_check_probe", "nnk-gpu-check-probe")
    monkeypatch.setattr(sys, "path", list(sys.path))
    line, missing = gpu_check.ensure_packages(wheels)
    assert "nnk_gpu_check_probe" not in missing and "installed from" in line
    assert "nnk-gpu-check-probe" in line.split("MISSING")[0]
    import nnk_gpu_check_probe

    assert nnk_gpu_check_probe.VALUE == 42
    monkeypatch.delitem(sys.modules, "nnk_gpu_check_probe")
    monkeypatch.setitem(gpu_check.PACKAGES, "nnk_not_there", "nnk-not-there")
    line, missing = gpu_check.ensure_packages(None)
    assert "nnk_not_there" in missing and "nnk-not-there" in line.split("MISSING: ")[1]


@pytest.mark.usefixtures("fake_cupy")
def test_markdown_is_written_after_every_section(gpu_check, tmp_path, monkeypatch, capsys):
    import gpu_bench

    out = tmp_path / "r" / "RESULTS-gpu.md"
    seen = []

    def section_rows(*args):
        seen.append(out.read_text())  # what a killed run would have left at this point
        return [["a", "1", "2", "3", "4"]]

    def broken(*args):
        raise RuntimeError("a benchmark broke")

    for name in ("bench_mlp", "bench_tiny", "bench_gemm", "bench_ensemble"):
        monkeypatch.setattr(gpu_bench, name, section_rows)
    monkeypatch.setattr(gpu_bench, "bench_fused", broken)
    monkeypatch.setattr(gpu_check, "run_cli", lambda: [["nnkernel info", "exit 0", "gpu: x"]])
    monkeypatch.setenv("OUT", str(tmp_path / "r"))
    assert gpu_check.main(["--quick", "--skip-tests", "--wheels", str(tmp_path)]) == 0
    text = out.read_text()
    assert text.startswith("# nnkernel on NVIDIA Test Double: GPU check")
    assert "gpu_check: packages: array-api-compat" in text.splitlines()[2]
    assert "## Environment" in seen[0] and "## Command line on the GPU" in seen[0]
    assert "## MLP training step" in seen[1] and "## Launch-bound" not in seen[1]
    assert "failed: RuntimeError: a benchmark broke" in text and "## Ensemble" in text
    assert len(seen) == 4 and text.rstrip().endswith("for both libraries' matmuls.")
    assert capsys.readouterr().out.splitlines()[0].startswith("gpu_check: packages:")


@pytest.mark.usefixtures("fake_cupy")
def test_sections_past_the_budget_are_skipped(gpu_check, tmp_path):
    out = tmp_path / "r.md"
    assert gpu_check.main(["--quick", "--skip-tests", "--budget", "5", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Environment\n\n|" in text and "NVIDIA Test Double (compute capability 9.0" in text
    assert text.count("skipped:") == 6 and "this section needs about 30 s (--budget)" in text
