"""Metrics beyond the loss and accuracy: top-k accuracy, F1 macro, ROC AUC, confusion matrix.

    nk.fit(model, X, y, validation_split=0.2, metrics=["f1_macro", "top3_accuracy"])
    nk.evaluate(model, X, y, metrics=["roc_auc", "confusion_matrix"], return_dict=True)

Each metric is a function of a whole dataset's host arrays, (labels, scores) ->
value, computed in float64 NumPy with scikit-learn's definitions (the tests
compare them with it). They are reporting, not the training step, so they are
not written against the Array API: the outputs are read to the host once per
evaluation (N × classes numbers), and NumPy's sort, unique and bincount do the
rest.

Why `fit` computes them on the validation data only, at each epoch end: F1, ROC
AUC and the confusion matrix do not decompose over minibatches (the mean of
per-batch AUCs is not the AUC), so they need every output of an epoch at once.
On the training batches that means keeping, or copying to the host, every
step's outputs (a host sync per step on a GPU), and those outputs come from a
model that changes at every step, so the number would describe no model. The
loss and accuracy are sums, so `fit` keeps those on the device during the epoch.
"""

from __future__ import annotations

import re

import numpy as np

from ..backend import to_numpy
from ..checks import integer
from ..errors import ConfigError, ShapeError


# -- the metrics, on host arrays -----------------------------------------------------------------
def top_k_accuracy(y_true, y_score, k: int = 5) -> float:
    """Fraction of rows whose label is among the ``k`` highest of its scores (N, C).

    Ties rank the higher class index first, as scikit-learn's top_k_accuracy_score.
    """
    y_true, y_score = _labels(y_true), _scores(y_score)
    k = integer("k", k)
    if k >= y_score.shape[1]:
        return 1.0
    top = np.argsort(y_score, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean(np.any(top == y_true[:, None], axis=1)))


def accuracy(y_true, y_score) -> float:
    """Fraction of rows whose label is the arg-max of its scores (the first maximum)."""
    return float(np.mean(_predictions(y_score) == _labels(y_true)))


def confusion_matrix(y_true, y_pred, n_classes: int | None = None) -> np.ndarray:
    """counts[i, j]: rows of true class i predicted as class j (scikit-learn's layout).

    ``y_pred`` is labels (N,) or scores (N, C) (their arg-max). ``n_classes``
    defaults to the scores' width, else to the largest label + 1.
    """
    width = np.shape(y_pred)[1] if np.ndim(y_pred) == 2 else None
    y_true, y_pred = _labels(y_true), _predictions(y_pred)
    if y_true.shape != y_pred.shape:
        raise ShapeError(f"{y_true.shape[0]} labels but {y_pred.shape[0]} predictions")
    top = int(max(y_true.max(initial=0), y_pred.max(initial=0)))
    n = integer("n_classes", n_classes if n_classes is not None else width or top + 1)
    if top >= n:
        raise ShapeError(f"labels must be in [0, {n - 1}] for {n} classes")
    return np.bincount(n * y_true + y_pred, minlength=n * n).reshape(n, n)


def f1_macro(y_true, y_pred) -> float:
    """Unweighted mean over classes of F1 = 2TP / (2TP + FP + FN).

    Averaged over the classes found in y_true or y_pred, as scikit-learn's
    ``f1_score(average="macro")`` (a class in neither has no F1 to average).
    """
    counts = confusion_matrix(y_true, _predictions(y_pred))
    if not counts.sum():
        return float("nan")
    tp = np.diag(counts).astype(np.float64)
    true, pred = counts.sum(axis=1), counts.sum(axis=0)
    present = (true + pred) > 0
    return float(np.mean(2.0 * tp[present] / (true + pred)[present]))


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve of a binary classifier; NaN when only one class is present.

    ``y_score`` is the positive class's score (N,), or two columns (N, 2) of
    which the second is used. Computed as the Mann-Whitney U statistic with
    mid-ranks, which equals the trapezoidal area scikit-learn's roc_auc_score
    takes, ties included.
    """
    y = _labels(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    if s.ndim != 1 or s.shape[0] != y.shape[0]:
        raise ShapeError(f"roc_auc needs one score per row, or (N, 2) scores of a binary "
                         f"classifier; got scores of shape {np.shape(y_score)} for "
                         f"{y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() > 1):
        raise ConfigError("roc_auc is for binary classification (labels 0 and 1); for more "
                          "classes use f1_macro or top_k_accuracy")
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, group, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each tie group
    rank_sum = float(mid_rank[group.reshape(-1)][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ShapeError(f"labels must be one integer per row, got shape {y.shape}")
    if y.dtype.kind not in "iub":
        if y.dtype.kind != "f" or not np.all(y == np.round(y)):
            raise ConfigError(f"labels must be integers, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise ConfigError("labels must be >= 0")
    return y.astype(np.int64)


def _scores(s) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 2:
        raise ShapeError(f"scores must be (rows, classes), got shape {s.shape}")
    return s


def _predictions(y_pred) -> np.ndarray:
    """Labels from labels (N,) or from scores (N, C) (their first maximum)."""
    a = np.asarray(y_pred)
    return np.argmax(a, axis=1).astype(np.int64) if a.ndim == 2 else _labels(a)


# -- names, and what fit and evaluate ask of them ------------------------------------------------
class Metric:
    """A named metric. ``fn(y_true, y_score)``: for a classifier, labels (N,) and class
    probabilities (N, C); for another loss, targets and outputs (N, ...).

    ``on="labels"`` gives a classifier's metric the predicted labels (the arg-max)
    instead of the probabilities, as scikit-learn's ``f1_score`` or
    ``balanced_accuracy_score`` want them. ``classes`` marks a metric that only
    makes sense for a classifier.
    """

    def __init__(self, name: str, fn, classes: bool = False, on: str = "scores"):
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"a metric's name must be an identifier (it is logged as "
                              f"val_<name>), got {name!r}")
        if on not in ("scores", "labels"):
            raise ConfigError(f"on must be 'scores' or 'labels', got {on!r}")
        self.name, self.fn, self.on = name, fn, on
        self.classes = bool(classes) or on == "labels"

    def __call__(self, y_true, y_score):
        if self.on == "labels":
            y_score = _predictions(y_score)
        value = self.fn(y_true, y_score)
        arr = np.asarray(value)
        return float(arr) if arr.ndim == 0 else arr.tolist()  # JSON-ready for metrics.json

    def __repr__(self):
        return f"Metric({self.name!r})"


def top_k(k: int) -> Metric:
    """Top-k accuracy as a metric named top<k>_accuracy."""
    k = integer("k", k)
    return Metric(f"top{k}_accuracy", lambda y, s: top_k_accuracy(y, s, k), classes=True)


BUILTIN = {
    "accuracy": lambda: Metric("accuracy", accuracy, classes=True),
    "top_k_accuracy": lambda: Metric("top_k_accuracy", top_k_accuracy, classes=True),  # k = 5
    "f1_macro": lambda: Metric("f1_macro", f1_macro, classes=True),
    "roc_auc": lambda: Metric("roc_auc", roc_auc, classes=True),
    "confusion_matrix": lambda: Metric(
        "confusion_matrix", lambda y, s: confusion_matrix(y, s, np.shape(s)[1]), classes=True),
}
ALIASES = {"auc": "roc_auc", "f1": "f1_macro", "acc": "accuracy"}
TOP_K = re.compile(r"top_?(\d+)_accuracy")


def get_metric(spec) -> Metric:
    """A Metric from a name ("f1_macro", "top3_accuracy", ...), a Metric, or a function."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, str):
        key = ALIASES.get(spec.lower(), spec.lower())
        if key in BUILTIN:
            return BUILTIN[key]()
        match = TOP_K.fullmatch(key)
        if match:
            return top_k(int(match.group(1)))
        raise ConfigError(f"unknown metric {spec!r}; valid metrics: {', '.join(BUILTIN)}, "
                          f"top<k>_accuracy (e.g. top3_accuracy), or a function")
    if callable(spec):
        name = getattr(spec, "__name__", "")
        if not name.isidentifier():  # a lambda or a functools.partial
            raise ConfigError(f"name the metric {spec!r}: nk.train.metrics.Metric('name', fn)")
        return Metric(name, spec)
    raise ConfigError(f"a metric is a name, a Metric or a function, got {spec!r}")


def resolve(metrics, loss_fn) -> list[Metric]:
    """The Metrics of ``metrics`` for a model trained with ``loss_fn``, checked once.

    Accuracy under cross-entropy is left out: fit and evaluate count it already.
    """
    from ..losses import binary_cross_entropy, cross_entropy

    if metrics is None:
        return []
    specs = [metrics] if isinstance(metrics, str) or not isinstance(
        metrics, (list, tuple)) else list(metrics)
    out, names = [], set()
    classifier = loss_fn in (cross_entropy, binary_cross_entropy)
    for spec in specs:
        metric = get_metric(spec)
        if metric.name in names or metric.name == "loss":
            raise ConfigError(f"metric {metric.name!r} is given twice (or is the loss)")
        if metric.classes and not classifier:
            raise ConfigError(f"metric {metric.name!r} needs a classifier trained with "
                              f"cross_entropy or binary_cross_entropy, not "
                              f"{getattr(loss_fn, '__name__', loss_fn)}")
        names.add(metric.name)
        if not (metric.name == "accuracy" and loss_fn is cross_entropy):
            out.append(metric)
    return out


def score(metrics: list[Metric], loss_fn, out, y, *, members: bool) -> dict:
    """{name: value} of every metric, from a dataset's outputs and targets (on any device).

    For an ensemble each metric is computed per member: a list, one value each.
    """
    if not metrics:
        return {}
    out = np.asarray(to_numpy(out), dtype=np.float64)
    y_true, scores = class_scores(loss_fn, out, np.asarray(to_numpy(y)))
    each = list(scores) if members else [scores]
    values = {}
    for metric in metrics:
        per = [metric(y_true, s) for s in each]
        values[metric.name] = per if members else per[0]
    return values


def class_scores(loss_fn, out, y):
    """(labels, class probabilities) from host outputs (..., N, C) and targets y.

    Cross-entropy: softmax. Binary cross-entropy with one output: the columns
    (1 − σ, σ), labels y > 0.5. Any other loss: the targets and outputs as given.
    """
    from ..losses import binary_cross_entropy, cross_entropy
    from ..nn.activations import sigmoid, softmax

    if loss_fn is cross_entropy:
        labels = y if y.ndim == 1 else np.argmax(y, axis=-1)
        return labels, softmax(np, out)
    if loss_fn is binary_cross_entropy:
        p = sigmoid(np, out)
        if out.shape[-1] == 1:
            return (y.reshape(-1) > 0.5).astype(np.int64), np.concatenate([1.0 - p, p], -1)
        if not np.allclose(y.sum(axis=-1), 1.0):
            raise ConfigError("class metrics need one class per row; these binary "
                              "cross-entropy targets are multi-label")
        return np.argmax(y, axis=-1), p
    return y, out
