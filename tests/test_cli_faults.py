"""The command line under faults, end to end: what issue 16's file-level fixes promise.

The library functions live in nnkernel.io (out_dir, fingerprint) and are tested on
their own; these tests check that `nnkernel train` calls them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnkernel.cli import main

SMALL = ["--hidden", "16", "--batch-size", "64", "--lr", "1e-2", "--quiet"]
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file semantics")


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnkernel: error: "), err
    assert "Traceback" not in err
    return lines[0]


def cli(*argv, cwd=None, timeout=300, preexec_fn=None):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nnkernel", *map(str, argv)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec_fn)


def npz_dataset(path: Path, seed: int, n=200) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 5)).astype(np.float32)
    np.savez(path, X=X, y=(X[:, 0] > 0.5).astype(np.int64))
    return path


# ------------------------------------------------------------------ wired or not: promises

def test_resume_without_an_optimizer_array_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    from nnkernel.io import checkpoint

    arrays = checkpoint.load_arrays(out / "model.npz")
    del arrays["optimizer/1.b/exp_avg_sq"]
    checkpoint.save_arrays(out / "model.npz", arrays)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 1
    assert "optimizer/1.b/exp_avg_sq is missing" in one_line_error(capsys.readouterr().err)


# ------------------------------------------------------------------ needing the CLI's calls

@posix_only

def test_two_trains_into_one_out_one_is_refused(tmp_path):
    # The defect: both exited 0, and the directory held a mix of their files.
    out = tmp_path / "run"
    a = cli("train", *SMALL, "--epochs", "150", "--seed", "1", "--out", out)
    b = cli("train", *SMALL, "--epochs", "150", "--seed", "2", "--out", out)
    results = [(p.wait(timeout=300), p.stderr.read()) for p in (a, b)]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    err = next(err for code, err in results if code)
    assert "is in use by another nnkernel process" in err or "already holds a run" in err
    winner = 1 if results[0][0] == 0 else 2
    config = json.loads((out / "config.json").read_text())
    assert config["seed"] == winner and config["epoch"] == 150


def test_train_removes_temporaries_a_kill_9_left(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    stale = out / ".model.npz.dead1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert not stale.exists()


@posix_only

def test_dangling_out_symlink_is_named(tmp_path, capsys):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "missing")
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(link)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"--out {link} is a symlink to a missing path {tmp_path / 'missing'}" in line


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl")

def test_read_only_out_fails_before_training(tmp_path):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def obey_file_modes():  # root ignores modes unless CAP_DAC_OVERRIDE is dropped
        libc.prctl(24, 1, 0, 0, 0)

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        p = cli("train", *SMALL, "--epochs", "3", "--out", ro,  # empty, read-only
                preexec_fn=obey_file_modes if os.geteuid() == 0 else None)
        code = p.wait(timeout=300)
        line = one_line_error(p.stderr.read())
    finally:
        ro.chmod(0o755)
    assert code == 1 and "not writable" in line and "--out" in line


def test_resume_on_other_data_is_refused(tmp_path, capsys):
    data = npz_dataset(tmp_path / "data.npz", seed=0)
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--dataset", str(data), "--epochs", "1", "--out",
                 str(out)]) == 0
    npz_dataset(data, seed=1)  # same shape, other rows: the old CLI resumed on it
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) != 0
    line = one_line_error(capsys.readouterr().err)
    assert "the training data differ" in line and "sampled rows" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_relative_dataset_path_is_stored_absolute(tmp_path, monkeypatch, capsys):
    (tmp_path / "a").mkdir()
    npz_dataset(tmp_path / "a" / "data.npz", seed=0)
    monkeypatch.chdir(tmp_path / "a")
    assert main(["train", *SMALL, "--dataset", "data.npz", "--epochs", "1", "--out",
                 str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"]["name"] == str(tmp_path / "a" / "data.npz")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--quiet"]) == 0


@posix_only
@pytest.mark.parametrize("command", ["evaluate", "predict", "resume"])
def test_fifo_model_npz_is_one_line_and_never_blocks(tmp_path, capsys, command):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    (out / "model.npz").unlink()
    os.mkfifo(out / "model.npz")
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 64), dtype=np.float32))
    argv = {"evaluate": ["evaluate", out], "predict": ["predict", out, x],
            "resume": ["train", "--resume", out, "--epochs", "2"]}[command]
    capsys.readouterr()
    p = cli(*argv)
    try:
        code = p.wait(timeout=60)  # the old loader blocked here forever
    finally:
        if p.poll() is None:
            p.kill()
    assert code == 1
    assert "FIFO" in one_line_error(p.stderr.read())
