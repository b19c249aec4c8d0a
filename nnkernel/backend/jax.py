"""JAX: jax.numpy arrays on a CPU or a GPU, immutable, dispatched asynchronously.

- Devices are ``jax.devices("cpu")[0]`` or ``jax.devices("gpu")[i]`` (a CUDA
  jaxlib is needed for the second); ``activate`` is ``jax.default_device``.
- Arrays cannot be written in place, so the parameter store rebinds (``mutable
  = False``) and every kernel is the generic reference.
- JAX returns from each operation before it has run, on the CPU too: the
  training loop reads numbers rarely (``asynchronous``), and ``synchronize``
  waits for every live array of the device.
- Random numbers are counter-based (threefry): a stream is named by its seed
  words (seed, epoch, step), folded into a key on the device, and each draw
  splits the key. The same derivation runs inside a compiled step, so compiled
  and eager training draw the same Dropout masks.
- float64 needs ``jax_enable_x64``: without it JAX silently computes float64
  requests in float32, so a float64 model is refused with the fix, never
  quietly downgraded (nnkernel does not flip a process-wide JAX setting for
  its users; ``nnkernel train --dtype float64 --backend jax`` does, since that
  process is nnkernel's own).
- Tracers (the arrays a ``jax.jit`` trace passes around) pass every device
  check: they have no device until compiled, and `Backend.compile` is jit.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..errors import DeviceError, DTypeError
from .arrays import seed_words
from .base import Backend
from .devices import parse_device
from .random import Random

X64_HINT = ('call jax.config.update("jax_enable_x64", True) (or set JAX_ENABLE_X64=1) before '
            'creating any JAX array, or use dtype="float32"')


class JaxBackend(Backend):
    name = "jax"
    module_name = "jax"
    install_hint = 'pip install "nnkernel[jax]" (a CUDA jaxlib: pip install "jax[cuda12]")'
    namespaces = ("jax.numpy", "jax.experimental.array_api")
    type_modules = ("jax", "jaxlib")  # jaxlib's ArrayImpl, and jax's tracers
    mutable = False
    _tracer = None

    @classmethod
    def load(cls):
        jax = super().load()
        if cls._tracer is None:
            import jax.numpy  # noqa: F401 - the namespace, imported with the library

            cls._tracer = jax.core.Tracer
        return jax

    @classmethod
    def namespace(cls):
        return cls.load().numpy  # jax.numpy is the standard's namespace itself

    @classmethod
    def array_class(cls):
        return cls.load().Array  # covers tracers as well as concrete arrays

    @staticmethod
    def host(x) -> np.ndarray:
        return np.asarray(x)

    @classmethod
    def array_is_asynchronous(cls, x) -> bool:
        # a tracer has no value to read; an accelerator's array makes the host wait; a
        # concrete CPU array is read as cheaply as NumPy's (so its labels and ids are checked)
        if isinstance(x, cls._tracer):
            return True
        return any(d.platform != "cpu" for d in x.devices())

    @classmethod
    def x64_enabled(cls) -> bool:
        return bool(cls.load().config.jax_enable_x64)

    # -- devices -----------------------------------------------------------------------------
    def _resolve_device(self, device):
        jax = self.module
        if isinstance(device, jax.Device):
            return device
        kind, index = parse_device(device)
        if kind == "cpu":
            return jax.devices("cpu")[0]
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        if index >= len(gpus):
            raise DeviceError(f"JAX sees no GPU {index} ({len(gpus)} GPU(s); this jaxlib runs "
                              f"on {', '.join(sorted({d.platform for d in jax.devices()}))}); "
                              f"install a CUDA jaxlib (pip install \"jax[cuda12]\") or use "
                              f"--device cpu")
        return gpus[index]

    @property
    def device_name(self) -> str:
        return "cpu" if self.device.platform == "cpu" else f"gpu:{self.device.id}"

    @property
    def asynchronous(self) -> bool:
        return True

    def activate(self):
        precision = self._precision()
        if precision is None:
            return self.module.default_device(self.device)
        stack = contextlib.ExitStack()
        stack.enter_context(self.module.default_device(self.device))
        stack.enter_context(self.module.default_matmul_precision(precision))
        return stack

    def _precision(self):
        """On a GPU, float32 products in full float32 unless TF32 was asked for (JAX's default
        there is TF32, which would make JAX differ from every other backend)."""
        if self.device.platform == "cpu":
            return None
        return "tensorfloat32" if getattr(self, "_tf32", False) else "highest"

    def synchronize(self) -> None:
        jax = self.module
        jax.block_until_ready([a for a in jax.live_arrays(self.device.platform)
                               if self.device in a.devices()])

    def same_device(self, x) -> bool:
        if isinstance(x, self._tracer):
            return True
        return getattr(x, "device", None) == self.device

    def exchange(self, obj):
        # a NumPy array's memory stays the caller's to write: JAX, which assumes immutable
        # buffers, takes a copy of it (asarray) rather than aliasing it
        return None if isinstance(obj, np.ndarray) else super().exchange(obj)

    def check(self, x, what: str = "input") -> None:
        if not isinstance(x, self._tracer):
            super().check(x, what)

    def memory_info(self):
        stats = self.device.memory_stats() if self.device.platform != "cpu" else None
        if not stats or "bytes_limit" not in stats:
            return None
        total, used = stats["bytes_limit"], stats.get("bytes_in_use", 0)
        return f"{(total - used) / 2**30:.1f} of {total / 2**30:.1f} GiB free"

    def set_tf32(self, enabled=True) -> bool:
        if self.device.platform == "cpu":
            return False
        self._tf32 = bool(enabled)
        return self._tf32

    def tf32_enabled(self) -> bool:
        return bool(getattr(self, "_tf32", False))

    @classmethod
    def is_out_of_memory(cls, error) -> bool:
        return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error)

    # -- dtypes --------------------------------------------------------------------------------
    def dtype(self, name):
        dt = super().dtype(name)
        if dt == self.xp.float64 and not self.x64_enabled():
            raise DTypeError(f"a float64 model on JAX needs 64-bit mode, which is off: JAX "
                             f"would compute it in float32; {X64_HINT}")
        return dt

    def enable_dtype(self, name: str) -> None:
        if name == "float64" and not self.x64_enabled():
            self.module.config.update("jax_enable_x64", True)

    @property
    def label_dtype(self):
        """int64 labels where JAX has them (x64 mode), else int32, JAX's widest."""
        return self.xp.int64 if self.x64_enabled() else self.xp.int32

    # -- compiling -----------------------------------------------------------------------------
    def compile(self, fn, donate=()):
        """``jax.jit(fn)``: traced once per input shape, then run as one XLA program."""
        return self.module.jit(fn, donate_argnums=tuple(donate))

    def random(self, seed) -> Random:
        return JaxRandom(self, seed)


class JaxRandom(Random):
    """A threefry key on the device, derived from the seed words and split for each draw."""

    _derive = None  # the jitted words -> key function, shared by every stream

    def reseed(self, seed) -> None:
        words = seed if hasattr(seed, "shape") else self.traceable_seed(seed)
        self.key = self._derive_key()(words)

    @staticmethod
    def traceable_seed(seed) -> np.ndarray:
        """The seed words as 32-bit halves: an array a compiled step takes as an input."""
        halves = []
        for w in seed_words(seed):
            halves += [w & 0xFFFF_FFFF, w >> 32]
        return np.asarray(halves, dtype=np.uint32)

    @classmethod
    def _derive_key(cls):
        if cls._derive is None:
            import jax

            def derive(words):
                key = jax.random.key(0)
                for i in range(words.shape[0]):  # the words' count is static
                    key = jax.random.fold_in(key, words[i])
                return key

            cls._derive = jax.jit(derive)
        return cls._derive

    def _next(self):
        import jax

        self.key, sub = jax.random.split(self.key)
        return sub

    def uniform(self, shape, dtype):
        import jax

        return jax.random.uniform(self._next(), tuple(shape), dtype=dtype)

    def permutation(self, n):
        import jax

        with jax.default_device(self.backend.device):
            return jax.random.permutation(self._next(), n)

