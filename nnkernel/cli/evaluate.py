"""``nnkernel evaluate RUN``: the saved model's loss and accuracy on a dataset.

A classifier also gets its F1 macro and confusion matrix (rows: true class,
columns: predicted class), of the prediction the accuracy counts: the arg-max
of the outputs, for an ensemble of its mean probabilities.
"""

from __future__ import annotations

import numpy as np

from ..errors import CheckpointError
from .results import as_model_input, print_result, test_metrics
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
    from .build import load_data

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
    X, y = data.X_test, data.y_test
    if name.lower().endswith((".csv", ".npz")):  # a user's file: evaluate every row
        X = np.concatenate([data.X_train, data.X_test])
        y = np.concatenate([data.y_train, data.y_test])
    X = as_model_input(model, X, f"dataset {data.name}", saved.directory)
    result = test_metrics(model, X, y, loss, data, args.batch_size, classes=True)
    result.update(run=str(saved.directory), dataset=data.name, epoch=saved.epoch,
                  backend=backend.name, device=backend.device_name,
                  dtype=str(model.config()["dtype"]))
    print_result(args, result, model)
    if "confusion_matrix" in result and not (args.json or args.quiet):
        print(f"F1 macro {result['f1_macro']:.4f}")
        print(confusion_text(result["confusion_matrix"]))
    return 0


def confusion_text(counts) -> str:
    counts = np.asarray(counts)
    width = max(len(str(int(counts.max()))), len(str(counts.shape[0] - 1)), 3)
    rows = ["confusion matrix (rows: true class, columns: predicted class)",
            " " * (width + 2) + " ".join(f"{j:>{width}}" for j in range(counts.shape[1]))]
    rows += [f"{i:>{width}}  " + " ".join(f"{v:>{width}}" for v in row)
             for i, row in enumerate(counts)]
    return "\n".join(rows)
