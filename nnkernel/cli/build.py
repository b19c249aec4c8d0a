"""A run's parts from its settings: the dataset, the model and the optimizer."""

from __future__ import annotations

import os

from ..errors import ConfigError


def load_data(name, data_dir=None, loss=None, *, target=None, task=None, n_classes=None):
    """Load the dataset; a classification set gets one-hot targets for non-CE losses.

    ``task`` and ``n_classes``: a saved run's, so its labels are read as the model's
    rather than as this file alone suggests.
    """
    from ..errors import DTypeError
    from ..io import datasets
    from ..losses import cross_entropy, get_loss

    policy = {"task": task, "n_classes": n_classes}
    if str(name).lower().endswith(".csv"):
        data = datasets.load_csv(name, target=target or "label", **policy)
    else:
        data = datasets.load(name, data_dir, **policy)
    loss_fn = get_loss(loss) if loss else None
    if loss_fn is cross_entropy and data.task != "classification":
        raise DTypeError(f"--loss cross_entropy needs integer class labels, but {data.name} has "
                         f"float (regression) targets; use --loss mse, or labels 0..K-1")
    if data.task == "classification" and loss_fn not in (None, cross_entropy):
        data.y_train = datasets.one_hot(data.y_train, data.n_classes)
        data.y_test = datasets.one_hot(data.y_test, data.n_classes)
    return data


def load_run_data(config, data_dir=None):
    """The dataset of a run's settings (`RunConfig`)."""
    return load_data(config.dataset, data_dir or config.data_dir, config.loss,
                     target=config.target, task=config.task, n_classes=config.n_classes)


def default_loss(data) -> str:
    return "cross_entropy" if data.task == "classification" and data.y_train.ndim == 1 else "mse"


def build_model(config, data, backend):
    """A new model for a run's settings (`RunConfig`); fills in ``config.loss`` if unset."""
    from ..nn.builders import cnn, mlp

    if config.loss is None:
        config.loss = default_loss(data)
    n_out = data.n_classes if data.task == "classification" else data.y_train.shape[1]
    _check_memory(config, data, n_out)
    options = {"activation": config.activation, "dropout": config.dropout,
               "batchnorm": config.batchnorm, "seed": config.seed, "dtype": config.dtype,
               "backend": backend, "ensemble": config.ensemble}
    if config.conv:
        image = getattr(data, "image_shape", None)
        if image is None:
            raise ConfigError(f"--conv needs images, but {data.name} is not an image dataset "
                              f"(digits, mnist, fashion-mnist, or an .npz of (n, H, W) or "
                              f"(n, C, H, W) images)")
        return cnn(image, config.conv, config.hidden, n_out, **options)
    return mlp(data.n_features, config.hidden, n_out, **options)


def _check_memory(config, data, n_out) -> None:
    """Refuse, with the figure, a network that cannot fit in memory (before allocating it)."""
    widths = [data.n_features, *config.hidden, n_out]
    members = config.ensemble or 1
    params = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False)) * members
    activations = config.batch_size * sum(widths) * members * 3
    need = (params * 4 + activations) * (4 if config.dtype == "float32" else 8)  # θ, g, 2 moments
    available = _available_memory()
    if available is not None and need > available:
        raise ConfigError(f"this network needs about {need / 2**30:.1f} GiB ({params:,} "
                          f"parameters with gradients and optimizer state) but "
                          f"{available / 2**30:.1f} GiB of memory is available; use a smaller "
                          f"--ensemble, --hidden or --batch-size")


def _available_memory() -> int | None:
    from ..io.tabular import available_memory

    return available_memory()


def build_optimizer(config, steps_per_epoch):
    """The optimizer of a run's settings. Adam and AdamW flush subnormal moments unless the
    run says otherwise (``config.flush_subnormals``, recorded so a resume does the same)."""
    from ..optim import get_optimizer, make_schedule

    schedule = make_schedule(config.schedule, config.epochs * steps_per_epoch, steps_per_epoch)
    options = {"lr": config.lr, "clip_norm": config.clip_norm, "schedule": schedule}
    if config.weight_decay is not None:  # else the optimizer's own default (AdamW: 0.01)
        options["weight_decay"] = config.weight_decay
    if str(config.optimizer).lower() in ("adam", "adamw"):
        if config.flush_subnormals is None:  # the command line trades exactness for x86 speed
            config.flush_subnormals = True
        options["flush_subnormals"] = config.flush_subnormals
    return get_optimizer(config.optimizer, **options)


def member_lrs(config, members):
    """One learning rate per ensemble member (``config``: a RunConfig or the hyperparameters
    dict of a config.json)."""
    lr = config.get("lr") if isinstance(config, dict) else config.lr
    return list(lr) if isinstance(lr, list) else [lr] * members


def same_dataset(given: str, saved) -> bool:
    """Whether --dataset names the run's own dataset (a name, or the same file)."""
    from ..io.fingerprint import absolute_dataset_spec

    if not isinstance(saved, str):
        return False
    mine = absolute_dataset_spec({"name": given})["name"]
    if mine.lower().endswith((".csv", ".npz")) or os.path.isabs(saved):  # files (a text's too)
        return os.path.realpath(mine) == os.path.realpath(saved)
    return mine.lower().replace("_", "-") == saved.lower().replace("_", "-")
