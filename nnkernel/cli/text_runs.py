"""What the commands share for a language model run: its model, optimizer, text and tokenizer.

    --model gpt:   nk.gpt(vocab, block_size, dim, heads, layers, dropout)  (weights tied)
    --model lstm:  Embedding(vocab, dim) · [LSTM(·, hidden, return_sequences) · Dropout] ×
                   layers · Dense(hidden, vocab)   (issue 24's character LSTM)

AdamW decays the weight matrices only: every parameter of two or more axes except the
embeddings' (so not biases, LayerNorm, token or position embeddings; for a GPT exactly
`nnkernel.nn.gpt.decay_keys`).
"""

from __future__ import annotations

import math

from ..errors import CheckpointError, ConfigError
from ..run_settings import RunConfig


def is_text_run(saved_config: dict) -> bool:
    """Whether a run directory's config.json is a language model's."""
    hyper = saved_config.get("hyperparameters")
    return isinstance(hyper, dict) and hyper.get("model") in ("gpt", "lstm")


def build_text_model(config: RunConfig, vocab_size: int, backend):
    """A new model for a language model run's settings."""
    from ..nn.embedding import Embedding
    from ..nn.gpt import gpt
    from ..nn.layers import Dense, Dropout
    from ..nn.sequential import Sequential

    options = {"seed": config.seed, "dtype": config.dtype, "backend": backend}
    if config.model == "gpt":
        return gpt(vocab_size, config.block_size, config.dim, config.heads, config.layers,
                   dropout=config.dropout, **options)
    try:
        from ..nn.recurrent import LSTM
    except ImportError:
        raise ConfigError("--model lstm needs nnkernel's recurrent layers (nk.LSTM), which "
                          "this version of nnkernel does not have; use --model gpt") from None
    hidden = config.hidden[0]
    layers, width = [Embedding(vocab_size, config.dim, std=1.0)], config.dim  # torch's N(0, 1)
    for _ in range(config.layers):
        layers.append(LSTM(width, hidden, return_sequences=True))
        layers += [Dropout(config.dropout)] if config.dropout else []
        width = hidden
    layers.append(Dense(hidden, vocab_size))
    return Sequential(*layers, **options)


def decay_keys(model) -> list[str]:
    """The weight matrices: parameters of 2+ axes, except those of embedding layers."""
    from ..nn.embedding import Embedding, PositionEmbedding

    keys = []
    for pos in model.plan.walk():
        if pos.owns and not isinstance(pos.layer, Embedding | PositionEmbedding):
            keys += [pos.keys[name] for name, shape in pos.layer.param_shapes().items()
                     if len(shape) >= 2]
    return keys


def build_text_optimizer(config: RunConfig, model):
    """The optimizer of a language model run: its settings, the schedule of
    `text_settings.schedule`, weight decay on `decay_keys` only."""
    from ..optim import get_optimizer
    from .text_settings import schedule

    options = {"lr": config.lr, "clip_norm": config.clip_norm, "schedule": schedule(config),
               "weight_decay": config.weight_decay or 0.0, "decay": decay_keys(model)}
    if str(config.optimizer).lower() in ("adam", "adamw"):
        if config.betas is not None:
            options["betas"] = tuple(config.betas)
        if config.flush_subnormals is None:
            config.flush_subnormals = True  # as every run of the command line (cli.build)
        options["flush_subnormals"] = config.flush_subnormals
    return get_optimizer(config.optimizer, **options)


def load_run_text(config: RunConfig, data_dir=None, tokenizer=None):
    """The run's text (`nnkernel.io.text.TextData`) split as the run splits it; with
    ``tokenizer`` (a saved run's) a text with other characters is refused by name."""
    from ..io.text import load_text

    return load_text(config.dataset, data_dir or config.data_dir,
                     val_fraction=config.val_split or 0.1, tokenizer=tokenizer)


def saved_tokenizer(config: RunConfig, where):
    """The tokenizer a run saved in its config.json."""
    from ..io.tokenizer import CharTokenizer

    if config.tokenizer is None:
        raise CheckpointError(f"{where} is a language model run without its vocabulary "
                              "(dataset.tokenizer); it cannot encode text")
    try:
        return CharTokenizer.from_json(config.tokenizer)
    except ConfigError as e:
        raise CheckpointError(f"{where}: dataset.tokenizer is damaged: {e}") from e


def check_same_text(config: RunConfig, data, where, doing: str) -> None:
    """Refuse a text other than the one the run was trained on (its sha256 and length)."""
    saved = config.fingerprint or {}
    now = data.fingerprint()
    if saved.get("scheme") == now["scheme"] and saved != now:
        raise ConfigError(f"cannot {doing} {where}: {data.path} is not the text the run was "
                          f"trained on ({saved.get('characters')} characters, sha256 "
                          f"{str(saved.get('sha256'))[:12]}... then; {now['characters']}, "
                          f"{now['sha256'][:12]}... now)")


def validation_score(model, data, config: RunConfig, batch_size: int = 64,
                     whole: bool = False) -> dict:
    """Loss (nats/token) and bits per character over every non-overlapping window of the
    held-out tail (``whole``: of the whole text): what `nnkernel evaluate` reports."""
    from ..train.windows import TokenWindows, window_loss

    ids = data.ids if whole else data.val_ids
    windows = TokenWindows(model.backend, ids, config.block_size,
                           "the text" if whole else "the held-out (validation) text")
    starts = windows.fixed_starts()
    with model.backend.activate():
        loss = window_loss(model, windows, starts, batch_size)
    return {"val_loss": loss, "val_bpc": loss / math.log(2.0), "val_windows": int(len(starts)),
            "val_characters": int(len(ids)), "rows": "all" if whole else "test"}


def evaluate(args, saved) -> int:
    """`nnkernel evaluate` of a language model run: the held-out tail of its own text (or
    with --rows all, or another --dataset, every window of the text), with its vocabulary."""
    from ..io.run_dir import CONFIG
    from . import threads
    from .build import same_dataset
    from .results import print_text_result
    from .runtime import backend_for

    try:
        config = RunConfig.from_json(saved.config, str(saved.directory / CONFIG))
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    own = not args.dataset or same_dataset(args.dataset, config.dataset)
    if not own:
        from .text_settings import absolute_text

        config.dataset = absolute_text(args.dataset)
    tokenizer = saved_tokenizer(config, saved.directory)
    data = load_run_text(config, args.data_dir, tokenizer)
    if own:
        check_same_text(config, data, saved.directory, "evaluate")
    backend = backend_for(args, config.device, config.backend, config.dtype, False)
    model = saved.build_model(backend.name, backend.device)
    if threads.on_cpu(backend.device_name) and not args.threads and config.threads:
        threads.apply(config.threads)  # the run's own count (chosen for its work, or given)
    if args.dtype:
        model.to(dtype=args.dtype)
    whole = not own or args.rows == "all"
    result = validation_score(model, data, config, whole=whole)
    result.update(run=str(saved.directory), dataset=data.name, model=config.model,
                  step=saved.epoch * config.eval_interval + saved.step, backend=backend.name,
                  device=backend.device_name, dtype=str(model.config()["dtype"]))
    print_text_result(args, result)
    return 0
