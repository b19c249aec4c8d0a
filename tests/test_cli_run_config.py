"""Issue 21: run settings typed once (`RunConfig`), recorded with the run and restored on resume;
issue 25: threads chosen by the work and said in the run's config.

The old run in tests/data/old_run_interrupted was written by nnkernel before RunConfig
(see its README.md); it must still resume, bit for bit.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnkernel.cli import build_parser, main
from nnkernel.cli.settings import RESUME_MAY_CHANGE, config_from_args
from nnkernel.errors import ConfigError
from nnkernel.io import checkpoint
from nnkernel.io.run_config import validate_run_config
from nnkernel.run_settings import RunConfig

ROOT = Path(__file__).resolve().parent.parent
OLD_RUN = Path(__file__).parent / "data" / "old_run_interrupted"
OLD_FLAGS = ["--hidden", "48", "--batch-size", "1", "--threads", "1", "--epochs", "3"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def same_arrays(a: Path, b: Path) -> bool:
    wa, wb = (checkpoint.load_arrays(d / "model.npz") for d in (a, b))
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ the dataclass

def test_defaults_are_sound_and_json_round_trips():
    config = RunConfig()
    assert config.problems() == []
    assert RunConfig.from_json(config.to_json()) == config
    changed = config.replace(hidden=[8], lr=[1e-3, 1e-2], ensemble=2, threads=1,
                             threads_reason="--threads", flush_subnormals=False,
                             keep_freed_memory=False, preprocessing={"divide_by": 16.0})
    assert RunConfig.from_json(json.loads(json.dumps(changed.to_json()))) == changed
    assert changed.to_json()["runtime"]["threads"] == 1


def test_problems_name_every_bad_field():
    bad = RunConfig(hidden=[16, 0], dropout=1.5, batch_size=0, lr=[0.1, 0.2], threads=0)
    problems = bad.problems()
    assert any(p.startswith("hidden must be a list of positive integers") for p in problems)
    assert any(p.startswith("dropout must be a finite number in [0, 1)") for p in problems)
    assert any(p.startswith("batch_size must be a positive integer") for p in problems)
    assert any(p.startswith("threads must be a positive integer") for p in problems)
    assert "lr lists 2 values for one model (no ensemble)" in problems
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        bad.check()


def test_every_flag_of_train_is_a_runconfig_field_with_its_checks():
    parser = build_parser()
    flags = {a.dest for a in parser._subparsers._group_actions[0].choices["train"]._actions}
    fields = {f.name for f in dataclasses.fields(RunConfig) if f.metadata["group"]}
    assert fields <= flags
    assert RESUME_MAY_CHANGE == {"epochs", "backend", "device", "data_dir", "tf32", "threads"}
    args = parser.parse_args(["train", "--dataset", "fashion-mnist", "--lr", "1e-3,3e-3",
                              "--threads", "2"])
    config = config_from_args(args)
    assert (config.epochs, config.schedule, config.ensemble, config.threads) == (15, "cosine",
                                                                                 2, 2)


def test_the_field_validators_are_a_leaf_module():
    # Issue 21: the scikit-learn estimators will reuse them: nothing from cli/ (or io/).
    for name in ("fields.py", "run_settings.py"):
        tree = ast.parse((ROOT / "nnkernel" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                assert node.module.split(".")[0] not in ("cli", "io"), (name, node.module)


def test_train_imports_neither_io_nor_distributed():
    # io/ holds file formats, train/ sits below it. (loop.py's lazy import of distributed for
    # fit(distributed=True) is the one exception, the lead's.)
    for path in sorted((ROOT / "nnkernel" / "train").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
                top = node.module.split(".")[0]
                assert top != "io", (path.name, node.module)
                assert top != "distributed" or path.name == "loop.py", (path.name, node.module)
    run_dir_source = (ROOT / "nnkernel" / "io" / "run_dir.py").read_text()
    assert "class SaveEachEpoch" not in run_dir_source  # run policy lives with the CLI


def test_model_checkpoint_writes_without_train_importing_io(tmp_path):
    import nnkernel as nk

    model = nk.Sequential(nk.Dense(3, 2), seed=0)
    X, y = np.ones((8, 3), np.float32), np.zeros(8, np.int64)
    cb = nk.train.ModelCheckpoint(tmp_path / "m.npz", monitor="loss")
    nk.fit(model, X, y, epochs=1, batch_size=4, callbacks=[cb], progress=False)
    assert (tmp_path / "m.npz").exists() and cb.saved == [tmp_path / "m.npz"]
    written = []
    own = nk.train.ModelCheckpoint(tmp_path / "n.npz", monitor="loss",
                                   save=lambda m, p: written.append(p))
    nk.fit(model, X, y, epochs=1, batch_size=4, callbacks=[own], progress=False)
    assert written == [tmp_path / "n.npz"] and not (tmp_path / "n.npz").exists()


# ------------------------------------------------------------------ a run written by old code

def test_the_old_config_is_valid_and_reads_as_a_runconfig():
    config = json.loads((OLD_RUN / "config.json").read_text())
    assert "threads" not in config["runtime"]  # written before threads were recorded
    assert validate_run_config(config) == []
    settings = RunConfig.from_json(config)
    assert (settings.hidden, settings.batch_size, settings.epochs) == ([48], 1, 3)
    assert settings.flush_subnormals is True  # from the optimizer's own record
    assert settings.threads is None and settings.preprocessing == {"divide_by": 16.0}


def test_a_run_written_by_the_old_code_resumes_bit_identical(capsys, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN, old, ignore=shutil.ignore_patterns("README.md"))
    code, _, err = run(capsys, "train", "--resume", old, "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "train", *OLD_FLAGS, "--out", tmp_path / "straight", "--quiet")
    assert code == 0, err
    assert same_arrays(old, tmp_path / "straight")
    config = json.loads((old / "config.json").read_text())
    assert config["runtime"]["threads"] == 1 and config["finished"] is True
    assert config["runtime"]["flush_subnormals"] is True



# ------------------------------------------------------------------ numerics recorded

def test_a_new_run_records_what_changes_its_numbers(capsys, tmp_path):
    code, out, err = run(capsys, "train", "--hidden", "16", "--epochs", "1", "--out",
                         tmp_path / "r", "--json", "--quiet")
    assert code == 0, err
    runtime = json.loads((tmp_path / "r" / "config.json").read_text())["runtime"]
    assert runtime["threads"] == 1 and runtime["threads_reason"].startswith("the work")
    assert runtime["flush_subnormals"] is True
    assert isinstance(runtime["keep_freed_memory"], bool)
    result = json.loads(out)
    assert result["threads"] == 1 and result["blas_threads"] in (1, None)


def test_resume_restores_the_recorded_settings(capsys, tmp_path, monkeypatch):
    import nnkernel.cli.train as train_cli
    from nnkernel.backend.numpy import NumpyBackend

    out = tmp_path / "r"
    assert run(capsys, "train", "--hidden", "16", "--epochs", "1", "--threads", "2", "--out",
               out, "--quiet")[0] == 0
    config = json.loads((out / "config.json").read_text())
    config["runtime"].update(flush_subnormals=False, keep_freed_memory=False)
    (out / "config.json").write_text(json.dumps(config))
    applied, tuned = [], []
    monkeypatch.setattr(train_cli.threads, "apply", applied.append)
    monkeypatch.setattr(NumpyBackend, "tune_allocator", lambda self: tuned.append(1) or True)
    built = []
    real = train_cli.build_optimizer
    monkeypatch.setattr(train_cli, "build_optimizer",
                        lambda c, s: built.append(real(c, s)) or built[-1])
    code, _, err = run(capsys, "train", "--resume", out, "--epochs", "2", "--quiet")
    assert code == 0, err
    assert applied == [2]  # the run's own count, not the rule's 1 for this small network
    assert tuned == []  # the run kept glibc's defaults: so does its resume
    assert built[0].flush_subnormals is False
    runtime = json.loads((out / "config.json").read_text())["runtime"]
    assert (runtime["threads"], runtime["flush_subnormals"]) == (2, False)
    assert runtime["keep_freed_memory"] is False


# ------------------------------------------------------------------ threads

def test_threads_are_chosen_by_the_work():
    from nnkernel.cli import threads
    from nnkernel.nn.builders import cnn, mlp

    options = {"activation": "relu", "dropout": 0.0, "batchnorm": False, "seed": 0,
               "dtype": "float32", "backend": "numpy", "ensemble": None}
    digits = mlp(64, [256, 256], 10, **options)
    assert threads.largest_product(digits, 32) == 32 * 256 * 256
    assert threads.choose(digits, 32)[0] == 1
    fashion = mlp(784, [512, 512], 10, **options)
    assert threads.choose(fashion, 256)[0] == threads.cores()
    assert threads.choose(fashion, 256, share=1)[0] == 1
    conv = cnn((1, 28, 28), [32, 64], [128], 10, **options)
    assert threads.largest_product(conv, 128) == 128 * 64 * 32 * 9 * 14 * 14


def test_the_environment_decides_when_it_says(monkeypatch):
    from nnkernel.cli import threads
    from nnkernel.nn.builders import mlp

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    model = mlp(784, [512, 512], 10, activation="relu", dropout=0.0, batchnorm=False, seed=0,
                dtype="float32", backend="numpy", ensemble=None)
    n, why = threads.choose(model, 256)
    assert "OPENBLAS_NUM_THREADS=1" in why


def test_threads_need_nothing_outside_the_dependencies():
    # `--threads` told the user to install threadpoolctl, which was not a dependency.
    text = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[([^\]]*)\]", text, re.M).group(1)
    assert '"threadpoolctl' in dependencies
