"""nnkernel: neural networks with hand-written backprop on any Array API backend.

    import nnkernel as nk
    model = nk.Sequential(nk.Dense(784, 256), nk.ReLU(), nk.Dense(256, 10), seed=0)
    y = model.forward(x, train=True)
    loss, dy = nk.losses.cross_entropy(y, labels)
    model.backward(dy)
    nk.optim.Adam(lr=1e-3).step(model.params, model.grads)
"""

import importlib as _importlib

from . import kernels, losses, optim
from .backend import Backend, available_backends
from .backend.malloc import keep_freed_memory
from .errors import (
    ArchitectureError,
    BackendMismatchError,
    CheckpointError,
    ConfigError,
    DatasetError,
    DeviceError,
    DTypeError,
    MissingKeyError,
    NnkernelError,
    NonFiniteError,
    PassError,
    ShapeError,
)
from .nn import activations, init
from .nn.attention import MultiHeadAttention
from .nn.combinators import Residual
from .nn.conv import AvgPool2D, Conv2D, Flatten, MaxPool2D
from .nn.conv_norm import BatchNorm2D, Dropout2D
from .nn.embedding import Embedding, PositionEmbedding, TiedOutput
from .nn.ensemble import ensemble_mean, ensemble_variance, mean_probabilities
from .nn.generate import generate
from .nn.gpt import gpt
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
from .nn.recurrent import GRU, LSTM, RNN, RecurrentState
from .nn.sequential import Sequential
from .train import Callback, EarlyStopping, History, TrainingInterrupted, evaluate, fit, fit_lm
from .train.callbacks import use_model_writer as _use_model_writer

__version__ = "0.1.0"

# File formats, ONNX and MPI load when first used: most programs need none of them.
_LAZY = {"save": ("io.saving", "save"), "load": ("io.saving", "load"),
         "export_onnx": ("io.onnx_export", "export_onnx"), "checkpoint": ("io.checkpoint", None),
         "datasets": ("io.datasets", None), "run_dir": ("io.run_dir", None),
         "load_text": ("io.text", "load_text"), "CharTokenizer": ("io.tokenizer", "CharTokenizer"),
         "distributed": ("distributed", None)}


def _save(model, path, **options):  # nk.save, imported when a callback first writes
    return __getattr__("save")(model, path, **options)


_use_model_writer(_save)  # ModelCheckpoint writes with nk.save: train does not import io


def __getattr__(name):
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = _importlib.import_module(f"{__name__}.{module_name}")
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__", "activations", "ArchitectureError", "available_backends", "AvgPool2D",
    "Backend", "BackendMismatchError", "BatchNorm", "BatchNorm2D", "Callback", "CharTokenizer",
    "checkpoint", "CheckpointError", "ConfigError", "Conv2D", "DatasetError", "datasets",
    "Dense", "DeviceError", "distributed", "Dropout", "Dropout2D", "DTypeError",
    "EarlyStopping", "ELU", "Embedding", "ensemble_mean", "ensemble_variance", "evaluate",
    "export_onnx", "fit", "fit_lm", "Flatten", "GELU", "generate", "gpt", "gradcheck", "GRU",
    "History", "Identity", "init", "keep_freed_memory", "kernels", "Layer", "LayerNorm",
    "LeakyReLU", "load", "load_text", "losses", "LSTM", "MaxPool2D", "mean_probabilities",
    "MissingKeyError", "MultiHeadAttention", "NnkernelError", "NonFiniteError", "optim",
    "PassError", "PositionEmbedding", "RecurrentState", "ReLU", "Residual", "RNN", "run_dir",
    "save", "Sequential", "ShapeError", "Sigmoid", "SiLU", "Softmax", "Swish", "Tanh",
    "TiedOutput", "TrainingInterrupted",
]
