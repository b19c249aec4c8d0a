"""``nnkernel evaluate RUN``: the saved model's loss and accuracy on a dataset."""

from __future__ import annotations

import numpy as np

from ..errors import CheckpointError
from .results import check_features, print_result, test_metrics
from .runtime import backend_for


def add_parser(sub, add_device_flags, add_output_flags, types):
    evaluate = sub.add_parser("evaluate", help="evaluate a saved run on a dataset")
    evaluate.add_argument("run_dir", metavar="DIR")
    evaluate.add_argument("--dataset", help="default: the dataset the run was trained on "
                          "(its test split; all rows of a .csv/.npz file)")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--target")
    evaluate.add_argument("--batch-size", type=types.positive_int, default=1024)
    add_device_flags(evaluate)
    add_output_flags(evaluate)


def run(args) -> int:
    from ..io import run_dir
    from .train import load_data

    saved = run_dir.load(args.run_dir)
    dataset = dict(saved.config.get("dataset") or {})
    if args.dataset:  # the run's task and classes stay: labels are read as the model's
        dataset = {"name": args.dataset, "target": args.target, "task": dataset.get("task"),
                   "n_classes": dataset.get("n_classes")}
    if not dataset.get("name"):
        raise CheckpointError(f"{saved.directory / run_dir.CONFIG} names no dataset; "
                              "pass --dataset")
    runtime = {**saved.config.get("runtime", {}), "tf32": bool(args.tf32)}
    backend = backend_for(runtime, args)
    model = saved.build_model(backend.name, backend.device)
    if args.dtype:
        model.to(dtype=args.dtype)
    loss = (saved.config.get("hyperparameters") or {}).get("loss") or "cross_entropy"
    name = str(dataset["name"])
    data = load_data(dataset, args.data_dir or dataset.get("data_dir"), loss)
    check_features(model, data.n_features, f"dataset {data.name}", saved.directory)
    X, y = data.X_test, data.y_test
    if name.lower().endswith((".csv", ".npz")):  # a user's file: evaluate every row
        X = np.concatenate([data.X_train, data.X_test])
        y = np.concatenate([data.y_train, data.y_test])
    result = test_metrics(model, X, y, loss, data, args.batch_size)
    result.update(run=str(saved.directory), dataset=data.name, epoch=saved.epoch,
                  backend=backend.name, device=backend.device_name,
                  dtype=str(model.config()["dtype"]))
    print_result(args, result, model)
    return 0
