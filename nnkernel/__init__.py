"""nnkernel: neural networks with hand-written backprop on any Array API backend.

    import nnkernel as nk
    model = nk.Sequential(nk.Dense(784, 256), nk.ReLU(), nk.Dense(256, 10), seed=0)
    y = model.forward(x, train=True)
    loss, dy = nk.losses.cross_entropy(y, labels)
    model.backward(dy)
    nk.optim.Adam(lr=1e-3).step(model.params, model.grads)
"""

import sys as _sys

from . import kernels, losses, optim
from .backend import Backend, available_backends
from .backend.malloc import keep_freed_memory
from .errors import (
    BackendMismatchError,
    CheckpointError,
    ConfigError,
    DatasetError,
    DeviceError,
    DTypeError,
    NnkernelError,
    NonFiniteError,
    ShapeError,
)
from .nn import activations, init
from .nn.conv import AvgPool2D, Conv2D, Flatten, MaxPool2D
from .nn.conv_norm import BatchNorm2D, Dropout2D
from .nn.ensemble import ensemble_mean, ensemble_variance, mean_probabilities
from .nn.gradcheck import gradcheck
from .nn.layers import (
    ELU,
    GELU,
    BatchNorm,
    Dense,
    Dropout,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Swish,
    Tanh,
)
from .nn.sequential import Sequential
from .train import Callback, EarlyStopping, History, TrainingInterrupted, evaluate, fit

__version__ = "0.1.0"

# The module paths of nnkernel 0.1's flat layout keep working (``import nnkernel.layers``).
from .io import checkpoint, datasets, run_dir  # noqa: E402
from .io.onnx_export import export_onnx  # noqa: E402
from .io.saving import load, save  # noqa: E402
from .nn import ensemble, layers, sequential  # noqa: E402
from .nn import gradcheck as _gradcheck_module
from .train.callbacks import use_model_writer as _use_model_writer  # noqa: E402

for _old, _module in {"activations": activations, "init": init, "layers": layers,
                      "model": sequential, "ensemble": ensemble, "gradcheck": _gradcheck_module,
                      "checkpoint": checkpoint, "datasets": datasets, "run_dir": run_dir}.items():
    _sys.modules[f"{__name__}.{_old}"] = _module
del _old, _module
_use_model_writer(save)  # ModelCheckpoint writes with nk.save: train does not import io



def __getattr__(name):
    # nk.distributed is imported when first used: most programs never train over MPI
    if name == "distributed":
        import importlib

        return importlib.import_module(f"{__name__}.distributed")  # binds nnkernel.distributed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AvgPool2D", "BackendMismatchError", "Backend", "BatchNorm", "BatchNorm2D", "Callback",
    "CheckpointError", "ConfigError", "Conv2D", "distributed",
    "DTypeError", "DatasetError", "Dense", "DeviceError", "Dropout", "Dropout2D", "ELU",
    "EarlyStopping", "Flatten", "MaxPool2D",
    "GELU", "History", "Identity", "Layer", "LayerNorm", "LeakyReLU", "NnkernelError",
    "NonFiniteError", "ReLU", "Sequential", "ShapeError", "SiLU", "Sigmoid", "Softmax", "Swish",
    "Tanh", "TrainingInterrupted", "activations", "available_backends", "ensemble_mean",
    "ensemble_variance", "evaluate", "fit", "gradcheck", "init", "keep_freed_memory", "kernels",
    "losses",
    "mean_probabilities", "optim", "__version__",
    "export_onnx", "load", "save",
]
