"""A run's settings: the dataset's defaults, the flags given, and what a resume may change."""

from __future__ import annotations

from ..errors import CheckpointError, ConfigError

# What `nnkernel train --dataset NAME` uses for the flags not given. The image sets get
# the 784-256-256-10 ReLU MLP; the toy sets a net of their size. On Fashion-MNIST a cosine
# decay of Adam's lr reached 0.90 test accuracy in 15 epochs where a constant lr wandered
# (bench/RESULTS.md).
DATASET_DEFAULTS = {
    "digits": {"hidden": [256, 256], "epochs": 20, "batch_size": 32, "lr": [1e-3]},
    "fashion-mnist": {"hidden": [256, 256], "epochs": 15, "batch_size": 128, "lr": [1e-3],
                      "schedule": "cosine"},
    "mnist": {"hidden": [256, 256], "epochs": 10, "batch_size": 128, "lr": [1e-3],
              "schedule": "cosine"},
    "xor": {"hidden": [8], "activation": "tanh", "epochs": 500, "batch_size": 4, "lr": [1e-2]},
    "spirals": {"hidden": [64, 64], "epochs": 200, "batch_size": 32, "lr": [1e-2]},
    "moons": {"hidden": [32, 32], "epochs": 100, "batch_size": 32, "lr": [1e-2]},
    "linear": {"hidden": [16], "epochs": 200, "batch_size": 16, "lr": [1e-2]},
}
# With --conv the flags not given take these instead (a CNN needs a smaller Dense part and
# fewer epochs); "*" for every dataset, then the dataset's own. Measured in bench/RESULTS.md.
CONV_DEFAULTS = {
    "*": {"hidden": [128]},
    "fashion-mnist": {"epochs": 6, "schedule": "cosine"},
    "mnist": {"epochs": 4, "schedule": "cosine"},
}
GENERIC_DEFAULTS = {"hidden": [256, 256], "activation": "relu", "epochs": 20, "batch_size": 32,
                    "lr": [1e-3], "dropout": 0.0, "optimizer": "adam", "schedule": "constant",
                    "seed": 0, "dtype": "float32", "conv": []}
VAL_SEED = 0  # the validation split is the same whatever --seed says
# Training flags a --resume may change; the others must match the saved run.
RESUME_MAY_CHANGE = {"epochs", "backend", "device", "data_dir", "tf32", "threads"}
FIXED_ON_RESUME = ("dataset", "target", "task", "val_split", "hidden", "conv", "activation",
                   "dropout", "batchnorm", "ensemble", "loss", "optimizer", "lr", "schedule",
                   "weight_decay", "clip_norm", "batch_size", "seed", "early_stopping", "dtype")


def new_settings(args) -> dict:
    """The run's settings from the flags and the dataset's defaults."""
    from ..io.datasets import DEFAULT_DATASET
    from ..io.fingerprint import absolute_dataset_spec

    dataset = args.dataset or DEFAULT_DATASET
    key = dataset.lower().replace("_", "-")
    chosen = {**GENERIC_DEFAULTS, **DATASET_DEFAULTS.get(key, {})}
    if getattr(args, "conv", None):
        chosen.update({**CONV_DEFAULTS["*"], **CONV_DEFAULTS.get(key, {})})
    for name in ("hidden", "activation", "dropout", "epochs", "batch_size", "lr", "optimizer",
                 "schedule", "seed", "dtype", "conv"):
        if getattr(args, name, None) is not None:
            chosen[name] = getattr(args, name)
    ensemble = args.ensemble
    if len(chosen["lr"]) > 1:
        if ensemble is not None and ensemble != len(chosen["lr"]):
            raise ConfigError(f"--lr lists {len(chosen['lr'])} values but --ensemble is "
                              f"{ensemble}; give one learning rate per member")
        ensemble = len(chosen["lr"])
    val_split = args.val_split or (0.1 if args.early_stopping else None)
    hyper = {
        "hidden": chosen["hidden"], "conv": chosen["conv"], "activation": chosen["activation"],
        "dropout": chosen["dropout"], "batchnorm": bool(args.batchnorm),
        "ensemble": ensemble, "loss": args.loss, "optimizer": chosen["optimizer"],
        "lr": chosen["lr"][0] if len(chosen["lr"]) == 1 else chosen["lr"],
        "schedule": chosen["schedule"], "weight_decay": args.weight_decay,
        "clip_norm": args.clip_norm, "epochs": chosen["epochs"],
        "batch_size": chosen["batch_size"], "early_stopping": args.early_stopping,
        "val_split": val_split,
    }
    return {
        "dataset": absolute_dataset_spec({"name": dataset, "data_dir": args.data_dir,
                                          "target": args.target,
                                          **({"task": args.task} if args.task else {})}),
        "hyperparameters": hyper,
        "seed": chosen["seed"],
        "runtime": {"backend": args.backend, "device": args.device or "cpu",
                    "dtype": chosen["dtype"], "tf32": bool(args.tf32)},
    }


def resume_settings(args, saved) -> dict:
    """The saved run's settings; flags may only change what RESUME_MAY_CHANGE names."""
    config = saved.config
    try:
        settings = {key: dict(config[key]) if isinstance(config[key], dict) else config[key]
                    for key in ("dataset", "hyperparameters", "seed", "runtime")}
        settings["hyperparameters"]["epochs"] = int(settings["hyperparameters"]["epochs"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{saved.directory / 'config.json'} is not a run written by "
                              f"nnkernel train (missing {e})") from e
    for key in ("preprocessing", "data_fingerprint"):
        if key in config:
            settings[key] = config[key]
    settings["hyperparameters"].setdefault("conv", [])
    given = {name for name in FIXED_ON_RESUME if getattr(args, name, None) is not None}
    if given:
        def flags(names):
            return ", ".join("--" + name.replace("_", "-") for name in sorted(names))
        raise ConfigError(f"{flags(given)} cannot be changed when resuming {saved.directory}; "
                          f"only {flags(RESUME_MAY_CHANGE)} can")
    hyper = settings["hyperparameters"]
    if args.epochs is not None:
        hyper["epochs"] = args.epochs
    elif config.get("finished"):
        hyper["epochs"] = saved.epoch  # early stopping ended it: nothing left to train
    runtime = settings["runtime"]
    if args.device is not None or args.backend is not None:
        runtime["device"] = args.device or "cpu"
        runtime["backend"] = args.backend
    if args.tf32:
        runtime["tf32"] = True
    return settings


def check_names(hyper) -> None:
    """Unknown names fail here, before any data is loaded or file written."""
    from ..losses import get_loss
    from ..nn.activations import get_activation
    from ..optim import make_schedule, optimizer_class

    get_activation(hyper["activation"])
    if hyper["loss"] is not None:
        get_loss(hyper["loss"])
    optimizer_class(hyper["optimizer"])
    make_schedule(hyper["schedule"], 1)
