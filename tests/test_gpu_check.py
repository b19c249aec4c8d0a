"""bench/gpu_check.py on the CPU: the one-line exit, the packages line, the dry run through every
section, the files written as it goes, and the time limits that stop a section in time.

The GPU parts run on CuPy's test double (``--dry-run``); figures are measured on a GPU only.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from cupy_double import STATE, fake_cupy  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@pytest.fixture
def gpu_check(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SITE", tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("OUT", raising=False)
    return module


@pytest.mark.usefixtures("fake_cupy")
def test_without_a_gpu_it_says_so_in_one_line(gpu_check, capsys):
    STATE.available = False
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--quick"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "gpu_check: no usable GPU: cupy.is_available() is False\n"


def test_quick_on_this_machine_exits_2_with_one_line(tmp_path):
    """As documented, in a fresh process: no GPU here (CuPy absent, or present without one)."""
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--quick", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("gpu_check: no usable GPU: ")
    assert not list(tmp_path.iterdir())  # nothing written


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


def test_dry_run_walks_every_section_in_under_a_minute(tmp_path):
    import nnkernel.kernels.cupy as twin

    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert seconds < 60
    assert proc.stdout.splitlines()[0].startswith("gpu_check: packages: array-api-compat")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "RESULTS-gpu.md", "gpu_check.json", "gpu_check.log", "pytest.log"]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = figures["sections"]
    assert list(sections) == ["environment", "kernels", "tests", "cli", "mlp", "tiny", "fused",
                              "gemm", "ensemble"]
    for name, section in sections.items():
        assert section["rows"] and section["note"] == "", name
    pairs = [(s.name, d) for s in twin.cuda_sources()
             for d in ((s.dtype,) if hasattr(s, "dtype") else s.dtypes)]
    cache, *kernels = sections["kernels"]["rows"]
    assert cache[0] == "(CuPy's kernel cache)" and "before this section" in cache[3]
    assert [tuple(row[:2]) for row in kernels] == pairs
    assert all(row[3].startswith("built; not compiled (dry run") for row in kernels)
    assert "tests collected" in sections["tests"]["rows"][0][1]
    text = (tmp_path / "RESULTS-gpu.md").read_text()
    assert "no figure here is a GPU measurement" in text
    assert all(f"## {section['title']}" in text for section in sections.values())
    assert "===== ensemble:" in (tmp_path / "gpu_check.log").read_text()


def fake_section(rows_then_sleep: int):
    """A child that writes one row, then works for `rows_then_sleep` seconds."""
    return [sys.executable, "-c", "import json, sys, time; open(sys.argv[1], 'a').write("
            "json.dumps(['first', '1']) + '\\n'); print('wrote a row', flush=True); "
            f"time.sleep({rows_then_sleep})"]


def test_a_section_is_stopped_at_its_limit_keeps_its_rows_and_the_rest_runs(
        gpu_check, tmp_path, monkeypatch):
    sections = [("slow", "Slow", ["a", "b"], (2, 2), 1), ("next", "Next", ["a", "b"], (5, 5), 1)]
    monkeypatch.setattr(gpu_check, "SECTIONS", sections)
    monkeypatch.setattr(gpu_check, "RESERVE_S", 0.5)
    seen = []

    def command(self, name, rows_file):
        seen.append((self.md.read_text(), json.loads((self.out / "gpu_check.json").read_text())
                     if name == "next" else None))  # what a killed run would have left
        return fake_section(60 if name == "slow" else 0) + [str(rows_file)]

    monkeypatch.setattr(gpu_check.Check, "_command", command)
    t0 = time.monotonic()
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--skip-tests"]) == 1
    assert time.monotonic() - t0 < 20
    md, figures = seen[1]
    assert "## Slow\n\n| a | b |\n|---|---|\n| first | 1 |\n\nstopped at its time limit, 2 s" in md
    assert figures["sections"]["slow"]["rows"] == [["first", "1"]]
    final = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert final["next"] == {"title": "Next", "header": ["a", "b"], "rows": [["first", "1"]],
                             "note": "", "seconds": final["next"]["seconds"]}
    assert "wrote a row" in (tmp_path / "gpu_check.log").read_text()


def test_a_limit_is_the_time_left_and_sections_without_time_are_skipped(
        gpu_check, tmp_path, monkeypatch):
    sections = [("slow", "Slow", ["a", "b"], (60, 60), 1), ("late", "Late", ["a"], (60, 60), 5)]
    monkeypatch.setattr(gpu_check, "SECTIONS", sections)
    monkeypatch.setattr(gpu_check, "RESERVE_S", 0.5)
    monkeypatch.setattr(gpu_check.Check, "_command",
                        lambda self, name, rows: fake_section(60) + [str(rows)])
    t0 = time.monotonic()
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path), "--budget", "4"]) == 1
    assert time.monotonic() - t0 < 15  # the 60 s section was cut at the budget, not its cap
    final = json.loads((tmp_path / "gpu_check.json").read_text())["sections"]
    assert re.match(r"stopped at its time limit, [34] s", final["slow"]["note"])
    assert final["late"]["note"].startswith("skipped: 0 s of the time budget left")
    assert final["late"]["rows"] == []
