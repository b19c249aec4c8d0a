"""The command line: ``nnkernel train | evaluate | predict | info | bench``.

    nnkernel train                               # digits, offline, in seconds
    nnkernel train --dataset fashion-mnist --out runs/fmnist
    nnkernel train --resume runs/fmnist          # after Ctrl-C: continues bit for bit
    nnkernel evaluate runs/fmnist
    nnkernel predict runs/fmnist features.npy --output classes.csv

Every error is one line on stderr, ``nnkernel: error: ...``, with exit status 2
for usage and configuration errors and 1 for the rest; ``--debug`` shows the
traceback instead. Nothing is written before the inputs have been checked, and
a new run never overwrites an existing one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# What `nnkernel train --dataset NAME` uses for the flags not given. The image sets
# get the 784-256-256-10 ReLU MLP; the toy sets a net of their size. On Fashion-MNIST
# a cosine decay of Adam's lr gave 0.90 test accuracy after 15 epochs where a
# constant lr wandered between 0.88 and 0.89 (measured, seed 0).
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
GENERIC_DEFAULTS = {"hidden": [256, 256], "activation": "relu", "epochs": 20, "batch_size": 32,
                    "lr": [1e-3], "dropout": 0.0, "optimizer": "adam", "schedule": "constant",
                    "seed": 0, "dtype": "float32"}
VAL_SEED = 0  # the validation split is the same whatever --seed says
# Training flags a --resume may change; the others must match the saved run.
RESUME_MAY_CHANGE = {"epochs", "backend", "device", "data_dir", "tf32", "threads"}


class UsageError(Exception):
    """A command line argparse refused."""


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and go through main's error path."""

    def error(self, message):
        raise UsageError(f"{self.prog.removeprefix('nnkernel').strip() or 'usage'}: {message}")


# ----------------------------------------------------------------------- argument types

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _float_in(lo, hi, lo_open=False, hi_open=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (
            value < hi if hi_open else value <= hi)
        if not ok:
            interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value
    return parse


def _hidden(text):
    """'256,256' -> [256, 256]; '' or 'none' -> [] (a linear model)."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as "
                                         f"256,256, got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return sizes


def _learning_rates(text):
    """'1e-3' -> [0.001]; '1e-3,3e-3' -> one ensemble member per value."""
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate or a comma list such as "
                                         f"1e-3,3e-3, got {text!r}") from None
    if any(not (math.isfinite(r) and r > 0) for r in rates):
        raise argparse.ArgumentTypeError(f"learning rates must be finite and > 0, got {text!r}")
    return rates


# --------------------------------------------------------------------------- the parser

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nnkernel", description="Neural networks with hand-written "
                     "backpropagation on NumPy, CuPy, PyTorch or array-api-strict.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = sub.add_parser("train", help="train an MLP on a dataset",
                           description="Train a multilayer perceptron. Flags left out take the "
                           "dataset's defaults (see nnkernel.cli.DATASET_DEFAULTS).")
    data = train.add_argument_group("data")
    data.add_argument("--dataset", help="digits (default, offline), fashion-mnist, mnist, xor, "
                      "spirals, moons, linear, or a .csv/.npz path")
    data.add_argument("--data-dir", help="where to look for (or download) IDX files")
    data.add_argument("--target", help="the label column of a CSV (default: label)")
    data.add_argument("--val-split", type=_float_in(0, 1, lo_open=True),
                      help="hold out this fraction of the training data for validation "
                      "(default 0.1 with --early-stopping, else none)")
    _add_device_flags(train)
    net = train.add_argument_group("network")
    net.add_argument("--hidden", type=_hidden, help="hidden widths, e.g. 256,256")
    net.add_argument("--activation", help="relu (default), tanh, gelu, ...")
    net.add_argument("--dropout", type=_float_in(0, 1), help="dropout after each hidden layer")
    net.add_argument("--batchnorm", action="store_true", default=None,
                     help="BatchNorm between each hidden Dense and its activation")
    net.add_argument("--ensemble", type=_positive_int, help="train E members at once")
    opt = train.add_argument_group("optimization")
    opt.add_argument("--loss", help="cross_entropy (classification) or mse (regression) by "
                     "default; also mae, huber, binary_cross_entropy")
    opt.add_argument("--optimizer", help="adam (default), adamw, sgd, rmsprop")
    opt.add_argument("--lr", type=_learning_rates,
                     help="learning rate, or a comma list: one ensemble member per value")
    opt.add_argument("--schedule", help="constant (default), step, exponential, cosine, "
                     "warmup, warmup_cosine")
    opt.add_argument("--weight-decay", type=_float_in(0, math.inf))
    opt.add_argument("--clip-norm", type=_float_in(0, math.inf, lo_open=True),
                     help="clip gradients to this global norm")
    opt.add_argument("--epochs", type=_non_negative_int)
    opt.add_argument("--batch-size", type=_positive_int)
    opt.add_argument("--seed", type=_non_negative_int)
    opt.add_argument("--early-stopping", type=_positive_int, metavar="N",
                     help="stop when val_loss has not improved for N epochs")
    run = train.add_argument_group("run")
    run.add_argument("--out", help="directory for the checkpoint, config, metrics and curves")
    run.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    _add_output_flags(train)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved run on a dataset")
    evaluate.add_argument("run_dir", metavar="DIR")
    evaluate.add_argument("--dataset", help="default: the dataset the run was trained on "
                          "(its test split; all rows of a .csv/.npz file)")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--target")
    evaluate.add_argument("--batch-size", type=_positive_int, default=1024)
    _add_device_flags(evaluate)
    _add_output_flags(evaluate)

    predict = sub.add_parser("predict", help="predict with a saved run")
    predict.add_argument("run_dir", metavar="DIR")
    predict.add_argument("input", metavar="INPUT", help="features: a .npy or .csv file")
    predict.add_argument("--output", metavar="FILE",
                         help="write predictions to FILE (.npy, .csv or .txt) instead of stdout")
    predict.add_argument("--batch-size", type=_positive_int, default=1024)
    _add_device_flags(predict)
    predict.add_argument("--debug", action="store_true", help="show tracebacks")

    info = sub.add_parser("info", help="versions, backends, GPU and BLAS")
    info.add_argument("--json", action="store_true")
    info.add_argument("--debug", action="store_true")

    sub.add_parser("bench", help="benchmarks (nnkernel.bench); try nnkernel bench --help",
                   add_help=False)
    return parser


def _add_device_flags(parser):
    group = parser.add_argument_group("device")
    group.add_argument("--device", help="cpu (default), gpu (= GPU 0 with CuPy), gpu:1, ...")
    group.add_argument("--backend", help="numpy (default on cpu), cupy (default on gpu), "
                       "torch, array_api_strict")
    group.add_argument("--dtype", choices=("float32", "float64"))
    group.add_argument("--tf32", action="store_true", default=None,
                       help="allow TF32 matrix products (GPU only)")
    group.add_argument("--threads", type=_positive_int,
                       help="BLAS threads on the CPU (default: the BLAS library's own choice; "
                       "1 is faster for small networks on a busy machine)")


def _add_output_flags(parser):
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress or summary lines")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


# ---------------------------------------------------------------------------- main

def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv[:1] == ["bench"]:  # everything after it belongs to nnkernel.bench
            return _bench(argv[1:])
        args = build_parser().parse_args(argv)
        if args.version:
            from .. import __version__

            print(__version__)
            return EXIT_OK
        if args.command is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        handler = {"train": train_command, "evaluate": evaluate_command,
                   "predict": predict_command, "info": info_command}[args.command]
        return handler(args)
    except KeyboardInterrupt:  # outside fit (which saves a checkpoint first)
        print("nnkernel: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - turned into one line below
        if debug:
            raise
        return _report(error)


def _report(error: BaseException) -> int:
    from ..errors import ConfigError, NnkernelError

    if isinstance(error, UsageError | ConfigError):
        status = EXIT_USAGE
    else:
        status = EXIT_ERROR
    if type(error).__name__ == "OutOfMemoryError":  # cupy.cuda.memory / torch.cuda
        message = f"GPU out of memory ({_one_line(error)}); try a smaller --batch-size"
    elif isinstance(error, MemoryError):
        message = "out of memory; try a smaller --batch-size or a smaller network"
    elif isinstance(error, UsageError | NnkernelError | OSError):
        message = _one_line(error)
    else:
        message = f"{type(error).__name__}: {_one_line(error)} (run with --debug for details)"
    print(f"nnkernel: error: {message}", file=sys.stderr)
    return status


def _one_line(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or text}"
    return " ".join(text.split()) or type(error).__name__


def _say(args, text: str) -> None:
    """A status line on stderr (stdout is kept for results and --json)."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


# --------------------------------------------------------------------------- train

def train_command(args) -> int:
    from ..errors import ConfigError, NonFiniteError
    from ..io import datasets, run_dir
    from ..train import EarlyStopping, TrainingInterrupted, fit

    saved = run_dir.load(args.resume) if args.resume else None
    settings = _resume_settings(args, saved) if saved else _new_settings(args)
    hyper = settings["hyperparameters"]
    out = Path(args.out) if args.out else (Path(args.resume) if saved else None)
    continuing = saved is not None and out.resolve() == saved.directory.resolve()
    if out is not None and not continuing and run_dir.existing_run_files(out):
        raise ConfigError(f"--out {out} already holds a run "
                          f"({', '.join(run_dir.existing_run_files(out))}); resume it with "
                          f"--resume {out} or choose a new directory")
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    _check_names(hyper)
    backend = _backend(settings["runtime"], args)
    settings["runtime"]["backend"] = backend.name
    data = _load_data(settings["dataset"], args.data_dir or settings["dataset"]["data_dir"],
                      hyper["loss"])
    X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
    validation = None
    if hyper["val_split"]:
        X_train, y_train, X_val, y_val = datasets.train_val_split(
            X_train, y_train, hyper["val_split"], seed=VAL_SEED)
        validation = (X_val, y_val)
    n_train = X_train.shape[0]
    if hyper["batch_size"] > n_train:
        raise ConfigError(f"--batch-size {hyper['batch_size']} is larger than the {n_train} "
                          f"training samples of {data.name}")
    steps = math.ceil(n_train / hyper["batch_size"])
    if saved is None:
        model = _build_model(hyper, data, settings, backend)
        settings["dataset"].update(n_features=data.n_features, task=data.task,
                                   n_classes=data.n_classes, n_outputs=model.n_out)
        optimizer = _build_optimizer(hyper, steps)
        history, epoch, step = None, 0, 0
    else:
        model = saved.build_model(backend.name, backend.device)
        _check_features(model, data.n_features, f"dataset {data.name}", saved.directory)
        optimizer = _build_optimizer(hyper, steps)
        saved.restore_optimizer(optimizer, model)
        history, epoch, step = saved.history, saved.epoch, saved.step
        if step >= steps:
            raise ConfigError(f"{saved.directory} stopped at step {step} of epoch {epoch + 1}, "
                              f"but an epoch of {data.name} has {steps} steps; the data changed")

    callbacks = []
    if hyper["early_stopping"]:
        callbacks.append(EarlyStopping("val_loss", patience=hyper["early_stopping"]))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        callbacks.append(run_dir.SaveEachEpoch(out, settings))
    if settings["runtime"]["tf32"] and not _on_gpu(backend):
        _say(args, "note: --tf32 only changes GPU matrix products; ignored on the CPU")
    if saved is not None and epoch >= hyper["epochs"]:
        _say(args, f"nothing left to train: {saved.directory} has finished {epoch} epochs; "
                   f"pass --epochs N to train longer")
    elif saved is not None:
        _say(args, f"resuming {saved.directory} at epoch {epoch + 1}, step {step} "
                   f"(of {hyper['epochs']} epochs)")

    start = time.perf_counter()
    quiet_numpy = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    try:
        with quiet_numpy:  # a diverging run is reported once, as NonFiniteError, not as warnings
            history = fit(model, X_train, y_train, loss=hyper["loss"], optimizer=optimizer,
                          epochs=hyper["epochs"], batch_size=hyper["batch_size"],
                          validation_data=validation, seed=settings["seed"],
                          callbacks=callbacks, progress=not args.quiet,
                          initial_epoch=epoch, initial_step=step, history=history)
    except TrainingInterrupted as stop:
        where = out or _new_run_dir()
        run_dir.save(where, model, optimizer, settings, stop.history, stop.epoch, stop.step)
        if out is None:
            print(f"nnkernel: saved the interrupted run to {where}", file=sys.stderr)
        print(f"nnkernel: interrupted at epoch {stop.epoch + 1} step {stop.step}; resume with: "
              f"nnkernel train --resume {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NonFiniteError as error:
        if out is None:
            raise
        kept = run_dir.load(out).epoch if (out / run_dir.MODEL).exists() else None
        suffix = (f"; kept the last good checkpoint (end of epoch {kept}) in {out}"
                  if kept else "; no epoch finished, so no checkpoint was saved")
        raise NonFiniteError(f"{error}{suffix}") from error
    train_seconds = time.perf_counter() - start

    if out is not None:
        early = callbacks[0] if hyper["early_stopping"] else None
        settings["finished"] = True
        settings["stopped_early_at_epoch"] = (early.stopped_epoch + 1 if early and
                                              early.stopped_epoch is not None else None)
        done = history.epochs[-1] + 1 if history.epochs else epoch
        run_dir.save(out, model, optimizer, settings, history, done, 0)
        skipped = run_dir.save_curves(out, history)
        if skipped:
            _say(args, f"nnkernel: skipped curves.png: {skipped}")
    epochs_this_run, samples_per_second = _throughput(history, epoch)
    result = _test_metrics(model, X_test, y_test, hyper["loss"], data, 1024)
    result.update(train_seconds=train_seconds, epochs=len(history.epochs),
                  epochs_this_run=epochs_this_run, samples_per_second=samples_per_second,
                  backend=backend.name, device=backend.device_name,
                  dtype=settings["runtime"]["dtype"], dataset=data.name, n_train=n_train,
                  out=str(out) if out else None)
    if model.ensemble is not None:
        result["member_lr"] = _member_lrs(hyper, model.ensemble)
    _print_result(args, result, model)
    return EXIT_OK


def _throughput(history, first_epoch):
    """(epochs trained in this call, training samples per second over their steps).

    Each epoch's own clock covers its steps only, not validation or checkpoints.
    """
    new = [i for i, e in enumerate(history.epochs) if e >= first_epoch]
    seconds = sum(history["seconds"][i] for i in new)
    seen = sum(history["seconds"][i] * history["samples_per_second"][i] for i in new)
    return len(new), (seen / seconds if seconds > 0 else None)


def _new_settings(args) -> dict:
    """The run's settings from the flags and the dataset's defaults."""
    from ..io.datasets import DEFAULT_DATASET

    dataset = args.dataset or DEFAULT_DATASET
    key = dataset.lower().replace("_", "-")
    chosen = {**GENERIC_DEFAULTS, **DATASET_DEFAULTS.get(key, {})}
    for name in ("hidden", "activation", "dropout", "epochs", "batch_size", "lr", "optimizer",
                 "schedule", "seed", "dtype"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    ensemble = args.ensemble
    if len(chosen["lr"]) > 1:
        if ensemble is not None and ensemble != len(chosen["lr"]):
            from ..errors import ConfigError

            raise ConfigError(f"--lr lists {len(chosen['lr'])} values but --ensemble is "
                              f"{ensemble}; give one learning rate per member")
        ensemble = len(chosen["lr"])
    val_split = args.val_split or (0.1 if args.early_stopping else None)
    hyper = {
        "hidden": chosen["hidden"], "activation": chosen["activation"],
        "dropout": chosen["dropout"], "batchnorm": bool(args.batchnorm),
        "ensemble": ensemble, "loss": args.loss, "optimizer": chosen["optimizer"],
        "lr": chosen["lr"][0] if len(chosen["lr"]) == 1 else chosen["lr"],
        "schedule": chosen["schedule"], "weight_decay": args.weight_decay,
        "clip_norm": args.clip_norm, "epochs": chosen["epochs"],
        "batch_size": chosen["batch_size"], "early_stopping": args.early_stopping,
        "val_split": val_split,
    }
    return {
        "dataset": {"name": dataset, "data_dir": args.data_dir, "target": args.target},
        "hyperparameters": hyper,
        "seed": chosen["seed"],
        "runtime": {"backend": args.backend, "device": args.device or "cpu",
                    "dtype": chosen["dtype"], "tf32": bool(args.tf32)},
    }


def _resume_settings(args, saved) -> dict:
    """The saved run's settings; flags may only change what RESUME_MAY_CHANGE names."""
    from ..errors import CheckpointError, ConfigError

    config = saved.config
    try:
        settings = {key: dict(config[key]) if isinstance(config[key], dict) else config[key]
                    for key in ("dataset", "hyperparameters", "seed", "runtime")}
        settings["hyperparameters"]["epochs"] = int(settings["hyperparameters"]["epochs"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{saved.directory / 'config.json'} is not a run written by "
                              f"nnkernel train (missing {e})") from e
    given = {name for name in ("dataset", "target", "val_split", "hidden", "activation",
                               "dropout", "batchnorm", "ensemble", "loss", "optimizer", "lr",
                               "schedule", "weight_decay", "clip_norm", "batch_size", "seed",
                               "early_stopping", "dtype")
             if getattr(args, name) is not None}
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
    settings.pop("finished", None)
    return settings


def _check_names(hyper) -> None:
    """Unknown names fail here, before any data is loaded or file written."""
    from ..errors import ConfigError
    from ..losses import get_loss
    from ..nn.activations import get_activation
    from ..optim import OPTIMIZERS, SCHEDULES

    get_activation(hyper["activation"])
    if hyper["loss"] is not None:
        get_loss(hyper["loss"])
    if str(hyper["optimizer"]).lower() not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {hyper['optimizer']!r}; valid optimizers: "
                          f"{', '.join(OPTIMIZERS)}")
    if hyper["schedule"] not in SCHEDULES:
        raise ConfigError(f"unknown schedule {hyper['schedule']!r}; valid schedules: "
                          f"{', '.join(SCHEDULES)}")


def _backend(runtime: dict, args):
    """The Backend for --device / --backend (gpu means CuPy unless --backend says torch)."""
    from ..backend import Backend
    from ..errors import ConfigError, DeviceError

    device = (runtime.get("device") or "cpu").lower()
    name = runtime.get("backend")
    if getattr(args, "device", None) is not None or getattr(args, "backend", None) is not None:
        device = (args.device or "cpu").lower()
        name = args.backend or None
    on_gpu = device.startswith(("gpu", "cuda"))
    if device != "cpu" and not on_gpu:
        raise ConfigError(f"unknown --device {device!r}; use cpu, gpu or gpu:N")
    name = (name or ("cupy" if on_gpu else "numpy")).lower().replace("-", "_")
    index = 0
    if getattr(args, "threads", None):
        _limit_blas_threads(args.threads)
    if on_gpu:
        tail = device.split(":", 1)[1] if ":" in device else "0"
        if not tail.isdigit():
            raise ConfigError(f"cannot read a GPU number from --device {device!r}; use gpu:N")
        index = int(tail)
        if name in ("numpy", "array_api_strict", "strict"):
            raise ConfigError(f"--backend {name} runs on the CPU only; use --backend cupy or "
                              "torch with --device gpu")
    elif name in ("cupy", "cp"):
        raise ConfigError("--backend cupy needs a GPU; use --device gpu (or --backend numpy)")
    if runtime.get("tf32") and name in ("cupy", "cp"):
        os.environ.setdefault("CUPY_TF32", "1")  # read by CuPy when it is imported
    if name == "torch" and on_gpu:
        backend = Backend("torch", f"cuda:{index}")
        torch = backend.module
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise DeviceError(f"torch sees no GPU {index} (torch.cuda.is_available() is "
                              f"{torch.cuda.is_available()}); use --device cpu")
        if runtime.get("tf32"):
            torch.backends.cuda.matmul.allow_tf32 = True
        return backend
    return Backend(name, index if on_gpu else None)


def _limit_blas_threads(n: int) -> None:
    """Set the BLAS thread count once for the whole process (never per operation)."""
    from ..errors import ConfigError

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise ConfigError("--threads needs threadpoolctl (pip install threadpoolctl), or set "
                          "OPENBLAS_NUM_THREADS before starting nnkernel") from None
    threadpool_limits(limits=n, user_api="blas")


def _load_data(dataset: dict, data_dir, loss):
    """Load the dataset; a classification set gets one-hot targets for non-CE losses."""
    from ..errors import DTypeError
    from ..io import datasets
    from ..losses import cross_entropy, get_loss

    name = dataset["name"]
    if str(name).lower().endswith(".csv"):
        data = datasets.load_csv(name, target=dataset.get("target") or "label")
    else:
        data = datasets.load(name, data_dir)
    loss_fn = get_loss(loss) if loss else None
    if loss_fn is cross_entropy and data.task != "classification":
        raise DTypeError(f"--loss cross_entropy needs integer class labels, but {data.name} has "
                         f"float (regression) targets; use --loss mse, or labels 0..K-1")
    if data.task == "classification" and loss_fn not in (None, cross_entropy):
        data.y_train = datasets.one_hot(data.y_train, data.n_classes)
        data.y_test = datasets.one_hot(data.y_test, data.n_classes)
    return data


def _default_loss(data) -> str:
    return "cross_entropy" if data.task == "classification" and data.y_train.ndim == 1 else "mse"


def _build_model(hyper, data, settings, backend):
    from ..nn import layers as L
    from ..nn.activations import get_activation
    from ..nn.sequential import Sequential

    if hyper["loss"] is None:
        hyper["loss"] = _default_loss(data)
    n_out = data.n_classes if data.task == "classification" else data.y_train.shape[1]
    activation = hyper["activation"]
    act_layer = L.LAYERS[type(get_activation(activation)).__name__]
    stack, width = [], data.n_features
    for size in hyper["hidden"]:
        if hyper["batchnorm"]:  # Dense, then BatchNorm, then the activation
            stack += [L.Dense(width, size), L.BatchNorm(size), act_layer()]
        else:
            stack.append(L.Dense(width, size, activation=activation))
        if hyper["dropout"]:
            stack.append(L.Dropout(hyper["dropout"]))
        width = size
    stack.append(L.Dense(width, n_out))
    return Sequential(*stack, seed=settings["seed"], dtype=settings["runtime"]["dtype"],
                      backend=backend.name, device=backend.device, ensemble=hyper["ensemble"])


def _build_optimizer(hyper, steps_per_epoch):
    from ..optim import get_optimizer, make_schedule

    schedule = make_schedule(hyper["schedule"], hyper["epochs"] * steps_per_epoch,
                             steps_per_epoch)
    options = {"lr": hyper["lr"], "clip_norm": hyper["clip_norm"], "schedule": schedule}
    if hyper["weight_decay"] is not None:  # else the optimizer's own default (AdamW: 0.01)
        options["weight_decay"] = hyper["weight_decay"]
    return get_optimizer(hyper["optimizer"], **options)


def _member_lrs(hyper, members):
    lr = hyper["lr"]
    return list(lr) if isinstance(lr, list) else [lr] * members


def _on_gpu(backend) -> bool:
    return backend.name == "cupy" or "cuda" in backend.device_name


def _new_run_dir() -> Path:
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


# ----------------------------------------------------------------------- metrics

def _check_features(model, n_features, what, directory):
    from ..errors import ShapeError

    if n_features != model.n_in:
        raise ShapeError(f"the model in {directory} takes {model.n_in} features, but {what} has "
                         f"{n_features}; it is a checkpoint of another architecture")


def _test_metrics(model, X, y, loss, data, batch_size) -> dict:
    """Test loss and accuracy; for an ensemble also per member and of the mean probabilities."""
    from ..backend import to_numpy
    from ..losses import cross_entropy, get_loss
    from ..nn.ensemble import mean_probabilities
    from ..train import evaluate

    loss_fn = get_loss(loss)
    classify = data.task == "classification"
    test_loss, test_acc = evaluate(model, X, y, loss=loss_fn, batch_size=batch_size)

    def outputs():  # a second pass over the test set, made only where evaluate's is not enough
        return to_numpy(model.predict(model.backend.asarray(X), batch_size=batch_size))

    labels = np.argmax(y, axis=-1) if (classify and y.ndim == 2) else y
    result = {"n_test": int(X.shape[0])}
    if model.ensemble is None:
        if classify and test_acc is None:
            test_acc = float(np.mean(np.argmax(outputs(), axis=-1) == labels))
        result.update(test_loss=test_loss, test_accuracy=test_acc)
        return result
    out = outputs()
    result.update(member_test_loss=test_loss, member_test_accuracy=test_acc)
    if classify:
        if test_acc is None:
            result["member_test_accuracy"] = np.mean(np.argmax(out, -1) == labels, axis=1).tolist()
        probs = to_numpy(mean_probabilities(model.backend.asarray(out)))
        result["test_accuracy"] = float(np.mean(np.argmax(probs, axis=-1) == labels))
        if loss_fn is cross_entropy:  # the ensemble's own loss: NLL of its mean probabilities
            p = np.take_along_axis(probs.astype(np.float64), labels[:, None], axis=1)
            result["test_loss"] = float(-np.mean(np.log(np.maximum(p, 1e-300))))
        else:
            result["test_loss"] = float(np.mean(test_loss))
    else:
        result["test_accuracy"] = None  # the ensemble's prediction is its members' mean
        result["test_loss"] = float(loss_fn(out.mean(axis=0), y.reshape(out.shape[1:]))[0])
    return result


def _print_result(args, result, model) -> None:
    if args.json:
        print(json.dumps(result, default=str))
        return
    if args.quiet:
        return
    acc = result["test_accuracy"]
    lines = []
    if model.ensemble is not None:
        lines.append(f"{'member':>6}  {'lr':>9}  {'test loss':>9}  {'test accuracy':>13}")
        lrs = result.get("member_lr") or [None] * model.ensemble
        accs = result["member_test_accuracy"] or [None] * model.ensemble
        for i, (lr, loss, a) in enumerate(zip(lrs, result["member_test_loss"], accs,
                                                   strict=True)):
            lr_text = f"{lr:9.3g}" if lr is not None else f"{'':9}"
            a_text = f"{a:13.4f}" if a is not None else f"{'-':>13}"
            lines.append(f"{i:>6}  {lr_text}  {loss:9.4f}  {a_text}")
        what = "ensemble (mean probabilities)" if acc is not None else "ensemble (mean output)"
        lines.append(f"{what}: test accuracy {acc:.4f}, test loss {result['test_loss']:.4f}"
                     if acc is not None else f"{what}: test loss {result['test_loss']:.4f}")
    else:
        text = f"test loss {result['test_loss']:.4f}"
        if acc is not None:
            text = f"test accuracy {acc:.4f}  " + text
        lines.append(f"{text}  ({result['n_test']} samples)")
    if "train_seconds" in result:
        sps = result["samples_per_second"]
        lines.append(f"trained {result['epochs_this_run']} epoch(s) in "
                     f"{result['train_seconds']:.1f} s"
                     + (f", {sps:,.0f} samples/s" if sps else "")
                     + f" ({result['backend']} {result['device']} {result['dtype']})")
    if result.get("out"):
        lines.append(f"saved to {result['out']}")
    print("\n".join(lines))


# ----------------------------------------------------------------------- evaluate

def evaluate_command(args) -> int:
    from ..io import run_dir

    saved = run_dir.load(args.run_dir)
    dataset = dict(saved.config.get("dataset") or {})
    if args.dataset:
        dataset = {"name": args.dataset, "target": args.target}
    if not dataset.get("name"):
        from ..errors import CheckpointError

        raise CheckpointError(f"{saved.directory / run_dir.CONFIG} names no dataset; "
                              "pass --dataset")
    runtime = {**saved.config.get("runtime", {}), "tf32": bool(args.tf32)}
    if args.dtype:
        runtime["dtype"] = args.dtype
    backend = _backend(runtime, args)
    model = saved.build_model(backend.name, backend.device)
    if args.dtype:
        model.to(dtype=args.dtype)
    loss = (saved.config.get("hyperparameters") or {}).get("loss") or "cross_entropy"
    name = str(dataset["name"])
    data = _load_data(dataset, args.data_dir or dataset.get("data_dir"), loss)
    _check_features(model, data.n_features, f"dataset {data.name}", saved.directory)
    X, y = data.X_test, data.y_test
    if name.lower().endswith((".csv", ".npz")):  # a user's file: evaluate every row
        X = np.concatenate([data.X_train, data.X_test])
        y = np.concatenate([data.y_train, data.y_test])
    result = _test_metrics(model, X, y, loss, data, args.batch_size)
    result.update(run=str(saved.directory), dataset=data.name, epoch=saved.epoch,
                  backend=backend.name, device=backend.device_name,
                  dtype=str(model.config()["dtype"]))
    _print_result(args, result, model)
    return EXIT_OK


# ----------------------------------------------------------------------- predict

def predict_command(args) -> int:
    from ..backend import to_numpy
    from ..errors import ConfigError
    from ..io import checkpoint, datasets, run_dir
    from ..nn.ensemble import ensemble_mean, mean_probabilities

    output = Path(args.output) if args.output else None
    if output is not None and output.resolve() == Path(args.input).resolve():
        raise ConfigError(f"--output {output} is the input file; choose another name")
    if output is not None and output.suffix.lower() not in (".npy", ".csv", ".txt"):
        raise ConfigError(f"--output must end in .npy, .csv or .txt, got {output.name!r}")
    saved = run_dir.load(args.run_dir)
    backend = _backend({**saved.config.get("runtime", {}), "tf32": bool(args.tf32)}, args)
    model = saved.build_model(backend.name, backend.device)
    X = datasets.load_features(Path(args.input))
    _check_features(model, X.shape[1], str(args.input), saved.directory)
    out = model.predict(backend.asarray(X, dtype=model.dtype), batch_size=args.batch_size)
    dataset = saved.config.get("dataset") or {}
    classify = dataset.get("task", "classification") == "classification"
    if model.ensemble is not None:
        out = mean_probabilities(out) if classify else ensemble_mean(out)
    out = to_numpy(out)
    predictions = np.argmax(out, axis=-1) if classify else out
    if output is None:
        _print_predictions(predictions)
        return EXIT_OK
    if output.suffix.lower() == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, predictions, allow_pickle=False)
        checkpoint.atomic_write_bytes(output, buf.getvalue())
    else:
        checkpoint.atomic_write_bytes(output, _predictions_text(predictions).encode())
    print(f"wrote {predictions.shape[0]} predictions to {output}", file=sys.stderr)
    return EXIT_OK


def _predictions_text(predictions) -> str:
    if predictions.ndim == 1:
        return "".join(f"{int(p)}\n" for p in predictions)
    return "".join(",".join(f"{v:.7g}" for v in row) + "\n" for row in predictions)


def _print_predictions(predictions) -> None:
    sys.stdout.write(_predictions_text(predictions))


# --------------------------------------------------------------------------- info

def info_command(args) -> int:
    from .. import __version__
    from ..backend import available_backends
    from ..kernels import malloc

    report = {"nnkernel": __version__, "python": platform.python_version(),
              "platform": platform.platform(), "numpy": np.__version__}
    try:
        import array_api_compat

        report["array_api_compat"] = array_api_compat.__version__
    except ImportError as e:
        report["array_api_compat"] = f"not installed ({e})"
    report["backends"] = available_backends()
    report["gpu"] = _gpu_info(report["backends"].get("cupy"))
    report["blas"] = _blas_info()
    report["malloc"] = malloc.status()
    report["env"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                malloc.OPT_OUT, *malloc.GLIBC_VARIABLES)
                     if k in os.environ}
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    lines = [f"nnkernel {report['nnkernel']}",
             f"python {report['python']} ({report['platform']})",
             f"numpy {report['numpy']}",
             f"array-api-compat {report['array_api_compat']}",
             "backends:"]
    for name, status in report["backends"].items():
        lines.append(f"  {name:<17} {'available' if status == 'ok' else 'unavailable: ' + status}")
    lines.append(f"gpu: {report['gpu']}")
    for lib in report["blas"]:
        lines.append("blas: " + ", ".join(f"{k} {v}" for k, v in lib.items()))
    lines.append(f"malloc: {report['malloc']}")
    for k, v in report["env"].items():
        lines.append(f"{k}={v}")
    print("\n".join(lines))
    return EXIT_OK


def _gpu_info(cupy_status) -> str:
    if cupy_status != "ok":
        return f"none usable by CuPy ({cupy_status})"
    import cupy

    parts = []
    for i in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(i)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        with cupy.cuda.Device(i):
            free, total = cupy.cuda.runtime.memGetInfo()
        parts.append(f"gpu:{i} {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")
    return "; ".join(parts)


def _blas_info() -> list[dict]:
    """BLAS libraries and their thread counts: threadpoolctl if present, else numpy's config."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        return [{"library": lib.get("internal_api"), "file": lib.get("prefix"),
                 "version": lib.get("version"),
                 "threads": lib.get("num_threads"), "architecture": lib.get("architecture")}
                for lib in threadpool_info() if lib.get("user_api") == "blas"]
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return [{"library": blas.get("name"), "version": blas.get("version"),
                 "threads": "unknown (install threadpoolctl)"}]
    except Exception as e:  # noqa: BLE001 - older numpy has no mode="dicts"
        return [{"library": f"unknown ({e})"}]


# --------------------------------------------------------------------------- bench

def _bench(argv) -> int:
    """`nnkernel bench ...`: handed over to nnkernel.bench.main, imported only now."""
    try:
        from .. import bench
    except ImportError as e:
        print(f"nnkernel: error: the bench command is unavailable: nnkernel.bench cannot be "
              f"imported ({e})", file=sys.stderr)
        return EXIT_ERROR
    return int(bench.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
