"""``nnkernel predict RUN INPUT``: the saved model's predictions for a file of features."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .runtime import backend_for


def add_parser(sub, add_device_flags, add_output_flags, types):
    predict = sub.add_parser("predict", help="predict with a saved run")
    predict.add_argument("run_dir", metavar="DIR")
    predict.add_argument("input", metavar="INPUT", help="features: a .npy or .csv file (an "
                         "image model also takes flat rows of C*H*W pixels, or a .npy of "
                         "(N, C, H, W) images)")
    predict.add_argument("--output", metavar="FILE",
                         help="write predictions to FILE (.npy, .csv or .txt) instead of stdout")
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
    backend = backend_for({**saved.config.get("runtime", {}), "tf32": bool(args.tf32)}, args)
    model = saved.build_model(backend.name, backend.device)
    X = datasets.load_features(Path(args.input), images=len(model.input_shape) > 1)
    X = as_model_input(model, X, str(args.input), saved.directory)
    out = model.predict(backend.asarray(X, dtype=model.dtype), batch_size=args.batch_size)
    dataset = saved.config.get("dataset") or {}
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
