"""``nnkernel predict RUN INPUT``: the saved model's predictions for a file of features.

INPUT holds raw features, as the run's dataset file held them: the preprocessing the
run recorded (config.json "preprocessing", e.g. digits' {"divide_by": 16.0}) is
applied first, as the dataset loader applied it in training. ``--preprocessed`` says
INPUT is already scaled and skips it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .runtime import backend_for
from .text_runs import is_text_run


def add_parser(sub, add_device_flags, add_output_flags, types):
    predict = sub.add_parser("predict", help="predict with a saved run")
    predict.add_argument("run_dir", metavar="DIR")
    predict.add_argument("input", metavar="INPUT", help="raw features, as in the run's "
                         "dataset: a .npy or .csv file without the target column (an image "
                         "model also takes flat rows of C*H*W pixels, or a .npy of "
                         "(N, C, H, W) images)")
    predict.add_argument("--output", metavar="FILE",
                         help="write predictions to FILE (.npy, .csv or .txt) instead of stdout")
    predict.add_argument("--preprocessed", action="store_true",
                         help="INPUT is already preprocessed; by default the run's recorded "
                         "preprocessing (e.g. divide by 255 for MNIST pixels, by 16 for "
                         "digits) is applied to INPUT first, as in training")
    predict.add_argument("--proba", action="store_true",
                         help="class probabilities (one column per class) instead of labels")
    predict.add_argument("--batch-size", type=types.positive_int, default=1024)
    add_device_flags(predict)
    predict.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args) -> int:
    from ..backend import to_numpy
    from ..io import checkpoint, datasets, run_dir
    from ..nn.activations import sigmoid, softmax
    from ..nn.ensemble import ensemble_mean
    from .results import as_model_input

    output = Path(args.output) if args.output else None
    if output is not None and output.resolve() == Path(args.input).resolve():
        raise ConfigError(f"--output {output} is the input file; choose another name")
    if output is not None and output.suffix.lower() not in (".npy", ".csv", ".txt"):
        raise ConfigError(f"--output must end in .npy, .csv or .txt, got {output.name!r}")
    target = None if output is None else output_target(output)
    saved = run_dir.load(args.run_dir)
    if is_text_run(saved.config):
        raise ConfigError(f"{saved.directory} is a language model run: predict takes rows of "
                          f"features; sample text from it with nnkernel generate "
                          f"{args.run_dir} --prompt TEXT")
    runtime = saved.config.get("runtime") or {}
    backend = backend_for(args, runtime.get("device") or "cpu", runtime.get("backend"),
                          runtime.get("dtype") or "float32", False)
    model = saved.build_model(backend.name, backend.device)
    X = datasets.load_features(Path(args.input), images=len(model.input_shape) > 1)
    dataset = saved.config.get("dataset") or {}
    X = as_model_input(model, X, str(args.input), saved.directory,
                       hint=target_column_hint(Path(args.input), X, model, dataset))
    if not args.preprocessed:
        X = preprocess(X, saved.config.get("preprocessing") or {}, args)
    out = model.predict(backend.asarray(X, dtype=model.dtype), batch_size=args.batch_size)
    classify = dataset.get("task", "classification") == "classification"
    loss = (saved.config.get("hyperparameters") or {}).get("loss")
    if args.proba and not classify:
        raise ConfigError(f"--proba needs a classifier; {saved.directory} is a regression run")
    xp = model.xp
    with backend.activate():  # on the model's GPU, as the predictions
        if classify:
            probs = sigmoid(xp, out) if loss == "binary_cross_entropy" else softmax(xp, out)
            out = xp.mean(probs, axis=0) if model.ensemble is not None else probs
        elif model.ensemble is not None:
            out = ensemble_mean(out)
    out = to_numpy(out)
    predictions = out if (args.proba or not classify) else np.argmax(out, axis=-1)
    if output is None:
        sys.stdout.write(predictions_text(predictions))
        return 0
    if output.suffix.lower() == ".npy":
        buf = io.BytesIO()
        np.save(buf, predictions, allow_pickle=False)
        checkpoint.atomic_write_bytes(target, buf.getvalue())
    else:
        checkpoint.atomic_write_bytes(target, predictions_text(predictions).encode())
    print(f"wrote {predictions.shape[0]} predictions to {output}", file=sys.stderr)
    return 0


def preprocess(X, record: dict, args=None):
    """X as the dataset loader gave it to the model in training: ``{"divide_by": d}`` is
    float32(raw) / d in float32 (docs/format.md); ``{}`` leaves X as it is."""
    unknown = sorted(set(record) - {"divide_by"}) if isinstance(record, dict) else [record]
    if unknown:
        raise ConfigError(f"the run records a preprocessing this version cannot apply "
                          f"({record!r}); preprocess INPUT yourself and pass --preprocessed")
    d = record.get("divide_by")
    if d is None:
        return X
    if not (isinstance(d, int | float) and not isinstance(d, bool) and d > 0):
        raise ConfigError(f"the run's preprocessing divide_by must be a number > 0, got {d!r}")
    if d > 1 and X.size and float(X.min()) >= 0.0 and float(X.max()) <= 1.0 and \
            not getattr(args, "quiet", False):
        print(f"nnkernel: note: every value of INPUT is within [0, 1], as after the run's "
              f"preprocessing (divide by {d:g}); if INPUT is already scaled, pass "
              f"--preprocessed", file=sys.stderr)
    return X / np.float32(d)


def target_column_hint(path: Path, X, model, dataset: dict) -> str | None:
    """Why INPUT has one column more than the model takes, when it looks like the target."""
    if X.ndim != 2 or len(model.input_shape) != 1 or X.shape[1] != model.n_in + 1:
        return None
    target = dataset.get("target") or "label"
    if path.suffix.lower() == ".csv":
        with contextlib.suppress(OSError, UnicodeDecodeError, csv.Error):
            with path.open(newline="") as f:
                header = next(csv.reader([f.readline(1 << 20)]), [])
            names = [name.strip() for name in header]
            if target in names:
                return (f"it still holds the target column {target!r} (column "
                        f"{names.index(target) + 1} of {len(names)}); drop that column")
    return (f"one column more than the model takes: if it is the target ({target!r} in "
            f"training), drop it")


def output_target(output: Path) -> Path:
    """The file --output writes. Through a symlink, the file it points at (the link stays,
    as the shell's > does), even a dangling link's, which is then created; never a
    directory or a device; checked before the model is loaded."""
    target = Path(os.path.realpath(output)) if output.is_symlink() else output
    shown = f"--output {output}" + (f" (a symlink to {target})" if target != output else "")
    if target.exists() and not target.is_file():
        kind = "a directory" if target.is_dir() else "not a regular file"
        raise ConfigError(f"{shown} is {kind}; predictions are written to a regular file "
                          "(leave --output out to print them)")
    if not target.parent.is_dir():
        raise ConfigError(f"{shown}: the directory {target.parent} does not exist")
    return target


def predictions_text(predictions) -> str:
    if predictions.ndim == 1:
        return "".join(f"{int(p)}\n" for p in predictions)
    return "".join(",".join(f"{v:.7g}" for v in row) + "\n" for row in predictions)
