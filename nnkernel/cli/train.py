"""``nnkernel train``: train a network on a dataset, save it, report test metrics.

Nothing is written before the inputs have been checked, a new run never
overwrites an existing one, and a run with nothing left to do changes nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, NonFiniteError
from ..run_settings import RunConfig
from . import distributed, threads
from .build import build_model, build_optimizer, load_run_data
from .results import as_model_input, print_result, test_metrics
from .run_policy import ResumableEarlyStopping, SaveEachEpoch
from .runtime import backend_for, say
from .settings import VAL_SEED, check_names, config_for_resume, config_from_args

EXIT_OK, EXIT_INTERRUPTED = 0, 130  # a signal's run ends with 128 + its number


def add_parser(sub, add_device_flags, add_output_flags, types):
    from .args import add_setting_flags

    train = sub.add_parser("train", help="train a network on a dataset",
                           description="Train a multilayer perceptron (or, with --conv, a "
                           "small CNN), or on a text (tinyshakespeare, a .txt file) a character "
                           "language model (--model gpt or lstm). Flags left out take the "
                           "dataset's defaults (see nnkernel.cli.settings.DATASET_DEFAULTS, "
                           "nnkernel.cli.text_settings); every setting is a field of "
                           "nnkernel.run_settings.RunConfig, saved in the run's config.json.")
    add_setting_flags(train, "data")
    add_device_flags(train)
    add_setting_flags(train, "network")
    add_setting_flags(train, "optimization")
    run = train.add_argument_group("run")
    run.add_argument("--out", help="directory for the checkpoint, config, metrics and curves")
    run.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR, with its "
                     "settings (BLAS threads included: the same numbers as if never stopped)")
    distributed.add_flags(run, types)
    run.add_argument("--compile", action="store_true",
                     help="run each training step as one compiled program (--backend jax: "
                     "jax.jit of the same forward, loss, backward and update); faster on "
                     "the networks bench/RESULTS.md names, same numbers")
    add_output_flags(train)


@dataclass
class Job:
    """A training run, checked and built, before anything is written."""

    config: RunConfig
    out: Path | None
    continuing: bool
    saved: object
    backend: object
    data: object
    model: object
    optimizer: object
    train: tuple
    validation: tuple | None
    epoch: int = 0
    step: int = 0
    history: object = None
    callbacks: list = field(default_factory=list)


def run(args) -> int:
    dp = distributed.start(args)  # None unless --distributed
    if dp is None:
        return _run(args, None)
    with distributed.one_rank_fails_all(dp, args.debug):
        return _run(args, dp)


def _run(args, dp) -> int:
    from ..io import out_dir, run_dir

    job = prepare(args, dp)
    if job is None:
        return EXIT_OK
    writer = dp is None or dp.is_root  # under MPI rank 0 writes the run for every rank
    with contextlib.ExitStack() as hold:
        if job.out is not None and writer:  # one writer per run directory, to the last file
            out_dir.check_writable(job.out)
            hold.enter_context(out_dir.RunLock(job.out))
            if not job.continuing and run_dir.existing_run_files(job.out):  # raced
                raise ConfigError(f"--out {job.out} already holds a run "
                                  f"({', '.join(run_dir.existing_run_files(job.out))})")
            out_dir.clean_stale_temporaries(job.out)
            job.callbacks.append(SaveEachEpoch(job.out, job.config, _early(job)))
        if job.config.language_model:
            from . import text_train

            return text_train.train_and_report(args, job, dp, save_interrupted)
        return train_and_report(args, job, dp)


def prepare(args, dp=None) -> Job | None:
    """Check the flags, the run to resume and the data; build the model and optimizer.

    Returns None (after saying so) when a resumed run has nothing left to do.
    """
    from ..io import run_dir
    from ..io.fingerprint import check_fingerprint, data_fingerprint
    from ..train.data import plan_batches

    saved = run_dir.load(args.resume) if args.resume else None
    config = config_for_resume(args, saved) if saved else config_from_args(args)
    out = Path(args.out) if args.out else (Path(args.resume) if saved else None)
    continuing = saved is not None and out.resolve() == saved.directory.resolve()
    if out is not None and not continuing and run_dir.existing_run_files(out):
        raise ConfigError(f"--out {out} already holds a run "
                          f"({', '.join(run_dir.existing_run_files(out))}); resume it with "
                          f"--resume {out} or choose a new directory")
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    check_names(config)
    if config.language_model:  # a text: nnkernel.cli.text_train
        from . import text_train

        return text_train.prepare(args, dp, saved, config, out, continuing, Job)
    if dp is not None:
        distributed.place(config, args, dp)
    if saved is not None and _nothing_left(args, saved, config):
        return None
    backend = backend_for(args, config.device, config.backend, config.dtype, config.tf32,
                          allocator=False)
    config.backend = backend.name
    if config.keep_freed_memory is not False:  # recorded False: the run kept glibc's defaults
        config.keep_freed_memory = backend.tune_allocator()
    data = load_run_data(config, args.data_dir)
    X_train, y_train = data.X_train, data.y_train
    fingerprint = data_fingerprint(X_train, y_train)  # of all training data, before the split
    if saved is not None:
        problem = check_fingerprint(config.fingerprint, fingerprint)
        if problem:
            raise ConfigError(f"cannot resume {saved.directory}: {problem}; to train on these "
                              f"data, start a new run")
    config.fingerprint = fingerprint
    validation = None
    if config.val_split:
        from ..io import datasets

        X_train, y_train, X_val, y_val = datasets.train_val_split(
            X_train, y_train, config.val_split, seed=VAL_SEED)
        validation = (X_val, y_val)
    n_train = X_train.shape[0]
    if config.batch_size > n_train:
        raise ConfigError(f"--batch-size {config.batch_size} is larger than the {n_train} "
                          f"training samples of {data.name}")
    if saved is None:
        model = build_model(config, data, backend)
        config.n_features, config.task = data.n_features, data.task
        config.n_classes, config.n_outputs = data.n_classes, model.n_out
        config.preprocessing = dict(getattr(data, "preprocessing", {}) or {})
    else:
        model = saved.build_model(backend.name, backend.device)
    # flat rows as the model takes them: images (n, C, H, W) for a conv model (views)
    where, what = saved.directory if saved else out, f"dataset {data.name}"
    X_train = as_model_input(model, X_train, what, where)
    if validation is not None:
        validation = (as_model_input(model, validation[0], what, where), validation[1])
    data.X_test = as_model_input(model, data.X_test, what, where)
    plan = plan_batches(n_train, config.batch_size, _has_batchnorm(model))
    if _has_batchnorm(model) and min(b - a for a, b in plan) < 2:  # before --out is created
        raise ConfigError(f"--batch-size {config.batch_size} with --batchnorm: BatchNorm needs "
                          "at least 2 rows per batch to take its statistics")
    steps = len(plan)
    set_threads(args, config, model)
    job = Job(config, out, continuing, saved, backend, data, model,
              build_optimizer(config, steps), (X_train, y_train), validation)
    if saved is None and str(config.dataset).lower().endswith((".csv", ".npz")):
        say(args, _what_the_target_is(data, config, args.task))
    if saved is not None:
        saved.restore_optimizer(job.optimizer, model)
        job.history, job.epoch, job.step = saved.history, saved.epoch, saved.step
        if job.step >= steps:
            raise ConfigError(f"{saved.directory} stopped at step {job.step} of epoch "
                              f"{job.epoch + 1}, but an epoch of {data.name} has {steps} "
                              f"steps; the data or the batch size in config.json changed")
        say(args, f"resuming {saved.directory} at epoch {job.epoch + 1}, step {job.step} "
                  f"(of {config.epochs} epochs)")
    if config.early_stopping:  # its state is saved with the run, so a resume stops alike
        job.callbacks.append(ResumableEarlyStopping(
            "val_loss", patience=config.early_stopping,
            saved=saved.early_stopping if saved is not None else None))
    return job


def set_threads(args, config: RunConfig, model) -> None:
    """Set the run's BLAS threads once, and record them: the run's own on resume, --threads,
    or chosen by the work (nnkernel.cli.threads). A GPU run leaves them alone."""
    if not threads.on_cpu(config.device):
        return
    if config.threads is not None:
        config.threads_reason = config.threads_reason or "--threads"
    else:
        config.threads, config.threads_reason = threads.choose(
            model, config.batch_size, share=getattr(args, "core_share", None))
    threads.apply(config.threads)


def train_and_report(args, job: Job, dp=None) -> int:
    """Train, save and print the test metrics (the run directory, if any, is held)."""
    from ..io import run_dir
    from ..train import TrainingInterrupted, fit

    out, config, model, optimizer = job.out, job.config, job.model, job.optimizer
    start = time.perf_counter()
    quiet_numpy = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    try:
        with quiet_numpy:  # a diverging run is reported once, as NonFiniteError, not as warnings
            history = fit(model, *job.train, loss=config.loss, optimizer=optimizer,
                          epochs=config.epochs, batch_size=config.batch_size,
                          validation_data=job.validation, seed=config.seed,
                          callbacks=job.callbacks, progress=not args.quiet,
                          initial_epoch=job.epoch, initial_step=job.step, history=job.history,
                          distributed=dp, compile=bool(getattr(args, "compile", False)))
    except TrainingInterrupted as stop:
        return save_interrupted(args, job, stop, dp)
    except NonFiniteError as error:
        if out is None:
            raise
        raise NonFiniteError(f"{error}; {_kept(out, run_dir)}") from error
    train_seconds = time.perf_counter() - start
    if dp is not None and not dp.is_root:  # rank 0 writes and reports for every rank
        return EXIT_OK

    if out is not None:
        early = _early(job)
        stopped = early.stopped_epoch + 1 if early and early.stopped_epoch is not None else None
        done = history.epochs[-1] + 1 if history.epochs else job.epoch
        run_dir.save(out, model, optimizer, {**config.to_json(), "finished": True,
                                             "stopped_early_at_epoch": stopped},
                     history, done, 0)
    epochs_this_run, samples_per_second = throughput(history, job.epoch)
    data = job.data
    result = test_metrics(model, data.X_test, data.y_test, config.loss, data, 1024)
    lrs = config.member_lrs if model.ensemble is not None else None
    if out is not None:
        skipped = run_dir.save_curves(out, history, title=f"{data.name}: {out.name}", test={
            "loss": result["test_loss"], "accuracy": result["test_accuracy"]},
            members=None if lrs is None else [f"lr {lr:g}" for lr in lrs])
        if skipped:
            say(args, f"nnkernel: skipped curves.png: {skipped}")
    result.update(train_seconds=train_seconds, epochs=len(history.epochs),
                  epochs_this_run=epochs_this_run, samples_per_second=samples_per_second,
                  backend=job.backend.name, device=job.backend.device_name,
                  dtype=config.dtype, dataset=data.name, n_train=job.train[0].shape[0],
                  threads=config.threads, threads_reason=config.threads_reason,
                  blas_threads=threads.current() if threads.on_cpu(config.device) else None,
                  out=str(out) if out else None)
    if lrs is not None:
        result["member_lr"] = lrs
    print_result(args, result, model)
    return EXIT_OK


def save_interrupted(args, job: Job, stop, dp=None) -> int:
    """Save a run stopped by a signal where it stopped (in a new runs/ directory when it had
    no --out), say how to resume it, and return the exit status 128 + the signal."""
    from ..io import run_dir

    if dp is not None and not dp.is_root:  # rank 0 saves the run for every rank
        return 128 + stop.signal if stop.signal else EXIT_INTERRUPTED
    out = job.out
    where = out or new_run_dir()
    early = _early(job)
    run_dir.save(where, job.model, job.optimizer, job.config, stop.history, stop.epoch,
                 stop.step, early.state_arrays() if early else None)
    what = {signal.SIGTERM: "terminated", getattr(signal, "SIGHUP", None): "hung up"}.get(
        stop.signal, "interrupted")
    position = (f"step {stop.epoch * job.config.eval_interval + stop.step}"
                if job.config.language_model else f"epoch {stop.epoch + 1} step {stop.step}")
    with contextlib.suppress(OSError):  # after a hang-up the terminal may be gone
        if out is None:
            print(f"nnkernel: saved the interrupted run to {where}", file=sys.stderr)
        print(f"nnkernel: {what} at {position}; resume with: nnkernel train --resume {where}",
              file=sys.stderr)
    return 128 + stop.signal if stop.signal else EXIT_INTERRUPTED  # 130, 143, 129


def _early(job):
    """The run's early-stopping callback, or None."""
    return next((cb for cb in job.callbacks if isinstance(cb, ResumableEarlyStopping)), None)


def _nothing_left(args, saved, config) -> bool:
    """A resume with no steps left says so and touches nothing (not even the position)."""
    if saved.epoch < config.epochs:
        return False
    where = f"{saved.epoch} epoch(s)" + (f" and {saved.step} step(s) of epoch {saved.epoch + 1}"
                                        if saved.step else "")
    say(args, f"nothing left to train: {saved.directory} has finished {where}; pass --epochs N "
              f"with N > {saved.epoch} to train longer")
    return True


def _kept(out, run_dir) -> str:
    """What is on disk after a run stopped on NaN: the last good checkpoint, if any."""
    if not (out / run_dir.MODEL).exists():
        return "nothing was saved (no checkpoint had been written yet)"
    kept = run_dir.load(out)
    where = f"end of epoch {kept.epoch}" if not kept.step else \
        f"epoch {kept.epoch + 1}, step {kept.step}"
    return f"kept the last good checkpoint ({where}) in {out}"


def _what_the_target_is(data, config, forced) -> str:
    """How the label policy read a user's file, said once, so a wrong guess is seen."""
    column = f"column {config.target or 'label'!r}" if str(config.dataset).lower().endswith(
        ".csv") else "y"
    if data.task == "classification":
        what = f"class labels 0..{data.n_classes - 1} ({data.n_classes} classes)"
    else:
        k = data.y_train.shape[1]
        what = f"regression targets ({k} {'column' if k == 1 else 'columns'})"
    how = "as --task says" if forced else "pass --task to change it"
    return f"{data.name}: {column} holds {what}; {how}"


def _has_batchnorm(model) -> bool:
    from ..nn.layers import BatchNorm

    return any(isinstance(layer, BatchNorm) for layer in model.layers)


def throughput(history, first_epoch):
    """(epochs trained in this call, training samples per second over their steps).

    Each epoch's own clock covers its steps only, not validation or checkpoints.
    """
    new = [i for i, e in enumerate(history.epochs) if e >= first_epoch]
    seconds = sum(history["seconds"][i] for i in new)
    seen = sum(history["seconds"][i] * history["samples_per_second"][i] for i in new)
    return len(new), (seen / seconds if seconds > 0 else None)


def new_run_dir() -> Path:
    """A new directory runs/<date>-<time>[-N]: mkdir, not exists-then-mkdir, claims it, so two
    runs interrupted in the same second never share one."""
    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"cannot create a new run directory next to {base}; pass --out")
