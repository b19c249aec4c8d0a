"""``nnkernel train --dataset TEXT --model gpt|lstm``, ``generate``, ``evaluate``, ``export`` and
the flags that do not apply, on a small text the tests write (tiny models: width 8, 2 layers)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nnkernel.cli import main
from nnkernel.io import checkpoint

GPT = ["--model", "gpt", "--block-size", "12", "--layers", "2", "--heads", "2", "--dim", "8",
       "--batch-size", "4", "--steps", "30", "--eval-interval", "10", "--warmup", "3",
       "--threads", "1"]


def write_text(path, lines=40, seed=0):
    r = random.Random(seed)
    words = "the cat sat on a mat and a dog ran to the log".split()
    path.write_text("\n".join(" ".join(r.choice(words) for _ in range(6)) + "."
                              for _ in range(lines)), encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished GPT run on a written text: (directory, text path, its --json result)."""
    where = tmp_path_factory.mktemp("text")
    corpus = write_text(where / "corpus.txt")
    out = where / "run"
    buf = io.StringIO()  # module scope: no capsys
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        code = main(["train", "--dataset", str(corpus), *GPT, "--out", str(out), "--json"])
    assert code == 0
    return out, corpus, json.loads(buf.getvalue())


def test_train_saves_the_vocabulary_and_scores_the_held_out_tail(trained):
    out, corpus, result = trained
    config = json.loads((out / "config.json").read_text())
    text = corpus.read_text()
    assert config["dataset"]["tokenizer"] == {"type": "characters",
                                              "vocab": "".join(sorted(set(text)))}
    assert config["dataset"]["name"] == str(corpus)
    assert config["dataset"]["fingerprint"]["characters"] == len(text)
    hyper = config["hyperparameters"]
    assert (hyper["model"], hyper["steps"], hyper["block_size"], hyper["betas"]) == (
        "gpt", 30, 12, [0.9, 0.99])
    assert config["finished"] is True and (config["epoch"], config["step"]) == (3, 0)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == [10, 20, 30] and len(metrics["val_bpc"]) == 3
    assert result["val_characters"] == len(text) - int(len(text) * 0.9)
    assert result["val_bpc"] == pytest.approx(result["val_loss"] / np.log(2))
    assert result["val_loss"] < np.log(len(set(text)))  # learned something in 30 steps
    # AdamW decayed the matrices only: the optimizer records which
    decayed = set(config["optimizer"]["decay"])
    assert "0.W" not in decayed and "1.W" not in decayed  # token and position embeddings
    assert {"2.1.Wqkv", "2.1.Wo", "3.1.W", "3.3.W"} <= decayed and "3.1.b" not in decayed


def test_evaluate_scores_what_training_reported(trained, capsys):
    out, corpus, result = trained
    code, stdout, _ = run(capsys, "evaluate", out, "--json")
    assert code == 0
    scored = json.loads(stdout)
    assert scored["val_loss"] == pytest.approx(result["val_loss"], rel=1e-6)
    assert scored["rows"] == "test" and scored["step"] == 30
    code, stdout, _ = run(capsys, "evaluate", out, "--rows", "all")
    assert code == 0 and "bits/character" in stdout


def test_generate_is_seeded_and_keeps_the_prompt(trained, capsys):
    out, corpus, _ = trained
    args = ["generate", out, "--prompt", "the cat", "--tokens", "40", "--temperature", "0.8",
            "--top-k", "5", "--seed", "7"]
    code, first, _ = run(capsys, *args)
    assert code == 0
    code, second, _ = run(capsys, *args)
    assert first == second and first.startswith("the cat") and len(first.rstrip("\n")) >= 47
    assert set(first) <= set(corpus.read_text()) | {"\n"}
    code, stdout, _ = run(capsys, "generate", out, "--prompt", "a", "--tokens", "5",
                          "--temperature", "0", "--json")
    assert code == 0 and len(json.loads(stdout)["text"]) == 5


def test_a_prompt_character_outside_the_vocabulary_is_refused_by_name(trained, capsys):
    code, _, err = run(capsys, "generate", trained[0], "--prompt", "the çat")
    assert code == 2
    assert "--prompt has 'ç' (U+00E7 LATIN SMALL LETTER C WITH CEDILLA) at position 4" in err


def test_export_writes_safetensors_and_onnx_refuses_clearly(trained, capsys, tmp_path):
    out = trained[0]
    pytest.importorskip("safetensors")
    code, _, err = run(capsys, "export", out, "--safetensors", tmp_path / "m.safetensors")
    assert code == 0, err
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "m.safetensors"))
    weights = checkpoint.load_arrays(out / "model.npz")
    assert np.array_equal(tensors["0.W"], weights["model/0.W"])
    code, _, err = run(capsys, "export", out, "--onnx", tmp_path / "m.onnx")
    if code != 0:  # attention's ONNX export is another engineer's; until then, a clear refusal
        assert "nnkernel: error:" in err and "ONNX" in err and "Traceback" not in err


def test_predict_points_to_generate(trained, capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 3), dtype=np.float32))
    code, _, err = run(capsys, "predict", trained[0], tmp_path / "x.npy")
    assert code == 2 and "language model run" in err and "nnkernel generate" in err


def test_another_text_is_refused_on_resume_and_scored_whole_by_evaluate(trained, capsys,
                                                                         tmp_path):
    out, corpus, _ = trained
    other = write_text(tmp_path / "other.txt", seed=1)
    code, stdout, _ = run(capsys, "evaluate", out, "--dataset", other, "--json")
    assert code == 0 and json.loads(stdout)["rows"] == "all"
    code, _, err = run(capsys, "train", "--resume", out)
    assert code == 0 and "nothing left to train" in err


@pytest.mark.parametrize("flags, message", [
    (["--conv", "8"], "--conv does not apply to --model gpt"),
    (["--ensemble", "2"], "--ensemble does not apply to --model gpt: its Embedding has no "
                          "member axis"),
    (["--epochs", "3"], "--epochs does not apply.*--steps"),
    (["--hidden", "16"], "a gpt's width is --dim"),
    (["--dim", "10", "--heads", "4"], "--dim 10 must be a multiple of --heads 4"),
    (["--model", "mlp"], "is a text: train --model gpt or --model lstm"),
    (["--loss", "mse"], "cross_entropy"),
    (["--warmup", "30", "--steps", "30"], "--warmup 30 must be fewer steps"),
])
def test_flags_that_do_not_apply_are_refused(flags, message, capsys, tmp_path):
    corpus = write_text(tmp_path / "c.txt")
    code, _, err = run(capsys, "train", "--dataset", corpus, *flags, "--out", tmp_path / "r")
    assert code == 2, err
    assert re.search(message, err), err
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_a_tabular_run_refuses_the_language_model_flags(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--block-size", "8", "--out", tmp_path / "r")
    assert code == 2 and "--block-size applies to language models" in err


def nnkernel(*argv) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nnkernel", *map(str, argv)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout=240) -> tuple[int, str]:
    try:
        _, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_ctrl_c_mid_interval_then_resume_is_bit_identical(tmp_path):
    corpus = write_text(tmp_path / "c.txt", lines=80)
    # dropout and accumulation: their random draws must continue where they stopped too
    argv = ["train", "--dataset", corpus, *GPT, "--steps", "600", "--eval-interval", "100",
            "--dropout", "0.1", "--accumulate", "2", "--quiet"]
    code, err = finish(nnkernel(*argv, "--out", tmp_path / "straight"))
    assert code == 0, err
    run = tmp_path / "run"
    p = nnkernel(*argv, "--out", run)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None and not (run / "model.npz").exists():
        time.sleep(0.005)  # the first evaluation's save: model.npz is renamed into place
    time.sleep(0.2)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGINT)
    code, err = finish(p)
    assert code == 130, err
    step = int(re.search(rf"interrupted at step (\d+); resume with: nnkernel train --resume "
                         rf"{re.escape(str(run))}", err).group(1))
    assert 100 < step < 600 and step % 100
    config = json.loads((run / "config.json").read_text())
    assert (config["epoch"], config["step"]) == divmod(step, 100)
    shutil.copytree(run, tmp_path / "copy")

    code, err = finish(nnkernel("train", "--resume", run, "--quiet"))
    assert code == 0, err
    a = checkpoint.load_arrays(tmp_path / "straight" / "model.npz")
    b = checkpoint.load_arrays(run / "model.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), "weights differ"
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "straight", run))
    for key in ("step", "loss", "val_loss", "lr"):  # the interrupted interval's means whole
        assert ma[key] == mb[key], key

    write_text(corpus, lines=80, seed=3)  # the text changed since: its copy cannot resume
    code, err = finish(nnkernel("train", "--resume", tmp_path / "copy"))
    assert code == 2 and "is not the text the run was trained on" in err


def test_a_character_lstm_trains_generates_and_evaluates(capsys, tmp_path):
    corpus = write_text(tmp_path / "c.txt")
    out = tmp_path / "lstm"
    code, stdout, err = run(capsys, "train", "--dataset", corpus, "--model", "lstm", "--hidden",
                            "16", "--layers", "2", "--dim", "8", "--block-size", "12",
                            "--batch-size", "4", "--steps", "20", "--eval-interval", "10",
                            "--warmup", "2", "--threads", "1", "--out", out, "--json")
    assert code == 0, err
    layers = json.loads((out / "config.json").read_text())["model"]["layers"]
    assert [layer["type"] for layer in layers] == ["Embedding", "LSTM", "LSTM", "Dense"]
    assert json.loads(stdout)["val_loss"] < np.log(len(set(corpus.read_text())))
    code, stdout, _ = run(capsys, "generate", out, "--prompt", "the", "--tokens", "20",
                          "--seed", "1")
    assert code == 0 and stdout.startswith("the") and len(stdout) >= 23
    code, stdout, _ = run(capsys, "evaluate", out, "--json")
    assert code == 0 and json.loads(stdout)["val_loss"] == pytest.approx(  # the same windows
        json.loads((out / "metrics.json").read_text())["val_loss"][-1], rel=1e-6)


def test_defaults_are_nanogpts_cpu_configuration_and_the_schedule_ends_at_a_tenth():
    from nnkernel.cli import text_settings

    config = text_settings.config_from_flags({}, "corpus.txt")
    assert (config.model, config.block_size, config.layers, config.heads, config.dim,
            config.batch_size, config.steps, config.dropout) == ("gpt", 64, 4, 4, 128, 12,
                                                                 2000, 0.0)
    assert (config.optimizer, config.lr, config.betas, config.weight_decay, config.clip_norm,
            config.warmup) == ("adamw", 1e-3, [0.9, 0.99], 0.1, 1.0, 100)
    schedule = text_settings.schedule(config)
    assert schedule(0) == pytest.approx(1 / 100) and schedule(99) == pytest.approx(1.0)
    assert schedule(100) == pytest.approx(1.0) and schedule(1999) == pytest.approx(0.1, abs=1e-5)
    assert schedule(1050) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    short = text_settings.config_from_flags({"steps": 30}, "corpus.txt")
    assert short.warmup == 3  # a tenth of a short run, not 100 steps it does not have
    lstm = text_settings.config_from_flags({"model": "lstm"}, "corpus.txt")
    assert (lstm.hidden, lstm.layers, lstm.dim) == ([256], 2, 64)


def test_config_validation_reads_the_layers_of_a_gpt_and_names_their_faults():
    import nnkernel as nk
    from nnkernel.io.run_config import validate_run_config
    from nnkernel.io.validate import model_array_shapes

    model = nk.gpt(11, 8, 8, 2, 2, seed=0)
    config = {"model": model.config()}
    assert validate_run_config(config) == []
    params, state = model_array_shapes(config["model"])  # nested keys, the tied head has none
    assert params == {k: tuple(v.shape) for k, v in model.params.items()} and state == {}
    bad = json.loads(json.dumps(config))
    bad["model"]["layers"][0]["num_embeddings"] = "eleven"
    bad["model"]["layers"][2]["layers"][1]["heads"] = 3  # 8 columns do not split in 3
    bad["model"]["layers"][3]["layers"][1]["init"] = "normal(-1)"
    bad["model"]["layers"][-1]["tied_to"] = [0]
    problems = "; ".join(validate_run_config(bad))
    assert "model.layers[0] (Embedding): Embedding num_embeddings must be a positive integer" \
        in problems
    assert "model.layers[2].layers[1] (MultiHeadAttention)" in problems
    assert "model.layers[3].layers[1].init must be an initializer's name or normal(std)" \
        in problems
    assert "tied_to must be the path of a layer before it" in problems


def test_the_progress_lines_say_nats_and_bits_and_fit_the_terminal():
    from nnkernel.train.step_progress import StepProgress, eval_line

    line = eval_line({"step": 250, "loss": 2.5, "bpc": 2.5 / np.log(2), "val_loss": 2.6,
                      "val_bpc": 2.6 / np.log(2), "lr": 1e-3, "seconds": 12.5,
                      "tokens_per_second": 6000.0}, 2000)
    assert line == ("step 250/2000  loss 2.5000 (3.607 bpc)  val_loss 2.6000 (3.751 bpc)  "
                    "lr 1.00e-03  12.5s  6,000 tokens/s")
    bar = StepProgress(2000)
    bar.start(0)
    for width in (40, 80, 120):
        text = bar.line(500, 2.25, bar.t0 + 30.0, width)
        assert len(text) <= width - 1 and text.startswith("step ")
    assert "ETA 1m30s" in bar.line(500, 2.25, bar.t0 + 30.0, 120)
