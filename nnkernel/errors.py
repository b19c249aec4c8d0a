"""The exceptions nnkernel raises: each names the problem in one line.

They subclass the built-in exception a caller would already catch (ValueError,
TypeError, ...), so ``except ValueError`` keeps working, and `NnkernelError`
catches all of them for the command line, which prints the message alone.
"""


class NnkernelError(Exception):
    """Base class of every error nnkernel raises on purpose."""


class ShapeError(NnkernelError, ValueError):
    """An array has the wrong shape for the layer, loss or parameter it meets."""


class DTypeError(NnkernelError, TypeError):
    """An array has a dtype that cannot be used here (float labels, int inputs, ...)."""


class BackendMismatchError(NnkernelError, TypeError):
    """An array lives on another backend or device than the model."""


class NonFiniteError(NnkernelError, FloatingPointError):
    """NaN or Inf found in inputs or in the loss."""


class ConfigError(NnkernelError, ValueError):
    """An unknown name (activation, loss, optimizer, dataset, ...) or a bad setting."""


class DatasetError(NnkernelError, ValueError):
    """A dataset is missing, truncated, corrupt or inconsistent."""


class CheckpointError(NnkernelError, ValueError):
    """A checkpoint is missing, corrupt, hostile or of another architecture."""


class DeviceError(NnkernelError, RuntimeError):
    """The requested backend or device is not available on this machine."""


class MissingKeyError(NnkernelError, KeyError):
    """A parameter, gradient or state key the model does not have."""

    def __str__(self):  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class PassError(NnkernelError, RuntimeError):
    """A backward pass without the recorded forward pass it needs."""


class ArchitectureError(NnkernelError, TypeError):
    """An attempt to change what a model's architecture fixes (remove a parameter or state)."""
