"""`RunConfig`: the settings of a training run, typed once.

One dataclass field per setting, with its default, its check (nnkernel.fields), its
place in a run's config.json, whether a resume may change it, and the flag that sets
it on the command line. Everything that reads or writes settings works from this
table: the flags of ``nnkernel train`` (nnkernel.cli.args), the run directory
(`to_json` / `from_json`, the config.json layout every nnkernel version wrote), the
validation of config.json (nnkernel.io.run_config), resume, and the scikit-learn
estimators when they take it up.

Settings that change the numbers a run computes are recorded with the run and
restored on resume: BLAS threads (``threads``; another count may sum in another
order), the subnormal flush of Adam's moment (``flush_subnormals``) and the
allocator tuning (``keep_freed_memory``). Runs written before these were recorded
lack them; they resume with the rule a new run would follow.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from . import fields as f
from .errors import ConfigError

__all__ = ["FLAG_GROUPS", "LANGUAGE_MODELS", "MODELS", "RunConfig", "flag_name",
           "settings_with_flags"]

FLAG_GROUPS = ("data", "device", "network", "optimization")
MODELS = ("mlp", "gpt", "lstm")
LANGUAGE_MODELS = ("gpt", "lstm")


def _setting(default, section: str, check, doc: str, *, key=None, required=True, resume=False,
             group=None, kind="text", choices=None, metavar=None, factory=None):
    """A RunConfig field. ``section``/``key``: where config.json keeps it ("" is the top
    level); ``required``: every config.json nnkernel ever wrote has it; ``resume``: a
    resume may change it; ``group``/``kind``: its command-line flag (None: no flag)."""
    meta = {"section": section, "key": key, "check": check, "doc": doc, "required": required,
            "resume": resume, "group": group, "kind": kind, "choices": choices,
            "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


H, D, R = "hyperparameters", "dataset", "runtime"
_POSITIVE = f.number(0, math.inf, lo_open=True, hi_open=True)


@dataclass
class RunConfig:
    """A training run's settings; `problems()` says what is wrong with them, if anything."""

    # data
    dataset: str = _setting(
        "digits", D, f.text(), "digits (default, offline), fashion-mnist, mnist, xor, spirals, "
        "moons, linear, or a .csv/.npz path; a text for --model gpt/lstm: tinyshakespeare or a "
        "UTF-8 file (.txt)", key="name", group="data")
    data_dir: str | None = _setting(
        None, D, f.text(optional=True), "where to look for (or download) IDX files",
        resume=True, group="data")
    target: str | None = _setting(None, D, f.text(optional=True),
                                  "the label column of a CSV (default: label)", group="data")
    task: str | None = _setting(
        None, D, f.registry("task", optional=True, normalize=str),
        "what the target of a .csv/.npz is (default: class labels 0..K-1 when it holds few "
        "distinct whole numbers, else regression; see nnkernel.io.labels)", required=False,
        group="data", choices=("classification", "regression"))
    val_split: float | None = _setting(
        None, H, f.number(0, 1, lo_open=True, hi_open=True, optional=True),
        "hold out this fraction of the training data for validation (default 0.1 with "
        "--early-stopping, else none)", group="data", kind="float")
    # network
    hidden: list = _setting(None, H, f.widths, "hidden widths, e.g. 256,256", group="network",
                            kind="ints", factory=lambda: [256, 256])
    conv: list = _setting(
        None, H, f.widths, "convolution blocks before the hidden layers: 3x3 conv + ReLU + 2x2 "
        "max-pool per entry, e.g. 32,64 (image datasets)", required=False, group="network",
        kind="ints", factory=list)
    activation: str = _setting("relu", H, f.registry("activation"),
                               "relu (default), tanh, gelu, ...", group="network")
    dropout: float = _setting(0.0, H, f.number(0, 1, hi_open=True),
                              "dropout after each hidden layer", group="network", kind="float")
    batchnorm: bool = _setting(False, H, f.boolean,
                               "BatchNorm between each hidden Dense and its activation",
                               group="network", kind="switch")
    ensemble: int | None = _setting(None, H, f.integer(1, optional=True),
                                    "train E members at once", group="network", kind="int")
    # language models (a text dataset; nnkernel.cli.text_settings has their defaults)
    model: str | None = _setting(
        None, H, f.choice(MODELS, optional=True), "mlp (default: an MLP, or a CNN with --conv), "
        "or a character language model: gpt (the default for a text) or lstm", required=False,
        group="network", choices=MODELS)
    block_size: int | None = _setting(None, H, f.integer(1, optional=True),
                                      "characters per training window (language models)",
                                      required=False, group="network", kind="int")
    layers: int | None = _setting(None, H, f.integer(1, optional=True),
                                  "transformer blocks (gpt) or stacked LSTMs (lstm)",
                                  required=False, group="network", kind="int")
    heads: int | None = _setting(None, H, f.integer(1, optional=True), "attention heads (gpt)",
                                 required=False, group="network", kind="int")
    dim: int | None = _setting(None, H, f.integer(1, optional=True),
                               "model width (gpt) or character embedding width (lstm)",
                               required=False, group="network", kind="int")
    # optimization
    loss: str | None = _setting(
        None, H, f.registry("loss", optional=True), "cross_entropy (classification) or mse "
        "(regression) by default; also mae, huber, binary_cross_entropy", group="optimization")
    optimizer: str = _setting("adam", H, f.registry("optimizer"),
                              "adam (default), adamw, sgd, rmsprop", group="optimization")
    lr: float | list = _setting(
        1e-3, H, f.learning_rate, "learning rate, or a comma list: one ensemble member per "
        "value", group="optimization", kind="floats")
    schedule: str = _setting(
        "constant", H, f.registry("schedule", normalize=str), "constant (default), step, "
        "exponential, cosine, warmup, warmup_cosine", group="optimization")
    weight_decay: float | None = _setting(
        None, H, f.number(0, math.inf, hi_open=True, optional=True),
        "L2 penalty (default: the optimizer's own, AdamW 0.01, else 0)", group="optimization",
        kind="float")
    clip_norm: float | None = _setting(
        None, H, f.number(0, math.inf, lo_open=True, hi_open=True, optional=True),
        "clip gradients to this global norm", group="optimization", kind="float")
    epochs: int = _setting(20, H, f.integer(0), "epochs to train", resume=True,
                           group="optimization", kind="int")
    batch_size: int = _setting(32, H, f.integer(1), "rows per step", group="optimization",
                               kind="int")
    seed: int = _setting(0, "", f.integer(0), "seed of the initial weights, shuffles and "
                         "dropout", group="optimization", kind="int")
    steps: int | None = _setting(None, H, f.integer(1, optional=True),
                                 "optimizer steps (language models train for steps, not epochs)",
                                 required=False, group="optimization", kind="int")
    eval_interval: int | None = _setting(
        None, H, f.integer(1, optional=True), "steps between validation scores (language "
        "models)", required=False, group="optimization", kind="int", metavar="N")
    eval_windows: int | None = _setting(
        None, H, f.integer(1, optional=True), "held-out windows scored at each evaluation "
        "(language models; nnkernel evaluate scores them all)", required=False,
        group="optimization", kind="int", metavar="N")
    accumulate: int | None = _setting(
        None, H, f.integer(1, optional=True), "gradient accumulation: micro-batches of "
        "--batch-size summed into each step", required=False, group="optimization", kind="int",
        metavar="K")
    warmup: int | None = _setting(None, H, f.integer(0, optional=True),
                                  "steps of linear learning-rate warm-up (language models)",
                                  required=False, group="optimization", kind="int", metavar="N")
    betas: list | None = _setting(None, H, f.betas, "Adam's beta1,beta2 (default 0.9,0.999; "
                                  "0.9,0.99 for language models)", required=False,
                                  group="optimization", kind="floats")
    early_stopping: int | None = _setting(
        None, H, f.integer(1, optional=True), "stop when val_loss has not improved for N epochs",
        group="optimization", kind="int", metavar="N")
    # device and numerics
    device: str = _setting("cpu", R, f.text(), "cpu (default), gpu (= GPU 0 with CuPy), gpu:1, "
                           "...", resume=True, group="device")
    backend: str | None = _setting(
        None, R, f.text(optional=True), "numpy (default on cpu), cupy (default on gpu), torch, "
        "array_api_strict, jax, dask", resume=True, group="device")
    dtype: str = _setting("float32", R, f.choice(("float32", "float64"), normalize=str),
                          "float32 (default) or float64", group="device",
                          choices=("float32", "float64"))
    tf32: bool = _setting(False, R, f.boolean, "allow TF32 matrix products (GPU only)",
                          resume=True, group="device", kind="switch")
    threads: int | None = _setting(
        None, R, f.integer(1, optional=True),
        "BLAS threads on the CPU (default: chosen by the work: 1 for a small network, every "
        "core for large matrix products; a resume keeps the run's)", required=False,
        resume=True, group="device", kind="int")
    threads_reason: str | None = _setting(None, R, f.text(optional=True),
                                          "why the run has its thread count", required=False)
    flush_subnormals: bool | None = _setting(
        None, R, f.optional_boolean, "set Adam's subnormal moments to 0 every 16 steps (None: "
        "on for adam and adamw, the command line's speed option)", required=False)
    keep_freed_memory: bool | None = _setting(
        None, R, f.optional_boolean, "raise glibc's mmap and trim thresholds "
        "(nnkernel.keep_freed_memory); None: unless NNKERNEL_TUNE_MALLOC=0", required=False)
    # what the data turned out to be (written once the data are loaded)
    n_features: int | None = _setting(None, D, f.integer(1, optional=True),
                                      "features per sample", required=False)
    n_classes: int | None = _setting(None, D, f.integer(1, optional=True),
                                     "classes of a classification run", required=False)
    n_outputs: int | None = _setting(None, D, f.integer(1, optional=True), "model outputs",
                                     required=False)
    tokenizer: dict | None = _setting(
        None, D, lambda v: None if v is None else f.json_object(v), "a language model's "
        "vocabulary (nnkernel.io.tokenizer.CharTokenizer.to_json)", required=False)
    fingerprint: dict | None = _setting(
        None, D, lambda v: None if v is None else f.json_object(v),
        "size, dtypes and a hash of sampled rows of the training data", required=False)
    preprocessing: dict = _setting(None, "", f.json_object, "what the dataset loader did to "
                                   "the raw features, e.g. {\"divide_by\": 16.0}",
                                   required=False, factory=dict)

    # ------------------------------------------------------------------ checks

    def problems(self) -> list[str]:
        """Every problem of these settings, one line each ([] when sound)."""
        out = []
        for fd in dataclasses.fields(self):
            why = fd.metadata["check"](getattr(self, fd.name))
            if why:
                out.append(f"{fd.name} must be {why}, got {f.show(getattr(self, fd.name))}")
        if isinstance(self.lr, list) and len(self.lr) != (self.ensemble or 1):
            out.append(f"lr lists {len(self.lr)} values for "
                       + (f"an ensemble of {self.ensemble}" if self.ensemble else
                          "one model (no ensemble)"))
        return out

    def check(self) -> RunConfig:
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    @property
    def language_model(self) -> bool:
        """Whether the run trains a language model on a text (--model gpt or lstm)."""
        return self.model in LANGUAGE_MODELS

    @property
    def member_lrs(self) -> list[float]:
        """One learning rate per ensemble member."""
        return list(self.lr) if isinstance(self.lr, list) else [self.lr] * (self.ensemble or 1)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ config.json

    def to_json(self) -> dict:
        """The settings as config.json holds them: sections "dataset", "hyperparameters",
        "runtime", and "seed" and "preprocessing" at the top. A field that is not required
        is left out while it is None (older readers never saw it)."""
        out: dict = {D: {}, H: {}, R: {}}
        for fd in dataclasses.fields(self):
            value = getattr(self, fd.name)
            if value is None and not fd.metadata["required"]:
                continue
            section = out.setdefault(fd.metadata["section"], {}) if fd.metadata["section"] \
                else out
            section[fd.metadata["key"] or fd.name] = _copy(value)
        return out

    @classmethod
    def json_problems(cls, config: dict) -> list[str]:
        """Every problem of the settings sections of a config.json ("hyperparameters.lr must
        be ..."); a section that is present must hold all its required fields."""
        if not isinstance(config, dict):
            return [f"the configuration must be a JSON object, got {f.show(config)}"]
        problems = []
        for name in (D, H, R):
            if name in config and not isinstance(config[name], dict):
                problems.append(f"{name} must be a JSON object, got {f.show(config[name])}")
        for fd in dataclasses.fields(cls):
            section, key = fd.metadata["section"], fd.metadata["key"] or fd.name
            holder = config.get(section, {}) if section else config
            if section and section not in config or not isinstance(holder, dict):
                continue
            label = f"{section}.{key}" if section else key
            if key not in holder:
                if fd.metadata["required"] and section:
                    problems.append(f"{label} is missing")
                continue
            why = fd.metadata["check"](holder[key])
            if why:
                problems.append(f"{label} must be {why}, got {f.show(holder[key])}")
        hyper = config.get(H)
        if isinstance(hyper, dict) and isinstance(hyper.get("lr"), list):
            ensemble = hyper.get("ensemble")
            if (ensemble is None or f.is_int(ensemble)) and len(hyper["lr"]) != (ensemble or 1):
                members = f"an ensemble of {ensemble}" if ensemble else "one model (no ensemble)"
                problems.append(f"{H}.lr lists {len(hyper['lr'])} values for {members}")
        return problems

    @classmethod
    def from_json(cls, config: dict, where: str = "config.json") -> RunConfig:
        """The settings of a config.json written by any nnkernel version; its problems, if
        any, as one ConfigError. Fields it lacks take their defaults, except that a run
        written before ``flush_subnormals`` was recorded takes its optimizer's setting."""
        problems = cls.json_problems(config)
        missing = [s for s in (D, H, R) if s not in config]
        if missing or problems:
            problems = [f"{s} is missing" for s in missing] + problems
            raise ConfigError(f"{where} does not hold a run's settings: "
                              + "; ".join(problems[:5]))
        values = {}
        for fd in dataclasses.fields(cls):
            section, key = fd.metadata["section"], fd.metadata["key"] or fd.name
            holder = config[section] if section else config
            if key in holder:
                values[fd.name] = _copy(holder[key])
        if "flush_subnormals" not in values:
            saved = (config.get("optimizer") or {}).get("flush_subnormals")
            values["flush_subnormals"] = saved if isinstance(saved, bool) else None
        return cls(**values)


def _copy(value):
    """Lists and dicts copied one level deep, so a RunConfig never shares them."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def settings_with_flags(group: str | None = None) -> list:
    """The RunConfig fields set by a command-line flag (of one group), in table order."""
    return [fd for fd in dataclasses.fields(RunConfig) if fd.metadata["group"] is not None
            and (group is None or fd.metadata["group"] == group)]
