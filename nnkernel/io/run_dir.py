"""A training run on disk: one directory the command line writes and reads back.

    model.npz     parameters, layer state (BatchNorm statistics), optimizer state,
                  the position (epoch, step, optimizer.t) and, with early stopping, its
                  state (best value, epochs waited, best weights), read without pickle
    config.json   architecture (model.config()), hyperparameters, optimizer config,
                  epoch, step, seed, dataset and the nnkernel version
    metrics.json  History.to_dict(): per-epoch loss, accuracy, validation metrics
    curves.png    loss and accuracy against epoch (when matplotlib is installed)

Every file is replaced atomically (nnkernel.io.checkpoint). The position that a
resume continues from is read from model.npz, the one file that also holds the
weights, so a crash between two file writes can never pair weights with the
wrong epoch. model.npz is written last: a save cut short (disk full, kill -9)
leaves metrics.json at most ahead of it, and `load` drops the epochs past the
position, so a resumed run's metrics list each epoch once. Since fit draws its
shuffles from (seed, epoch) and its Dropout masks from (seed, epoch, step), the
position and the seed fix the random state.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import CheckpointError, ConfigError, NnkernelError
from ..nn.sequential import Sequential
from ..run_settings import RunConfig
from ..train import History
from . import checkpoint
from .run_config import validate_run_config
from .validate import assert_finite, expected_run_arrays, non_finite_key, validate_optimizer_state

MODEL, CONFIG, METRICS, CURVES = "model.npz", "config.json", "metrics.json", "curves.png"
RUN_FILES = (MODEL, CONFIG, METRICS, CURVES)
# More members than this are drawn as one band: 100000 lines and their legend took minutes.
MAX_MEMBER_LINES = 10
MAX_PROBLEMS_SHOWN = 5  # of config.json, in the one-line error


def save(directory, model, optimizer, settings: dict | RunConfig, history: History, epoch: int,
         step: int, early_stopping: dict | None = None) -> None:
    """Write model.npz, config.json and metrics.json for the position (epoch, step).

    (epoch, step) is where training continues: epoch index and step within it,
    both from 0; a finished epoch e is saved as (e + 1, 0). Weights, layer state
    or optimizer state holding a NaN or an Inf are never saved: NonFiniteError
    names the key and the position, and the files already there (the last good
    checkpoint) are left as they were. ``early_stopping`` is
    `nnkernel.cli.run_policy.ResumableEarlyStopping.state_arrays()`, saved in the same file
    as the position.
    """
    directory = Path(directory)
    if isinstance(settings, RunConfig):
        settings = settings.to_json()
    arrays = {f"model/{k}": v for k, v in model.arrays().items()}
    arrays.update({f"optimizer/{k}": v for k, v in optimizer.state_arrays().items()})
    arrays.update({f"early_stopping/{k}": v for k, v in (early_stopping or {}).items()})
    assert_finite(arrays, f"refusing to save {directory / MODEL} at {_position(epoch, step)}")
    arrays["progress/epoch"] = np.asarray(epoch, dtype=np.int64)
    arrays["progress/step"] = np.asarray(step, dtype=np.int64)
    arrays["progress/t"] = np.asarray(optimizer.t, dtype=np.int64)
    config = {**settings, "model": model.config(), "optimizer": optimizer.config(),
              "epoch": epoch, "step": step, "nnkernel_version": __version__}
    checkpoint.atomic_write_json(directory / METRICS, history.to_dict())
    checkpoint.atomic_write_json(directory / CONFIG, config)
    checkpoint.save_arrays(directory / MODEL, arrays)  # last: the commit point of the save


def _position(epoch: int, step: int) -> str:
    """(epoch, step) as a person counts: "epoch 3, step 7", or "the end of epoch 2"."""
    if step:
        return f"epoch {epoch + 1}, step {step}"
    return f"the end of epoch {epoch}" if epoch else "the start of training"


@dataclass
class SavedRun:
    """What `load` reads from a run directory."""

    directory: Path
    config: dict
    model_arrays: dict
    optimizer_arrays: dict
    epoch: int
    step: int
    optimizer_t: int
    history: History
    early_stopping: dict = field(default_factory=dict)  # see cli.run_policy.ResumableEarlyStopping

    def build_model(self, backend="numpy", device=None) -> Sequential:
        """The saved model, rebuilt from config.json and filled from model.npz."""
        try:
            model = Sequential.from_config(self.config["model"], backend=backend, device=device)
        except NnkernelError as e:
            if not isinstance(e, ConfigError):
                raise  # e.g. DeviceError: not the checkpoint's fault
            raise CheckpointError(f"{self.directory / CONFIG} describes an invalid model: "
                                  f"{e}") from e
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{self.directory / CONFIG} does not describe a model "
                                  f"({type(e).__name__}: {e})") from e
        expected = set(model.params) | set(model.state)
        found = set(self.model_arrays)
        if expected != found:
            raise CheckpointError(
                f"{self.directory / MODEL} does not match the architecture in "
                f"{self.directory / CONFIG}: missing {sorted(expected - found) or 'nothing'}, "
                f"unexpected {sorted(found - expected) or 'nothing'}")
        for key, value in self.model_arrays.items():
            if value.dtype.kind != "f":
                raise CheckpointError(f"{self.directory / MODEL}: array {key!r} has dtype "
                                      f"{value.dtype}, expected floating point")
        bad = non_finite_key(self.model_arrays)
        if bad is not None:
            raise CheckpointError(f"the weights in {self.directory / MODEL} are not finite "
                                  f"(key {bad}); this run diverged, so there is nothing to "
                                  "evaluate or resume")
        try:
            model.load_arrays(self.model_arrays)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{self.directory / MODEL} does not match the architecture "
                                  f"in {self.directory / CONFIG}: {e}") from e
        return model

    def restore_optimizer(self, optimizer, model) -> None:
        """Put the saved optimizer state and step count into ``optimizer``.

        The state is checked first (`validate.validate_optimizer_state`): every
        parameter has exactly the arrays ``optimizer`` keeps, of the parameter's
        shape, finite, and steps equal to the saved position; otherwise a
        CheckpointError names the key, and ``optimizer`` is left untouched.
        """
        where = self.directory / MODEL
        shapes = {k: tuple(v.shape) for k, v in model.params.items()}
        validate_optimizer_state(self.optimizer_arrays, shapes, type(optimizer).__name__,
                                 optimizer.config(), t=self.optimizer_t,
                                 source=f"{where}: optimizer state", prefix="optimizer/")
        bad = non_finite_key(self.optimizer_arrays)
        if bad is not None:
            raise CheckpointError(f"{where}: optimizer state optimizer/{bad} is not finite; "
                                  "this run diverged")
        try:
            optimizer.load_state_arrays(self.optimizer_arrays, model.params)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{where}: optimizer state does not fit the model: {e}") from e
        optimizer.t = self.optimizer_t


def load(directory, max_bytes: int | None = None) -> SavedRun:
    """Read a run directory written by `save`; any damage is a one-line CheckpointError.

    config.json is validated (`run_config.validate_run_config`) before model.npz is
    opened, and model.npz is read against the layout config.json implies
    (`validate.expected_run_arrays`), so a hostile model.npz is refused before
    it is inflated. ``max_bytes`` bounds model.npz (see `checkpoint.load_arrays`).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"run directory {directory} does not exist")
    if not os.path.lexists(directory / CONFIG):
        raise CheckpointError(f"{directory} holds no training run: {CONFIG} is missing")
    config = checkpoint.read_json(directory / CONFIG)
    problems = validate_run_config(config, max_bytes=max_bytes)
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        raise CheckpointError(f"{directory / CONFIG} is not a valid run configuration: {shown}"
                              + (f" (and {more} more)" if more > 0 else ""))
    try:
        arrays = checkpoint.load_arrays(directory / MODEL, max_bytes=max_bytes,
                                        expected=expected_run_arrays(config))
    except checkpoint.LayoutMismatch as e:
        raise CheckpointError(f"{directory / MODEL} does not match the architecture and "
                              f"optimizer in {directory / CONFIG}: {e.detail}") from e
    model_arrays, optimizer_arrays, progress, early = {}, {}, {}, {}
    for key, value in arrays.items():
        kind, _, name = key.partition("/")
        target = {"model": model_arrays, "optimizer": optimizer_arrays,
                  "progress": progress, "early_stopping": early}.get(kind)
        if target is None or not name:
            raise CheckpointError(f"{directory / MODEL}: unexpected array {key!r}; this is not "
                                  "an nnkernel run checkpoint")
        target[name] = value
    position = []
    for name in ("epoch", "step", "t"):
        value = progress.get(name)
        if value is None or value.shape != () or value.dtype.kind not in "iu" or value < 0:
            raise CheckpointError(f"{directory / MODEL}: missing or invalid progress/{name}")
        position.append(int(value))
    history = History()
    if os.path.lexists(directory / METRICS):
        history = history_from_dict(checkpoint.read_json(directory / METRICS), directory)
        history = _up_to(history, position[0])
    if early and not {"best", "wait"} <= set(early):
        raise CheckpointError(f"{directory / MODEL}: the early-stopping state is incomplete "
                              f"(early_stopping/best and early_stopping/wait are needed)")
    return SavedRun(directory, config, model_arrays, optimizer_arrays, *position, history,
                    early)


def _up_to(history: History, epoch: int) -> History:
    """The history of the epochs before ``epoch`` (a save cut short before model.npz
    leaves metrics.json ahead of the position)."""
    keep = [i for i, e in enumerate(history.epochs) if isinstance(e, int) and e < epoch]
    if len(keep) == len(history.epochs):
        return history
    return History(history={k: [v[i] for i in keep] for k, v in history.history.items()},
                   epochs=[history.epochs[i] for i in keep], partial=history.partial)


def history_from_dict(data: dict, directory=None) -> History:
    """The inverse of History.to_dict()."""
    data = dict(data)
    epochs = data.pop("epochs", [])
    partial = data.pop("partial_epoch", None)
    if not isinstance(epochs, list) or any(not isinstance(v, list) or len(v) != len(epochs)
                                           for v in data.values()):
        raise CheckpointError(f"{Path(directory or '.') / METRICS} is not a metrics history")
    if partial is not None and not (isinstance(partial, dict) and {
            "epoch", "step", "loss_sum", "correct", "seen"} <= set(partial)):
        raise CheckpointError(f"{Path(directory or '.') / METRICS}: partial_epoch is malformed")
    return History(history=data, epochs=epochs, partial=partial)


def existing_run_files(directory) -> list[str]:
    """The run files already in ``directory`` (a new run must not overwrite them)."""
    directory = Path(directory)
    return [name for name in RUN_FILES if (directory / name).exists()]


def save_curves(directory, history: History, title: str | None = None,
                test: dict | None = None, members: list[str] | None = None) -> str | None:
    """Write curves.png (integer epoch ticks, the run's name, the test point if given).

    Returns None, or why the plot was skipped. ``test`` maps a panel ("loss",
    "accuracy") to the test value measured after the last epoch; ``members`` names an
    ensemble's members in the legend (e.g. "lr 0.001").
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install matplotlib"
    if not history.epochs:
        return "no epoch finished"
    fig = curves_figure(history, title, test, members=members)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    checkpoint.atomic_write_bytes(Path(directory) / CURVES, buf.getvalue())
    return None


def curves_figure(history: History, title: str | None = None, test: dict | None = None,
                  members: list[str] | None = None):
    """The matplotlib Figure of curves.png: one panel per metric ("loss", "accuracy").

    An ensemble's member has one colour, its train curve solid and its validation curve
    dashed, named in the legend with ``members[i]`` (its learning rate); more than
    MAX_MEMBER_LINES members are drawn as a band. Apart from save_curves so that a test
    can read its Axes (ticks, title, points).
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [e + 1 for e in history.epochs]
    panels = [name for name in ("loss", "accuracy") if name in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            if key not in history:
                continue
            values = np.asarray(history[key], dtype=np.float64)
            if values.ndim == 2 and values.shape[1] > MAX_MEMBER_LINES:  # a band, not a legend
                ax.fill_between(epochs, values.min(axis=1), values.max(axis=1), alpha=0.25,
                                label=f"{label}, {values.shape[1]} members (min to max)")
                ax.plot(epochs, values.mean(axis=1), label=f"{label} mean", lw=1, ls=style)
            elif values.ndim == 2:  # an ensemble: one colour per member, train and validation
                for i in range(values.shape[1]):
                    who = f"member {i}" + (f" ({members[i]})" if members and i < len(members)
                                           else "")
                    ax.plot(epochs, values[:, i], label=f"{who} {label}", lw=1, ls=style,
                            color=f"C{i}")
            else:
                ax.plot(epochs, values, marker="o", ms=3, label=label)
        if test and test.get(name) is not None:
            ax.plot([epochs[-1]], [test[name]], marker="*", ms=11, ls="none", color="black",
                    label=f"test {test[name]:.4f}")
        # epochs are whole numbers: without this a 3-epoch run is ticked 1.0, 1.5, 2.0, ...
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()  # a member's two curves side by side
        order = sorted(range(len(labels)), key=lambda j: _member_of(labels[j]))
        ax.legend([handles[j] for j in order], [labels[j] for j in order], fontsize="small")
    if title:
        fig.suptitle(title)
    with warnings.catch_warnings():  # e.g. a glyph of a run's name missing from the font
        warnings.simplefilter("ignore")
        fig.tight_layout()
    return fig


def _member_of(label: str) -> int:
    """The member a legend entry names ("member 3 ... train" -> 3); others keep their place."""
    words = label.split()
    return int(words[1]) if words[:1] == ["member"] and words[1:2] and words[1].isdigit() \
        else 1 << 30
