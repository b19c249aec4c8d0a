"""``nnkernel evaluate RUN``: the saved model's loss and accuracy on a dataset.

By default the rows scored are the held-out test split of the run's own dataset: the
rows its test metrics came from, never its training rows (a .csv/.npz run's file is
split again as when it was trained). ``--rows all`` scores every row, and the
output says which rows were scored.

A classifier also gets its F1 macro and confusion matrix (rows: true class,
columns: predicted class), of the prediction the accuracy counts: the arg-max
of the outputs, for an ensemble of its mean probabilities.
"""

from __future__ import annotations

import numpy as np

from ..errors import CheckpointError
from . import text_runs
from .build import same_dataset
from .results import as_model_input, print_result, test_metrics
from .runtime import backend_for
from .text_runs import is_text_run


def add_parser(sub, add_device_flags, add_output_flags, types):
    evaluate = sub.add_parser(
        "evaluate", help="evaluate a saved run on a dataset",
        description="Score a saved run. By default on the held-out test split of the run's "
        "own dataset (the rows its test metrics came from; a .csv/.npz file is split as "
        "when it was trained); --dataset scores another file's every row.")
    evaluate.add_argument("run_dir", metavar="DIR")
    evaluate.add_argument("--dataset", help="default: the dataset the run was trained on")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--target")
    evaluate.add_argument("--rows", choices=ROWS, help="test: the held-out test split (default "
                          "for the run's own dataset); all: every row, training rows included "
                          "(default for another --dataset)")
    evaluate.add_argument("--batch-size", type=types.positive_int, default=1024)
    add_device_flags(evaluate)
    add_output_flags(evaluate)


ROWS = ("test", "all")


def run(args) -> int:
    from ..io import run_dir
    from .build import load_data, member_lrs

    saved = run_dir.load(args.run_dir)
    if is_text_run(saved.config):  # a language model: its held-out text
        return text_runs.evaluate(args, saved)
    dataset = dict(saved.config.get("dataset") or {})
    own = not args.dataset or same_dataset(args.dataset, dataset.get("name"))
    if args.dataset:  # the run's task and classes stay: labels are read as the model's
        dataset = {"name": args.dataset, "target": args.target or dataset.get("target"),
                   "task": dataset.get("task"), "n_classes": dataset.get("n_classes")}
    if not dataset.get("name"):
        raise CheckpointError(f"{saved.directory / run_dir.CONFIG} names no dataset; "
                              "pass --dataset")
    runtime = saved.config.get("runtime") or {}
    backend = backend_for(args, runtime.get("device") or "cpu", runtime.get("backend"),
                          runtime.get("dtype") or "float32", False)
    model = saved.build_model(backend.name, backend.device)
    if args.dtype:
        model.to(dtype=args.dtype)
    hyper = saved.config.get("hyperparameters") or {}
    loss = hyper.get("loss") or "cross_entropy"
    data = load_data(dataset["name"], args.data_dir or dataset.get("data_dir"), loss,
                     target=dataset.get("target"), task=dataset.get("task"),
                     n_classes=dataset.get("n_classes"))
    rows = args.rows or ("test" if own else "all")
    X, y = data.X_test, data.y_test
    n_all = data.X_train.shape[0] + data.X_test.shape[0]
    if rows == "all":
        X = np.concatenate([data.X_train, data.X_test])
        y = np.concatenate([data.y_train, data.y_test])
        scored = (f"all {n_all} rows of {data.name}, training rows included" if own else
                  f"all {n_all} rows of {data.name}")
    else:
        scored = f"the held-out test split of {data.name}; {n_all} rows in all"
    X = as_model_input(model, X, f"dataset {data.name}", saved.directory)
    result = test_metrics(model, X, y, loss, data, args.batch_size, classes=True)
    result.update(run=str(saved.directory), dataset=data.name, rows=rows, scored=scored,
                  epoch=saved.epoch, backend=backend.name, device=backend.device_name,
                  dtype=str(model.config()["dtype"]))
    if model.ensemble is not None and "lr" in hyper:
        result["member_lr"] = member_lrs(hyper, model.ensemble)
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
