"""How a flat buffer of each backend travels through a collective.

    host     NumPy, and torch on the CPU (through ``tensor.numpy()``, the same memory):
             MPI reads and writes the array itself, MPI_IN_PLACE, no copy.
    nccl     CuPy: ``cupy.cuda.nccl`` on the device buffer's pointer, enqueued on the
             current stream, so the optimizer's kernels that follow on that stream see
             the sum and the host never waits. The default where NCCL is available.
    mpi      CuPy or torch on a GPU with a CUDA-aware MPI: the device array itself goes
             to MPI (mpi4py reads ``__cuda_array_interface__``). MPI knows nothing of
             streams, so the stream is synchronised first. Only when asked
             (``gpu_allreduce="mpi"`` or $NNKERNEL_GPU_ALLREDUCE=mpi): an MPI that is not
             CUDA-aware crashes on a device pointer instead of raising.
    staged   anything else (array-api-strict and JAX, whose arrays are immutable; a GPU
             without NCCL or CUDA-aware MPI): a host copy is reduced and a new array made.

Every transport returns the array holding the result: the same object when it
worked in place, a new one when staged (the parameter store then rebinds).
"""

from __future__ import annotations

import os

import numpy as np

from ..backend import to_numpy
from ..errors import ConfigError

METHODS = ("auto", "nccl", "mpi", "host", "staged")


class HostTransport:
    name = "host"

    def __init__(self, world, backend):
        self.world = world

    def allreduce(self, arr, what):
        self.world.allreduce_(to_numpy(arr), what)  # a view of the buffer: reduced in place
        return arr

    def bcast(self, arr, root, what):
        self.world.bcast_(to_numpy(arr), root, what)
        return arr


class StagedTransport:
    name = "staged"

    def __init__(self, world, backend):
        self.world, self.backend = world, backend

    def allreduce(self, arr, what):
        host = np.ascontiguousarray(np.array(to_numpy(arr)))
        self.world.allreduce_(host, what)
        return self.backend.asarray(host, dtype=arr.dtype)

    def bcast(self, arr, root, what):
        host = np.ascontiguousarray(np.array(to_numpy(arr)))
        self.world.bcast_(host, root, what)
        return self.backend.asarray(host, dtype=arr.dtype)


class CudaAwareTransport:
    name = "mpi"

    def __init__(self, world, backend):
        self.world, self.backend = world, backend

    def allreduce(self, arr, what):
        self.backend.synchronize()  # MPI reads the memory now, not in stream order
        self.world.allreduce_(arr, what)
        return arr

    def bcast(self, arr, root, what):
        self.backend.synchronize()
        self.world.bcast_(arr, root, what)
        return arr


class NcclTransport:
    """One NCCL communicator over the world's ranks, one GPU per rank."""

    name = "nccl"

    def __init__(self, world, backend, nccl=None):
        self.world, self.backend = world, backend
        self.cp = backend.module
        self.nccl = nccl if nccl is not None else nccl_module(self.cp)
        uid = self.nccl.get_unique_id() if world.is_root else None
        uid = world.bcast_obj(uid, 0, "the NCCL unique id")
        with backend.activate():  # the communicator belongs to the current device
            self.comm = world.call("the NCCL communicator set-up", self.nccl.NcclCommunicator,
                                   world.size, uid, world.rank)
        self._types = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64}

    def _type(self, arr):
        name = str(arr.dtype)
        if name not in self._types:
            raise ConfigError(f"NCCL allreduce of {name} arrays is not supported here")
        return self._types[name]

    def _check(self, arr):
        if not arr.flags.c_contiguous:  # NCCL sees a pointer and a count, nothing else
            raise ValueError("NCCL needs a contiguous buffer")

    def allreduce(self, arr, what):
        self._check(arr)
        with self.backend.activate():
            stream = self.cp.cuda.get_current_stream()
            self.comm.allReduce(arr.data.ptr, arr.data.ptr, arr.size, self._type(arr),
                                self.nccl.NCCL_SUM, stream.ptr)
            self._track(what, stream)
        return arr

    def bcast(self, arr, root, what):
        self._check(arr)
        with self.backend.activate():
            stream = self.cp.cuda.get_current_stream()
            self.comm.bcast(arr.data.ptr, arr.size, self._type(arr), root, stream.ptr)
            self._track(what, stream)
        return arr

    def _track(self, what, stream):
        """The host does not wait for NCCL: the watchdog watches an event recorded after it."""
        dog = self.world.watchdog
        if dog is not None:
            event = self.cp.cuda.Event(block=False, disable_timing=True)
            event.record(stream)
            dog.track(what, event)


def nccl_module(cp):
    """``cupy.cuda.nccl`` when it is usable, else None."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return None
    return nccl if getattr(nccl, "available", True) else None


_CACHE: dict = {}


def choose(world, backend, method=None):
    """The transport for ``backend``'s arrays: ``method`` or $NNKERNEL_GPU_ALLREDUCE or auto.

    Made once per (world, library, device, method): an NCCL communicator costs a
    collective and GPU memory to set up.
    """
    key = (id(world), backend.name, backend.device_name, method,
           os.environ.get("NNKERNEL_GPU_ALLREDUCE"))
    if key not in _CACHE:
        _CACHE[key] = _make(world, backend, method)
    return _CACHE[key]


def _make(world, backend, method):
    method = (method or os.environ.get("NNKERNEL_GPU_ALLREDUCE") or "auto").lower()
    if method not in METHODS:
        raise ConfigError(f"the allreduce method must be one of {', '.join(METHODS)}, got "
                          f"{method!r}")
    gpu = backend.asynchronous
    if method == "auto":
        if not backend.mutable:
            method = "staged"
        elif not gpu:
            method = "host" if backend.name in ("numpy", "torch") else "staged"
        elif backend.name == "cupy" and nccl_module(backend.module) is not None:
            method = "nccl"
        else:
            method = "staged"
    if method == "host" and (gpu or not backend.mutable):
        raise ConfigError(f"allreduce method 'host' needs host arrays that can be written in "
                          f"place; {backend.name} on {backend.device_name} cannot")
    if method == "nccl":
        if backend.name != "cupy":
            raise ConfigError(f"allreduce method 'nccl' is for CuPy arrays, not {backend.name}")
        if nccl_module(backend.module) is None:
            raise ConfigError("allreduce method 'nccl': this CuPy has no usable NCCL "
                              "(pip install nvidia-nccl-cu12); or use 'mpi' with a CUDA-aware "
                              "MPI, or 'staged'")
        return NcclTransport(world, backend)
    if method == "mpi" and not gpu:
        method = "host" if backend.mutable and backend.name in ("numpy", "torch") else "staged"
    return {"host": HostTransport, "mpi": CudaAwareTransport,
            "staged": StagedTransport}[method](world, backend)
