"""The fit loop: minibatches cut and shuffled on the model's device, metrics, callbacks.

One epoch is, for each minibatch (xb, yb):

    y        = model.forward(xb, train=True)
    loss, dy = loss_fn(y, yb)
    model.backward(dy, input_grad=False)
    optimizer.step(model.params, model.grads)

The data is moved to the model's device once; shuffling draws a permutation on
that device from (seed, epoch), and Dropout masks from (seed, epoch, step), so a
run resumed from a checkpoint at any step continues bit for bit. The host
reads a number from the device only to report progress and at the end of an
epoch.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..backend import dtype_name, to_numpy
from ..errors import ConfigError, DTypeError, NonFiniteError, ShapeError
from ..losses import cross_entropy, get_loss
from ..optim import get_optimizer


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during fit: the current step finished; ``epoch`` and ``step`` say where."""

    def __init__(self, epoch: int, step: int, history: History):
        super().__init__(f"interrupted at epoch {epoch + 1}, step {step}")
        self.epoch, self.step, self.history = epoch, step, history


@dataclass
class History:
    """Per-epoch metrics: ``history["loss"][e]``, ``history["val_accuracy"][e]``, ...

    For an ensemble each entry is a list with one value per member.
    """

    history: dict = field(default_factory=dict)
    epochs: list = field(default_factory=list)

    def append(self, epoch: int, logs: dict) -> None:
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def last(self) -> dict:
        return {k: v[-1] for k, v in self.history.items() if v}

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, **self.history}


class Callback:
    """Hooks into `fit`. ``run`` carries model, optimizer, history, epoch and step."""

    def on_train_begin(self, run) -> None: ...

    def on_epoch_end(self, run, logs: dict) -> bool | None:
        """Return True to stop training."""

    def on_train_end(self, run) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the parameters of the best epoch are put back at the end.
    For an ensemble each member stops on its own: its updates are masked from
    then on, and training ends when every member has stopped.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True, mode: str = "auto"):
        if patience < 1:
            raise ConfigError(f"patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), float(min_delta)
        self.restore_best = restore_best
        self.sign = -1.0 if (mode == "max" or (mode == "auto" and "acc" in monitor)) else 1.0

    def on_train_begin(self, run):
        self.best = None
        self.wait = None
        self.best_arrays = None
        self.stopped_epoch = None

    def on_epoch_end(self, run, logs):
        if self.monitor not in logs:
            raise ConfigError(f"EarlyStopping monitors {self.monitor!r}, but the logs have "
                              f"{', '.join(logs)} (validation metrics need validation_data)")
        value = self.sign * np.asarray(logs[self.monitor], dtype=np.float64)
        if self.best is None:
            self.best = np.full(value.shape, np.inf)
            self.wait = np.zeros(value.shape, dtype=int)
        improved = value < self.best - self.min_delta
        self.best = np.where(improved, value, self.best)
        self.wait = np.where(improved, 0, self.wait + 1)
        if self.restore_best and improved.any():
            arrays = run.model.arrays()
            if self.best_arrays is None or value.ndim == 0:
                self.best_arrays = arrays
            else:  # keep each member's best
                for k, v in arrays.items():
                    self.best_arrays[k][improved] = v[improved]
        stopped = self.wait >= self.patience
        if value.ndim and run.model.ensemble is not None:
            run.optimizer.member_mask = np.where(stopped, 0.0, 1.0)
        if stopped.all():
            self.stopped_epoch = run.epoch
            return True
        return None

    def on_train_end(self, run):
        if self.restore_best and self.best_arrays is not None:
            run.model.load_arrays(self.best_arrays)
        run.optimizer.member_mask = None  # stopped members would stay frozen in a later fit


class _Run:
    """What callbacks see of a fit in progress."""

    def __init__(self, model, optimizer, history):
        self.model, self.optimizer, self.history = model, optimizer, history
        self.epoch, self.step = 0, 0


def fit(model, X, y, *, loss="cross_entropy", optimizer="adam", epochs: int = 10,
        batch_size: int = 32, validation_data=None, shuffle: bool = True, seed: int = 0,
        callbacks=(), progress: bool = True, initial_epoch: int = 0, initial_step: int = 0,
        bootstrap: bool = False, history: History | None = None) -> History:
    """Train ``model`` on (X, y); returns the per-epoch History.

    ``loss`` is a function of `nnkernel.losses` or its name, ``optimizer`` an
    instance or a name. X and y may be arrays of any backend or NumPy: they are
    moved to the model's device once. ``initial_epoch``/``initial_step`` resume
    a run where a checkpoint left it.
    """
    loss_fn = get_loss(loss)
    opt = get_optimizer(optimizer)
    _check_positive("epochs", epochs, allow_zero=True)
    members = model.ensemble is not None
    classify = loss_fn is cross_entropy
    X, y = _prepare(model, X, y, classify, "training data")
    n = X.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size > n:
        raise ConfigError(f"batch_size {batch_size} is larger than the {n} training samples")
    val = None
    if validation_data is not None:
        val = _prepare(model, *validation_data, classify, "validation data")
    be, xp = model.backend, model.xp
    boot = None
    if bootstrap:
        if not members:
            raise ConfigError("bootstrap=True needs an ensemble model")
        rng = np.random.default_rng([seed, 2**31])
        boot = be.asarray(rng.integers(0, n, size=(model.ensemble, n)))

    history = history if history is not None else History()
    run = _Run(model, opt, history)
    for cb in callbacks:
        cb.on_train_begin(run)
    steps = math.ceil(n / batch_size)
    host_synced = be.name != "cupy" and not (be.name == "torch" and be.device.type == "cuda")
    check_every = 1 if host_synced else 50
    bar = Progress(epochs, steps, batch_size, enabled=progress)
    stop_flag = _InterruptFlag()
    with stop_flag:
        for epoch in range(initial_epoch, epochs):
            run.epoch = epoch
            t0 = time.perf_counter()
            order = be.random((seed, epoch)).permutation(n) if shuffle else \
                xp.arange(n, device=be.device)
            loss_sum, correct, seen, pending = 0.0, 0.0, 0, []
            first_step = initial_step if epoch == initial_epoch else 0
            for step in range(first_step, steps):
                run.step = step
                idx = order[step * batch_size:min((step + 1) * batch_size, n)]
                xb, yb = _batch(xp, X, y, idx, boot)
                if model.stochastic:
                    model.reseed((seed, epoch, step))
                frozen = dict(model.state) if opt.member_mask is not None else None
                out = model.forward(xb, train=True)
                value, dy = loss_fn(out, yb, members=members, **(
                    {"num_check": False} if classify else {}))
                model.backward(dy, input_grad=False)
                opt.step(model.params, model.grads)
                if frozen:
                    _restore_stopped_members(model, opt.member_mask, frozen)
                nb = idx.shape[0]
                loss_sum = loss_sum + value * float(nb)
                if classify:
                    correct = correct + _correct(xp, out, yb)
                seen += nb
                pending.append(value)
                if len(pending) >= check_every or step == steps - 1:
                    _check_finite(xp, pending, epoch, step, check_every)
                    pending = []
                bar.step(epoch, step + 1, seen, loss_sum, correct if classify else None)
                if stop_flag.raised and step + 1 < steps:  # after the last step: end the epoch
                    raise TrainingInterrupted(epoch, step + 1, history)
            be.synchronize()
            seconds = time.perf_counter() - t0
            logs = {"loss": _host(loss_sum, seen)}
            if classify:
                logs["accuracy"] = _host(correct, seen)
            if val is not None:
                vl, va = evaluate(model, val[0], val[1], loss=loss_fn, batch_size=max(batch_size,
                                                                                      1024))
                logs["val_loss"] = vl
                if va is not None:
                    logs["val_accuracy"] = va
            logs["seconds"] = seconds
            logs["samples_per_second"] = seen / seconds if seconds > 0 else float("inf")
            history.append(epoch, logs)
            bar.epoch_end(epoch, logs)
            stop = False
            for cb in callbacks:
                stop = bool(cb.on_epoch_end(run, logs)) or stop
            if stop:
                break
            if stop_flag.raised:  # Ctrl-C in the epoch's last step: stop with the epoch saved
                raise TrainingInterrupted(epoch + 1, 0, history)
    for cb in callbacks:
        cb.on_train_end(run)
    return history


def evaluate(model, X, y, *, loss="cross_entropy", batch_size: int = 1024):
    """(mean loss, accuracy or None) in evaluation mode; per member for an ensemble."""
    loss_fn = get_loss(loss)
    classify = loss_fn is cross_entropy
    X, y = _prepare(model, X, y, classify, "evaluation data")
    xp = model.xp
    members = model.ensemble is not None
    n = X.shape[0]
    loss_sum, correct = 0.0, 0.0
    for i in range(0, n, batch_size):
        j = min(i + batch_size, n)  # array-api-strict refuses stops past the end
        xb, yb = X[i:j, ...], y[i:j, ...]
        out = model.forward(xb, train=False)
        value, _ = loss_fn(out, yb, members=members, **({"num_check": False} if classify else {}))
        loss_sum = loss_sum + value * float(xb.shape[0])
        if classify:
            correct = correct + _correct(xp, out, yb)
    return _host(loss_sum, n), (_host(correct, n) if classify else None)


def predict_classes(model, X, batch_size: int = 1024):
    """Predicted class labels (argmax of the outputs), as a backend int array."""
    xp = model.xp
    return xp.argmax(model.predict(X, batch_size=batch_size), axis=-1)


# -- helpers ---------------------------------------------------------------------------
def _prepare(model, X, y, classify, what):
    be, xp = model.backend, model.xp
    X = be.asarray(X)
    y = be.asarray(y)
    if X.ndim != 2:
        raise ShapeError(f"{what}: X must be 2-D (samples, features), got shape {tuple(X.shape)}")
    n = X.shape[0]
    if n == 0:
        raise ShapeError(f"{what}: the dataset is empty (0 samples)")
    if X.shape[1] != model.n_in:
        raise ShapeError(f"{what}: X has {X.shape[1]} features, but the model expects "
                         f"{model.n_in}")
    if y.shape[0] != n:
        raise ShapeError(f"{what}: X has {n} samples but y has {y.shape[0]}")
    if X.dtype != model.dtype:  # integer pixels or another float width
        X = xp.astype(X, model.dtype)
    if not bool(xp.all(xp.isfinite(X))):
        raise NonFiniteError(f"{what}: X contains NaN or Inf values; clean or impute them first")
    if classify:
        name = dtype_name(y.dtype)
        if y.ndim == 1:
            if name.startswith("float"):
                raise DTypeError(f"{what}: cross-entropy needs integer class labels, got float "
                                 f"labels (dtype {name}); convert with y.astype(int) or use "
                                 f"a regression loss such as mse")
            lo, hi = int(xp.min(y)), int(xp.max(y))
            if lo < 0 or hi >= model.n_out:
                raise ShapeError(f"{what}: labels must be in [0, {model.n_out - 1}] for a model "
                                 f"with {model.n_out} outputs, found values in [{lo}, {hi}]")
            if name != "int64":
                y = xp.astype(y, xp.int64)
    else:
        if y.ndim == 1:
            y = xp.reshape(y, (n, 1))
        if y.dtype != model.dtype:
            y = xp.astype(y, model.dtype)
        if not bool(xp.all(xp.isfinite(y))):
            raise NonFiniteError(f"{what}: y contains NaN or Inf values")
        if y.shape[-1] != model.n_out:
            raise ShapeError(f"{what}: targets have {y.shape[-1]} columns, but the model has "
                             f"{model.n_out} outputs")
    return X, y


def _batch(xp, X, y, idx, boot):
    if boot is None:
        return xp.take(X, idx, axis=0), xp.take(y, idx, axis=0)
    rows = xp.take(boot, idx, axis=1)  # (E, B): each member's own resample
    E, B = rows.shape
    flat = xp.reshape(rows, (-1,))
    xb = xp.reshape(xp.take(X, flat, axis=0), (E, B, X.shape[1]))
    yb = xp.reshape(xp.take(y, flat, axis=0), (E, B, *y.shape[1:]))
    return xb, yb


def _restore_stopped_members(model, mask, before):
    """Members stopped by early stopping keep their BatchNorm statistics, like their weights.

    state = m·new + (1 − m)·old per member: exact for a 0/1 mask, and no xp.where.
    """
    for key, old in before.items():
        m = model.backend.asarray(mask.reshape((-1,) + (1,) * (old.ndim - 1)), dtype=old.dtype)
        model.state[key] = m * model.state[key] + (1.0 - m) * old


def _correct(xp, out, yb):
    pred = xp.argmax(out, axis=-1)
    if yb.ndim == out.ndim:  # one-hot or per-member labels given as probabilities
        yb = xp.argmax(yb, axis=-1)
    hits = xp.astype(pred == yb, xp.float32 if out.dtype == xp.float32 else xp.float64)
    axes = tuple(range(1, hits.ndim)) if (out.ndim == 3) else None
    return xp.sum(hits, axis=axes)


def _host(total, count):
    """A device scalar (or per-member vector) divided by count, as Python float(s)."""
    arr = to_numpy(total) if not isinstance(total, float) else np.asarray(total)
    arr = np.asarray(arr, dtype=np.float64) / count
    return float(arr) if arr.ndim == 0 else arr.tolist()


def _check_finite(xp, values, epoch, step, check_every):
    host = np.asarray([to_numpy(v) for v in values], dtype=np.float64)
    if np.isfinite(host).all():
        return
    bad = int(np.argmax(~np.isfinite(host.reshape(len(values), -1)).any(axis=1)))
    at = step - (len(values) - 1) + bad
    raise NonFiniteError(f"loss became NaN/Inf at epoch {epoch + 1}, step {at + 1}; "
                         f"try a lower learning rate (--lr) or gradient clipping")


def _check_positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or (
            value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                          f"integer, got {value!r}")


class _InterruptFlag:
    """Turn the first Ctrl-C into a flag the loop checks after each step."""

    def __init__(self):
        self.raised = False

    def __enter__(self):
        self._old = None
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.raised:  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class Progress:
    """A progress line per epoch: redrawn in place on a terminal, one line per epoch otherwise."""

    def __init__(self, epochs, steps, batch_size, enabled=True, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.epochs, self.steps = epochs, steps
        self.t_epoch = time.perf_counter()
        self.last_draw = 0.0

    def step(self, epoch, step, seen, loss_sum, correct):
        if not self.tty:
            return
        now = time.perf_counter()
        if step == 1:
            self.t_epoch = now
        if now - self.last_draw < 0.1 and step != self.steps:
            return
        self.last_draw = now
        elapsed = max(now - self.t_epoch, 1e-9)
        frac = step / self.steps
        eta = elapsed / frac - elapsed
        bar = "█" * int(24 * frac) + "·" * (24 - int(24 * frac))
        text = f"epoch {epoch + 1}/{self.epochs} {bar} {step}/{self.steps} " \
               f"loss {_fmt(_host(loss_sum, seen))}"
        if correct is not None:
            text += f" acc {_fmt(_host(correct, seen))}"
        text += f" {seen / elapsed:,.0f} samples/s ETA {eta:4.1f}s"
        self.stream.write("\r" + text[:150].ljust(150))
        self.stream.flush()

    def epoch_end(self, epoch, logs):
        if not self.enabled:
            return
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                parts.append(f"{key} {_fmt(logs[key])}")
        parts.append(f"{logs['seconds']:.2f}s")
        parts.append(f"{logs['samples_per_second']:,.0f} samples/s")
        self.stream.write(("\r" if self.tty else "") + "  ".join(parts).ljust(150 if self.tty
                                                                             else 0) + "\n")
        self.stream.flush()


def _fmt(value):
    if isinstance(value, list):
        return f"{np.mean(value):.4f} (mean of {len(value)})"
    return f"{value:.4f}"
