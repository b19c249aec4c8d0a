"""Run directories under damage: partial optimizer state, non-finite weights, bad config.json.

Each test reproduces a defect of the first run_dir: a model.npz without
``optimizer/0.W/exp_avg`` resumed with that state silently reset to zeros (exit
0, other weights), NaN weights were evaluated, and config.json fields such as
``"batch_size": "32"`` or ``"n_in": 64.9`` gave TypeErrors or were accepted.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import nnkernel as nk
from nnkernel.cli import main
from nnkernel.errors import CheckpointError, NonFiniteError
from nnkernel.io import checkpoint, run_dir
from nnkernel.io.run_config import validate_run_config
from nnkernel.io.validate import (
    assert_finite,
    expected_run_arrays,
    model_array_shapes,
    non_finite_key,
    optimizer_state_names,
    validate_optimizer_state,
)
from nnkernel.train import History

SMALL = ["--hidden", "16", "--batch-size", "64", "--lr", "1e-2", "--quiet"]


def snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnkernel: error: "), err
    return lines[0]


def rewrite_model_npz(directory: Path, change) -> None:
    """Load model.npz, let ``change(arrays)`` edit the dict, save it back."""
    arrays = checkpoint.load_arrays(directory / "model.npz")
    change(arrays)
    checkpoint.save_arrays(directory / "model.npz", arrays)


def rewrite_config(directory: Path, change) -> None:
    config = json.loads((directory / "config.json").read_text())
    change(config)
    (directory / "config.json").write_text(json.dumps(config))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A digits run written by `nnkernel train` (1 epoch of a 64-16-10 MLP with Adam)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(cli_run, tmp_path):
    copy_ = tmp_path / "run"
    shutil.copytree(cli_run, copy_)
    return copy_


def stepped(optimizer, steps=2, ensemble=None):
    """A 4-3-2 model and ``optimizer`` after ``steps`` updates on random data."""
    model = nk.Sequential(nk.Dense(4, 3, activation="relu"), nk.BatchNorm(3), nk.Dense(3, 2),
                          seed=0, ensemble=ensemble)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.integers(0, 2, size=8)
    for _ in range(steps):
        out = model.forward(x, train=True)
        _, dy = nk.losses.cross_entropy(out, np.broadcast_to(y, out.shape[:-1]),
                                        members=ensemble is not None)
        model.backward(dy)
        optimizer.step(model.params, model.grads)
    return model, optimizer


OPTIMIZERS = {
    "sgd": lambda: nk.optim.SGD(lr=0.1),
    "sgd_momentum": lambda: nk.optim.SGD(lr=0.1, momentum=0.9),
    "rmsprop": lambda: nk.optim.RMSprop(),
    "rmsprop_centered_momentum": lambda: nk.optim.RMSprop(centered=True, momentum=0.5),
    "adam": lambda: nk.optim.Adam(),
    "adamw": lambda: nk.optim.AdamW(),
}


def check(model, optimizer, arrays, t=None):
    shapes = {k: tuple(v.shape) for k, v in model.params.items()}
    validate_optimizer_state(arrays, shapes, type(optimizer).__name__, optimizer.config(), t=t)


# ------------------------------------------------------------- 2. optimizer state

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_names_are_what_the_optimizer_keeps(name):
    model, optimizer = stepped(OPTIMIZERS[name]())
    arrays = optimizer.state_arrays()
    kept = {key.rpartition("/")[2] for key in arrays} - {"step"}
    assert kept == optimizer_state_names(type(optimizer).__name__, optimizer.config())
    check(model, optimizer, arrays, t=optimizer.t)  # the real thing passes


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_missing_array_is_named(name):
    model, optimizer = stepped(OPTIMIZERS[name]())
    arrays = optimizer.state_arrays()
    for key in arrays:
        partial = {k: v for k, v in arrays.items() if k != key}
        with pytest.raises(CheckpointError, match=f"{key} is missing"):
            check(model, optimizer, partial)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_extra_and_unknown_state_is_refused(name):
    model, optimizer = stepped(OPTIMIZERS[name]())
    arrays = optimizer.state_arrays()
    with pytest.raises(CheckpointError, match="unexpected 0.W/momentum_buffer"):
        check(model, optimizer, {**arrays, "0.W/momentum_buffer": np.zeros((4, 3))})
    with pytest.raises(CheckpointError, match="'9.W/step' is state for '9.W'"):
        check(model, optimizer, {**arrays, "9.W/step": np.asarray(2)})
    with pytest.raises(CheckpointError, match="form"):
        check(model, optimizer, {**arrays, "nokey": np.asarray(2)})


def test_shapes_dtypes_and_steps_are_checked():
    model, optimizer = stepped(nk.optim.Adam(), steps=3)
    arrays = optimizer.state_arrays()
    bad = [({"0.W/exp_avg": np.zeros((3, 4), np.float32)}, r"0.W/exp_avg has shape \(3, 4\)"),
           ({"0.W/exp_avg": np.zeros((4, 3), np.int32)}, "dtype int32, expected floating"),
           ({"0.W/step": np.asarray(-1)}, "negative"),
           ({"0.W/step": np.asarray(2.0)}, "integer scalar"),
           ({"0.W/step": np.asarray([3])}, "integer scalar"),
           ({"0.b/step": np.asarray(2)}, "different steps")]
    for change, message in bad:
        with pytest.raises(CheckpointError, match=message):
            check(model, optimizer, {**arrays, **change})
    with pytest.raises(CheckpointError, match="at step 3 but .* took 5 steps"):
        check(model, optimizer, arrays, t=5)


def test_no_state_is_valid_only_before_the_first_step():
    model, optimizer = stepped(nk.optim.Adam(), steps=0)
    check(model, optimizer, {}, t=0)
    with pytest.raises(CheckpointError, match="missing, but the optimizer took 4 steps"):
        check(model, optimizer, {}, t=4)


def test_ensemble_state_is_checked_against_stacked_shapes():
    model, optimizer = stepped(nk.optim.Adam(lr=[1e-3, 1e-2]), ensemble=2)
    check(model, optimizer, optimizer.state_arrays(), t=optimizer.t)


def test_resume_without_an_adam_array_is_refused_before_anything_is_loaded(run_copy):
    # The defect: this resumed with exit 0 and exp_avg silently reset to zeros.
    rewrite_model_npz(run_copy, lambda a: a.pop("optimizer/0.W/exp_avg"))
    saved = run_dir.load(run_copy)
    model = saved.build_model()
    optimizer = nk.optim.Adam(lr=1e-2)
    with pytest.raises(CheckpointError, match=r"model.npz: optimizer state: "
                       r"optimizer/0.W/exp_avg is missing"):
        saved.restore_optimizer(optimizer, model)
    assert optimizer.state == {} and optimizer.t == 0  # untouched


def test_cli_resume_without_an_adam_array_fails_with_one_line(run_copy, capsys):
    rewrite_model_npz(run_copy, lambda a: a.pop("optimizer/0.W/exp_avg"))
    before = snapshot(run_copy)
    code = main(["train", "--resume", str(run_copy), "--epochs", "2", "--quiet"])
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and "optimizer/0.W/exp_avg is missing" in line
    assert snapshot(run_copy) == before


# ------------------------------------------------------------- 3. non-finite values

def test_assert_finite_names_the_first_bad_key_and_skips_integers():
    arrays = {"a": np.ones(3), "n": np.asarray(7), "b": np.array([1.0, np.inf, np.nan]),
              "c": np.array([np.nan])}
    assert non_finite_key(arrays) == "b"
    with pytest.raises(NonFiniteError, match=r"the run: 'b' is not finite \(2 of 3 values"):
        assert_finite(arrays, "the run")
    assert_finite({"a": np.ones(2), "n": np.arange(3)}, "fine")


def test_save_refuses_nan_weights_and_keeps_the_last_good_checkpoint(tmp_path):
    model, optimizer = stepped(nk.optim.Adam())
    run_dir.save(tmp_path, model, optimizer, {"seed": 0}, History(), 3, 0)
    before = snapshot(tmp_path)
    model.params["2.b"][0] = np.nan  # in place: what a diverging update does
    with pytest.raises(NonFiniteError, match=r"refusing to save .*model.npz at epoch 4, "
                       r"step 5: 'model/2.b' is not finite"):
        run_dir.save(tmp_path, model, optimizer, {"seed": 0}, History(), 3, 5)
    assert snapshot(tmp_path) == before


def test_save_refuses_infinite_optimizer_state(tmp_path):
    model, optimizer = stepped(nk.optim.Adam())
    optimizer.state["0.W"]["exp_avg_sq"][0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"end of epoch 2: 'optimizer/0.W/exp_avg_sq'"):
        run_dir.save(tmp_path, model, optimizer, {"seed": 0}, History(), 2, 0)
    assert list(tmp_path.iterdir()) == []


def test_build_model_refuses_non_finite_weights(run_copy):
    def poison(arrays):
        arrays["model/0.W"][3, 2] = np.nan

    rewrite_model_npz(run_copy, poison)
    saved = run_dir.load(run_copy)
    with pytest.raises(CheckpointError, match=r"the weights in .*model.npz are not finite "
                       r"\(key 0.W\); this run diverged"):
        saved.build_model()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_cli_refuses_non_finite_weights_with_one_line(run_copy, tmp_path, capsys, command):
    def poison(arrays):
        arrays["model/1.b"][:] = np.inf

    rewrite_model_npz(run_copy, poison)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 64), dtype=np.float32))
    argv = [command, str(run_copy)] + ([str(x)] if command == "predict" else [])
    code = main(argv)
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and "not finite (key 1.b)" in line and "diverged" in line


def test_restore_refuses_non_finite_optimizer_state(run_copy):
    def poison(arrays):
        arrays["optimizer/0.b/exp_avg_sq"][0] = np.nan

    rewrite_model_npz(run_copy, poison)
    saved = run_dir.load(run_copy)
    with pytest.raises(CheckpointError, match="optimizer/0.b/exp_avg_sq is not finite"):
        saved.restore_optimizer(nk.optim.Adam(lr=1e-2), saved.build_model())


# ------------------------------------------------------------- 7. config.json

def test_what_the_cli_writes_is_valid(cli_run):
    config = json.loads((cli_run / "config.json").read_text())
    assert validate_run_config(config) == []
    saved = run_dir.load(cli_run)
    optimizer = nk.optim.Adam(lr=1e-2)
    saved.restore_optimizer(optimizer, saved.build_model())
    assert optimizer.t == saved.optimizer_t > 0


@pytest.mark.parametrize("kwargs", [
    {"ensemble": None, "layers": [nk.Dense(5, 4, activation="tanh"), nk.Dense(4, 2)]},
    {"ensemble": 3, "layers": [nk.Dense(5, 4), nk.BatchNorm(4), nk.ReLU(), nk.Dropout(0.2),
                               nk.LayerNorm(4), nk.Dense(4, 2), nk.Softmax()]},
])
def test_layout_from_config_matches_a_built_model(kwargs):
    model = nk.Sequential(*kwargs["layers"], seed=1, ensemble=kwargs["ensemble"])
    params, state = model_array_shapes(model.config())
    assert params == {k: tuple(v.shape) for k, v in model.params.items()}
    assert state == {k: tuple(v.shape) for k, v in model.state.items()}


def test_expected_layout_covers_exactly_what_save_writes(cli_run):
    config = json.loads((cli_run / "config.json").read_text())
    expected = expected_run_arrays(config)
    arrays = checkpoint.load_arrays(cli_run / "model.npz")
    assert set(arrays) <= set(expected)
    for key, value in arrays.items():
        shape, kinds = expected[key]
        assert value.shape == shape and value.dtype.kind in kinds, key


HOSTILE = [
    (("hyperparameters", "batch_size"), "32", "hyperparameters.batch_size must be a positive"),
    (("hyperparameters", "lr"), "fast", "hyperparameters.lr must be a finite number > 0"),
    (("hyperparameters", "lr"), float("nan"), "hyperparameters.lr"),
    (("hyperparameters", "epochs"), -1, "hyperparameters.epochs must be an integer >= 0"),
    (("hyperparameters", "dropout"), 1.5, "hyperparameters.dropout must be a finite number"),
    (("hyperparameters", "optimizer"), "adamax", "hyperparameters.optimizer must be one of"),
    (("hyperparameters", "hidden"), [16, 0], "hyperparameters.hidden"),
    (("hyperparameters", "lr"), [0.1, 0.2], r"lr lists 2 values for one model \(no ensemble\)"),
    (("hyperparameters", "batchnorm"), "yes", "hyperparameters.batchnorm must be true or false"),
    (("model", "layers", 0, "n_in"), 64.9, r"model.layers\[0\].n_in must be a positive integer"),
    (("model", "layers", 0, "n_in"), True, r"model.layers\[0\].n_in must be a positive integer"),
    (("model", "layers", 0, "n_out"), 17, r"model.layers\[1\] \(Dense\) takes 16 features but "
                                          "the layer before gives 17"),
    (("model", "layers", 0, "type"), "Conv3D", r"model.layers\[0\] must be a layer with a known"),
    (("model", "layers", 0, "activation"), "relux", r"model.layers\[0\].activation must be one"),
    (("model", "layers", 0, "bogus"), 1, r"model.layers\[0\] \(Dense\) has an unknown field"),
    (("model", "layers"), [], "model.layers must be a non-empty list"),
    (("model", "dtype"), "float8", "model.dtype must be one of"),
    (("model", "ensemble"), 0, "model.ensemble must be a positive integer or null"),
    (("runtime", "dtype"), "float16", "runtime.dtype must be one of float32, float64"),
    (("runtime", "tf32"), 1, "runtime.tf32 must be true or false"),
    (("dataset", "name"), 7, "dataset.name must be a non-empty string"),
    (("dataset", "n_features"), "64", "dataset.n_features must be a positive integer"),
    (("seed",), -3, "seed must be an integer >= 0"),
    (("epoch",), 1.0, "epoch must be an integer >= 0"),
    (("model", "layers", 0, "n_out"), 10**12, "model describes .* bytes"),
]


def _set(config, path, value):
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@pytest.mark.parametrize(("path", "value", "message"), HOSTILE,
                         ids=[".".join(map(str, p)) + "=" + repr(v)[:12] for p, v, _ in HOSTILE])
def test_bad_config_fields_are_named(cli_run, tmp_path, path, value, message):
    config = json.loads((cli_run / "config.json").read_text())
    _set(config, path, value)
    problems = validate_run_config(config)
    assert any(re.search(message, p) for p in problems), problems
    directory = tmp_path / "run"
    shutil.copytree(cli_run, directory)
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json is not a valid run configuration"):
        run_dir.load(directory)


def test_missing_sections_and_fields(cli_run):
    config = json.loads((cli_run / "config.json").read_text())
    broken = copy.deepcopy(config)
    del broken["hyperparameters"]["batch_size"], broken["model"], broken["runtime"]["dtype"]
    problems = validate_run_config(broken)
    assert "hyperparameters.batch_size is missing" in problems
    assert "model (the architecture) is missing" in problems
    assert "runtime.dtype is missing" in problems
    assert validate_run_config([1]) == ["the configuration must be a JSON object, got [1]"]


def test_many_problems_make_one_line_that_says_how_many_more(run_copy, capsys):
    def change(config):
        for name in config["hyperparameters"]:
            config["hyperparameters"][name] = "x"

    rewrite_config(run_copy, change)
    code = main(["evaluate", str(run_copy)])
    line = one_line_error(capsys.readouterr().err)
    assert code == 1 and "config.json is not a valid run configuration" in line
    assert "more)" in line


WEIRD = ["32", 64.9, True, None, [], {}, -1, 0, 10**30, float("inf"), "", [[[]]], {"a": 1}]


def test_no_single_field_change_gets_past_load_and_build_as_anything_but_checkpoint_error(
        cli_run, tmp_path):
    """A fuzz over every field: a mutated config.json either loads and builds, or fails
    as one CheckpointError/ConfigError (never a TypeError, KeyError or RecursionError)."""
    config = json.loads((cli_run / "config.json").read_text())
    directory = tmp_path / "run"
    shutil.copytree(cli_run, directory)

    def paths(value, prefix=()):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from paths(v, (*prefix, k))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, v in enumerate(value):
                yield from paths(v, (*prefix, i))
        yield prefix

    for path in [p for p in paths(config) if p]:
        for value in WEIRD:
            mutated = copy.deepcopy(config)
            _set(mutated, path, value)
            assert all(isinstance(p, str) for p in validate_run_config(mutated))
            (directory / "config.json").write_text(json.dumps(mutated))
            try:
                run_dir.load(directory).build_model()
            except (CheckpointError, nk.ConfigError):
                pass


def test_deep_config_json_is_refused_by_load(run_copy):
    depth = 100_000
    (run_copy / "config.json").write_text('{"model": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(CheckpointError, match="config.json is nested"):
        run_dir.load(run_copy)


@pytest.mark.skipif(os.name != "posix", reason="FIFOs are POSIX")
def test_fifo_metrics_json_is_refused_not_ignored(run_copy):
    (run_copy / "metrics.json").unlink()
    os.mkfifo(run_copy / "metrics.json")
    with pytest.raises(CheckpointError, match="metrics.json is a FIFO"):
        run_dir.load(run_copy)


def test_nan_is_not_a_finite_learning_rate():
    assert math.isnan(float("nan"))  # JSON "NaN" parses: the validator must catch it
    config = {"model": {"layers": [{"type": "Dense", "n_in": 2, "n_out": 1}]},
              "hyperparameters": {"lr": float("nan")}}
    assert any("hyperparameters.lr must be" in p for p in validate_run_config(config))


# ------------------------------------------------------------- 1. hostile model.npz in a run

def test_bomb_in_a_run_is_refused_by_the_layout_before_it_inflates(run_copy):
    import tracemalloc

    from test_checkpoint_hostile import write_bomb

    write_bomb(run_copy / "model.npz", "model/0.W", 64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"model.npz does not match the architecture "
                           r"and optimizer in .*config.json: array 'model/0.W' has shape "
                           r"\(8388608,\), expected \(64, 16\)"):
            run_dir.load(run_copy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_load_passes_the_byte_limit_on(cli_run):
    # the model itself (4,840 bytes) is within the limit; its checkpoint, with Adam, is not
    with pytest.raises(CheckpointError, match=r"model.npz is .* bytes, over the limit of "
                       r"6,000 bytes"):
        run_dir.load(cli_run, max_bytes=6000)
    with pytest.raises(CheckpointError, match=r"config.json .* model describes 4,840 bytes"):
        run_dir.load(cli_run, max_bytes=1000)
