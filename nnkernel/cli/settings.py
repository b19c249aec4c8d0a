"""A run's settings from the command line: the dataset's defaults, the flags given, and what a
resume may change. The settings themselves, their types and checks are `RunConfig`
(nnkernel.run_settings)."""

from __future__ import annotations

import dataclasses

from ..errors import CheckpointError, ConfigError
from ..run_settings import RunConfig, flag_name, settings_with_flags

# What `nnkernel train --dataset NAME` uses for the flags not given. The image sets get
# the 784-256-256-10 ReLU MLP; the toy sets a net of their size. On Fashion-MNIST a cosine
# decay of Adam's lr reached 0.90 test accuracy in 15 epochs where a constant lr wandered
# (bench/history/2026-12-02-fashion-tta.md).
DATASET_DEFAULTS = {
    "digits": {"hidden": [256, 256], "epochs": 20, "batch_size": 32, "lr": 1e-3},
    "fashion-mnist": {"hidden": [256, 256], "epochs": 15, "batch_size": 128, "lr": 1e-3,
                      "schedule": "cosine"},
    "mnist": {"hidden": [256, 256], "epochs": 10, "batch_size": 128, "lr": 1e-3,
              "schedule": "cosine"},
    "xor": {"hidden": [8], "activation": "tanh", "epochs": 500, "batch_size": 4, "lr": 1e-2},
    "spirals": {"hidden": [64, 64], "epochs": 200, "batch_size": 32, "lr": 1e-2},
    "moons": {"hidden": [32, 32], "epochs": 100, "batch_size": 32, "lr": 1e-2},
    "linear": {"hidden": [16], "epochs": 200, "batch_size": 16, "lr": 1e-2},
}
# With --conv the flags not given take these instead (a CNN needs a smaller Dense part and
# fewer epochs); "*" for every dataset, then the dataset's own. Measured in
# bench/history/2026-12-01-cnn-step.md.
CONV_DEFAULTS = {
    "*": {"hidden": [128]},
    "fashion-mnist": {"epochs": 6, "schedule": "cosine"},
    "mnist": {"epochs": 4, "schedule": "cosine"},
}
VAL_SEED = 0  # the validation split is the same whatever --seed says
# Training flags a --resume may change (RunConfig marks them); the others must match the run.
RESUME_MAY_CHANGE = {fd.name for fd in settings_with_flags() if fd.metadata["resume"]}
FIXED_ON_RESUME = tuple(fd.name for fd in settings_with_flags() if not fd.metadata["resume"])


def given(args) -> dict:
    """The settings the flags of this command line set (flags left out are None)."""
    return {fd.name: getattr(args, fd.name) for fd in settings_with_flags()
            if getattr(args, fd.name, None) is not None}


def config_from_args(args) -> RunConfig:
    """A new run's settings: RunConfig's defaults, the dataset's, then the flags given."""
    from ..io.datasets import DEFAULT_DATASET
    from ..io.fingerprint import absolute_dataset_spec
    from . import text_settings

    flags = given(args)
    dataset = flags.get("dataset") or DEFAULT_DATASET
    if text_settings.is_text_run(dataset, flags.get("model")):
        config = text_settings.config_from_flags(flags, dataset)
        check_names(config)
        return config
    text_settings.refuse_text_flags(flags)
    key = dataset.lower().replace("_", "-")
    chosen = dict(DATASET_DEFAULTS.get(key, {}))
    if flags.get("conv"):
        chosen.update({**CONV_DEFAULTS["*"], **CONV_DEFAULTS.get(key, {})})
    chosen.update(flags)
    lr = chosen.get("lr")
    if isinstance(lr, list):
        if flags.get("ensemble") is not None and flags["ensemble"] != len(lr):
            raise ConfigError(f"--lr lists {len(lr)} values but --ensemble is "
                              f"{flags['ensemble']}; give one learning rate per member")
        chosen["ensemble"] = len(lr)
    if chosen.get("val_split") is None and chosen.get("early_stopping"):
        chosen["val_split"] = 0.1
    paths = absolute_dataset_spec({"name": dataset, "data_dir": chosen.get("data_dir")})
    chosen.update(dataset=paths["name"], data_dir=paths["data_dir"],
                  batchnorm=bool(chosen.get("batchnorm")), tf32=bool(chosen.get("tf32")))
    config = RunConfig(**chosen)
    check_names(config)  # the registries' own messages, which list the valid names
    return config.check()


def config_for_resume(args, saved) -> RunConfig:
    """The saved run's settings; flags may change only what RESUME_MAY_CHANGE names."""
    try:
        config = RunConfig.from_json(saved.config, str(saved.directory / "config.json"))
    except ConfigError as e:
        raise CheckpointError(f"{e}; it is not a run written by nnkernel train") from e
    flags = given(args)
    if config.language_model and "epochs" in flags:
        raise ConfigError(f"{saved.directory} is a language model run: it trains for --steps "
                          f"({config.steps}), fixed when it started, not epochs")
    fixed = sorted(set(flags) - RESUME_MAY_CHANGE)
    if fixed:
        def listing(names):
            return ", ".join(flag_name(name) for name in sorted(names))
        raise ConfigError(f"{listing(fixed)} cannot be changed when resuming {saved.directory}; "
                          f"only {listing(RESUME_MAY_CHANGE)} can")
    changes = {k: v for k, v in flags.items() if k not in ("device", "backend", "tf32")}
    if "data_dir" in flags:  # absolute, as a new run records it
        from ..io.fingerprint import absolute_dataset_spec

        changes["data_dir"] = absolute_dataset_spec({"data_dir": flags["data_dir"]})["data_dir"]
    if "epochs" not in flags and saved.config.get("finished") and not config.language_model:
        changes["epochs"] = saved.epoch  # early stopping ended it: nothing left to train
    if "device" in flags or "backend" in flags:
        changes.update(device=flags.get("device") or "cpu", backend=flags.get("backend"))
    if flags.get("tf32"):
        changes["tf32"] = True
    if "threads" in flags:
        changes["threads_reason"] = "--threads (on resume)"
    return dataclasses.replace(config, **changes).check()


def new_settings(args) -> dict:
    """A new run's settings as config.json holds them (`config_from_args(args).to_json()`)."""
    return config_from_args(args).to_json()


def check_names(config: RunConfig) -> None:
    """Unknown names fail here, before any data is loaded or file written, with the registry's
    own message ("unknown activation 'relux'; valid activations: ...")."""
    from ..losses import get_loss
    from ..nn.activations import get_activation
    from ..optim import make_schedule, optimizer_class

    get_activation(config.activation)
    if config.loss is not None:
        get_loss(config.loss)
    optimizer_class(config.optimizer)
    make_schedule(config.schedule, 1)


def resume_settings(args, saved) -> dict:
    """A resumed run's settings as config.json holds them (`config_for_resume(...).to_json()`)."""
    return config_for_resume(args, saved).to_json()
