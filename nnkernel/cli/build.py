"""A run's parts from its settings: the dataset, the model and the optimizer."""

from __future__ import annotations

from ..errors import ConfigError


def load_data(dataset: dict, data_dir, loss):
    """Load the dataset; a classification set gets one-hot targets for non-CE losses."""
    from ..errors import DTypeError
    from ..io import datasets
    from ..losses import cross_entropy, get_loss

    name = dataset["name"]
    # a saved run's task and class count: its labels, not what this file alone suggests
    policy = {"task": dataset.get("task"), "n_classes": dataset.get("n_classes")}
    if str(name).lower().endswith(".csv"):
        data = datasets.load_csv(name, target=dataset.get("target") or "label", **policy)
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


def default_loss(data) -> str:
    return "cross_entropy" if data.task == "classification" and data.y_train.ndim == 1 else "mse"


def build_model(hyper, data, settings, backend):
    from ..nn.builders import cnn, mlp

    if hyper["loss"] is None:
        hyper["loss"] = default_loss(data)
    n_out = data.n_classes if data.task == "classification" else data.y_train.shape[1]
    _check_memory(hyper, data, n_out, settings["runtime"]["dtype"])
    options = {"activation": hyper["activation"], "dropout": hyper["dropout"],
               "batchnorm": hyper["batchnorm"], "seed": settings["seed"],
               "dtype": settings["runtime"]["dtype"], "backend": backend,
               "ensemble": hyper["ensemble"]}
    if hyper.get("conv"):
        image = getattr(data, "image_shape", None)
        if image is None:
            raise ConfigError(f"--conv needs images, but {data.name} is not an image dataset "
                              f"(digits, mnist, fashion-mnist, or an .npz of (n, H, W) or "
                              f"(n, C, H, W) images)")
        return cnn(image, hyper["conv"], hyper["hidden"], n_out, **options)
    return mlp(data.n_features, hyper["hidden"], n_out, **options)


def _check_memory(hyper, data, n_out, dtype) -> None:
    """Refuse, with the figure, a network that cannot fit in memory (before allocating it)."""
    widths = [data.n_features, *hyper["hidden"], n_out]
    members = hyper["ensemble"] or 1
    params = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False)) * members
    activations = hyper["batch_size"] * sum(widths) * members * 3
    need = (params * 4 + activations) * (4 if dtype == "float32" else 8)  # θ, g, 2 moments
    available = _available_memory()
    if available is not None and need > available:
        raise ConfigError(f"this network needs about {need / 2**30:.1f} GiB ({params:,} "
                          f"parameters with gradients and optimizer state) but "
                          f"{available / 2**30:.1f} GiB of memory is available; use a smaller "
                          f"--ensemble, --hidden or --batch-size")


def _available_memory() -> int | None:
    from ..io.tabular import available_memory

    return available_memory()


def build_optimizer(hyper, steps_per_epoch):
    from ..optim import get_optimizer, make_schedule

    schedule = make_schedule(hyper["schedule"], hyper["epochs"] * steps_per_epoch,
                             steps_per_epoch)
    options = {"lr": hyper["lr"], "clip_norm": hyper["clip_norm"], "schedule": schedule}
    if hyper["weight_decay"] is not None:  # else the optimizer's own default (AdamW: 0.01)
        options["weight_decay"] = hyper["weight_decay"]
    if str(hyper["optimizer"]).lower() in ("adam", "adamw"):
        options["flush_subnormals"] = True  # the command line trades exactness for x86 speed
    return get_optimizer(hyper["optimizer"], **options)


def member_lrs(hyper, members):
    lr = hyper["lr"]
    return list(lr) if isinstance(lr, list) else [lr] * members
