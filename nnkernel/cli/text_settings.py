"""A language model's settings from the command line: ``nnkernel train --dataset TEXT --model
gpt|lstm ...``, the defaults of the flags left out, and the flags that do not apply.

The GPT defaults are nanoGPT's CPU configuration for Tiny Shakespeare (4 layers, 4
heads, width 128, windows of 64 characters, batch 12, 2,000 steps, no dropout) with
its optimizer: AdamW at lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on the weight
matrices only, 100 steps of linear warm-up (a tenth of a run shorter than 1,000 steps)
and a cosine decay to lr/10, gradient clipping at 1.0. The LSTM (issue 24: an embedding,
2 LSTMs of 256, a Dense to the vocabulary) trains with the same optimizer and schedule.
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from ..run_settings import LANGUAGE_MODELS, RunConfig, flag_name

TRAINING = {"batch_size": 12, "steps": 2000, "eval_interval": 250, "eval_windows": 200,
            "accumulate": 1, "warmup": 100, "lr": 1e-3, "optimizer": "adamw",
            "betas": [0.9, 0.99], "weight_decay": 0.1, "clip_norm": 1.0,
            "schedule": "warmup_cosine", "dropout": 0.0, "val_split": 0.1,
            "loss": "cross_entropy"}
MODEL_DEFAULTS = {
    "gpt": {"block_size": 64, "layers": 4, "heads": 4, "dim": 128},
    "lstm": {"block_size": 64, "layers": 2, "hidden": [256], "dim": 64},
}
# Flags with no meaning for a language model; naming one is refused rather than ignored.
NOT_FOR_TEXT = ("conv", "batchnorm", "ensemble", "early_stopping", "target", "task", "epochs",
                "activation")
NOT_FOR = {"gpt": ("hidden",), "lstm": ("heads",)}
TEXT_ONLY = ("block_size", "layers", "heads", "dim", "steps", "eval_interval", "eval_windows",
             "accumulate", "warmup")
WHY = {"ensemble": "its Embedding has no member axis; train one run per model",
       "epochs": "a language model trains for --steps over random windows, not epochs",
       "early_stopping": "a language model trains for --steps",
       "hidden": "a gpt's width is --dim (--hidden is the LSTM's)",
       "heads": "an LSTM has no attention heads",
       "activation": "the GPT's MLP uses GELU and the LSTM its gates"}


def is_text_run(dataset: str, model: str | None) -> bool:
    """Whether these flags ask for a language model: --model gpt|lstm, or a text dataset
    (tinyshakespeare or a .txt file) with no --model."""
    from ..io.text import is_text_dataset

    if model in LANGUAGE_MODELS:
        return True
    if model is None:
        return is_text_dataset(dataset)
    if is_text_dataset(dataset):
        raise ConfigError(f"--dataset {dataset} is a text: train --model gpt or --model lstm on "
                          f"it (--model {model} takes feature rows)")
    return False


def refuse_text_flags(flags: dict) -> None:
    """A tabular run given a language model's flag says so."""
    named = [name for name in TEXT_ONLY if name in flags]
    if named:
        raise ConfigError(f"{flag_name(named[0])} applies to language models (--model gpt or "
                          f"lstm on a text dataset)")


def config_from_flags(flags: dict, dataset: str) -> RunConfig:
    """A new language model run's settings: the defaults above, then the flags given."""
    model = flags.get("model") or "gpt"
    for name in NOT_FOR_TEXT + NOT_FOR[model]:
        if flags.get(name) not in (None, False, []):
            why = WHY.get(name, "it applies to feature data, not text")
            raise ConfigError(f"{flag_name(name)} does not apply to --model {model}: {why}")
    if flags.get("loss") not in (None, "cross_entropy", "ce"):
        raise ConfigError(f"a language model is trained with --loss cross_entropy, not "
                          f"{flags['loss']!r}")
    chosen = {**TRAINING, **MODEL_DEFAULTS[model], **flags, "model": model, "loss": "cross_entropy"}
    if "warmup" not in flags:  # 100 steps, but never more than a tenth of a short run
        chosen["warmup"] = min(TRAINING["warmup"], chosen["steps"] // 10)
    if isinstance(chosen["lr"], list):
        raise ConfigError("--lr takes one learning rate for a language model (a list trains an "
                          "ensemble, which these models do not support)")
    if model == "lstm" and len(chosen["hidden"]) != 1:
        raise ConfigError(f"--hidden takes one width for --model lstm (every layer's), e.g. 256; "
                          f"got {','.join(map(str, chosen['hidden']))}")
    if model == "gpt" and chosen["dim"] % chosen["heads"]:
        raise ConfigError(f"--dim {chosen['dim']} must be a multiple of --heads "
                          f"{chosen['heads']} (each head takes dim/heads columns)")
    if chosen["warmup"] >= chosen["steps"]:
        raise ConfigError(f"--warmup {chosen['warmup']} must be fewer steps than --steps "
                          f"{chosen['steps']}")
    if model == "gpt":
        chosen["hidden"] = []  # not a gpt's setting: config.json says so
    chosen["dataset"] = absolute_text(dataset)
    if chosen.get("data_dir"):
        chosen["data_dir"] = os.path.abspath(chosen["data_dir"])
    return RunConfig(**chosen).check()


def absolute_text(dataset: str) -> str:
    """A file path made absolute (a resume from elsewhere reads the same file); a named text
    stays a name."""
    from ..io.text import dataset_key

    return dataset_key(dataset) or os.path.normpath(os.path.abspath(dataset))


def schedule(config: RunConfig):
    """The learning-rate factor of a language model run, step t → factor:

        warmup_cosine:  (t + 1)/w for t < w, then 0.1 + 0.9 · ½(1 + cos(π (t − w)/(S − w)))
        cosine:         0.1 + 0.9 · ½(1 + cos(π t/S));   warmup: (t + 1)/w, then 1
        constant:       1 (others as for every run: nnkernel.optim.make_schedule)

    w = --warmup, S = --steps; the cosine ends at lr/10, as nanoGPT's min_lr.
    """
    from ..optim import make_schedule
    from ..optim.schedules import CosineDecay, LinearWarmup

    name, steps, warmup = config.schedule, config.steps, config.warmup
    if name == "warmup_cosine":
        return LinearWarmup(warmup, CosineDecay(steps - warmup, min_factor=0.1)) if warmup \
            else CosineDecay(steps, min_factor=0.1)
    if name == "cosine":
        return CosineDecay(steps, min_factor=0.1)
    if name == "warmup":
        return LinearWarmup(warmup) if warmup else None
    return make_schedule(name, steps)
