"""``nnkernel train --dataset TEXT --model gpt|lstm``: a character language model.

    nnkernel train --dataset corpus.txt --model gpt --block-size 64 --layers 4 --heads 4 \\
        --dim 128 --out runs/chars
    nnkernel train --resume runs/chars             # after Ctrl-C: continues bit for bit

The run directory is `nnkernel train`'s (nnkernel.cli.train: locking, nothing
overwritten, a save at every evaluation and on Ctrl-C/SIGTERM); config.json also
keeps the vocabulary (dataset.tokenizer) and the text's sha256 (dataset.fingerprint),
so that ``generate`` encodes prompts with the run's own ids and a resume or
``evaluate`` on another text is refused. Training is `nnkernel.train.fit_lm`; the
position (epoch, step) in the run directory is (evaluation interval, step within it).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError, NonFiniteError
from . import threads
from .runtime import backend_for, say
from .text_runs import (
    build_text_model,
    build_text_optimizer,
    check_same_text,
    load_run_text,
    saved_tokenizer,
    validation_score,
)


def prepare(args, dp, saved, config, out, continuing, job_class):
    """The text, model and optimizer of a new or resumed run (a ``job_class`` Job), or None
    when a resumed run has nothing left to do."""
    if dp is not None:
        raise ConfigError("--distributed does not train language models yet; train without it")
    if getattr(args, "compile", False):
        raise ConfigError("--compile does not apply to language models yet; train without it")
    if saved is not None and _nothing_left(args, saved, config):
        return None
    backend = backend_for(args, config.device, config.backend, config.dtype, config.tf32,
                          allocator=False)
    config.backend = backend.name
    if config.keep_freed_memory is not False:
        config.keep_freed_memory = backend.tune_allocator()
    where = saved.directory if saved is not None else out
    tokenizer = saved_tokenizer(config, where) if saved is not None else None
    data = load_run_text(config, args.data_dir, tokenizer)
    if saved is not None:
        check_same_text(config, data, saved.directory, "resume")
    config.fingerprint, config.tokenizer = data.fingerprint(), data.tokenizer.to_json()
    if saved is None:
        model = build_text_model(config, data.tokenizer.vocab_size, backend)
        config.n_outputs = config.n_classes = data.tokenizer.vocab_size
    else:
        model = saved.build_model(backend.name, backend.device)
    set_threads(args, config, model)
    job = job_class(config, out, continuing, saved, backend, data, model,
                    build_text_optimizer(config, model), (data.train_ids,), (data.val_ids,))
    if saved is not None:
        saved.restore_optimizer(job.optimizer, model)
        job.history, job.epoch, job.step = saved.history, saved.epoch, saved.step
        done = _steps_done(job)
        if done > config.steps or job.step >= config.eval_interval:
            raise ConfigError(f"{saved.directory} is at epoch {job.epoch}, step {job.step}, "
                              f"which is not a step of this run ({config.steps} steps, an "
                              f"evaluation every {config.eval_interval}); its config.json "
                              f"was changed")
        say(args, f"resuming {saved.directory} at step {done} of {config.steps}")
    else:
        say(args, f"{data.name}: {len(data.text):,} characters, {data.tokenizer.vocab_size} "
                  f"distinct; {data.n_train:,} to train on, the last {len(data.val_ids):,} "
                  f"held out; {config.model} of {model.num_parameters():,} parameters")
    return job


def set_threads(args, config, model) -> None:
    """As `nnkernel.cli.train.set_threads`, the work being (batch · block) rows through the
    largest weight matrix."""
    if not threads.on_cpu(config.device):
        return
    if config.threads is not None:
        config.threads_reason = config.threads_reason or "--threads"
    else:
        rows = config.batch_size * config.block_size
        config.threads, config.threads_reason = threads.choose_for_rows(
            model, rows, share=getattr(args, "core_share", None))
    threads.apply(config.threads)


def train_and_report(args, job, dp=None, save_interrupted=None) -> int:
    """Train, save, score the whole held-out tail, print the result. ``save_interrupted``
    (nnkernel.cli.train's) saves and reports a run stopped by a signal."""
    from ..io import run_dir
    from ..train import TrainingInterrupted
    from ..train.lm import fit_lm
    from .results import print_text_result

    out, config, model, optimizer, data = job.out, job.config, job.model, job.optimizer, job.data
    first = _steps_done(job)
    start = time.perf_counter()
    quiet_numpy = np.errstate(over="ignore", invalid="ignore", divide="ignore")
    try:
        with quiet_numpy:
            history = fit_lm(model, data.train_ids, val_ids=data.val_ids, steps=config.steps,
                             block_size=config.block_size, batch_size=config.batch_size,
                             optimizer=optimizer, accumulate=config.accumulate,
                             eval_interval=config.eval_interval,
                             eval_windows=config.eval_windows, seed=config.seed,
                             callbacks=job.callbacks, progress=not args.quiet,
                             initial_step=first, history=job.history)
    except TrainingInterrupted as stop:
        return save_interrupted(args, job, stop, dp)
    except NonFiniteError as error:
        if out is None:
            raise
        raise NonFiniteError(f"{error}; the last good checkpoint (if any) is kept in "
                             f"{out}") from error
    train_seconds = time.perf_counter() - start
    intervals = -(-config.steps // config.eval_interval)
    if out is not None:
        run_dir.save(out, model, optimizer, {**config.to_json(), "finished": True}, history,
                     intervals, 0)
    result = validation_score(model, data, config)
    steps_now = config.steps - first
    result.update(model=config.model, dataset=data.name, vocab_size=data.tokenizer.vocab_size,
                  parameters=model.num_parameters(), steps=config.steps,
                  steps_this_run=steps_now, train_seconds=train_seconds,
                  tokens_per_second=(steps_now * config.accumulate * config.batch_size
                                     * config.block_size / train_seconds
                                     if train_seconds > 0 and steps_now else None),
                  backend=job.backend.name, device=job.backend.device_name, dtype=config.dtype,
                  threads=config.threads, threads_reason=config.threads_reason,
                  out=str(out) if out else None)
    print_text_result(args, result)
    return 0


def _steps_done(job) -> int:
    return job.epoch * job.config.eval_interval + job.step


def _nothing_left(args, saved, config) -> bool:
    done = saved.epoch * config.eval_interval + saved.step
    if done < config.steps:
        return False
    say(args, f"nothing left to train: {saved.directory} has finished its {config.steps} "
              f"steps; start a new run (--out) to train longer")
    return True

