"""The GPU paths of data parallelism, with stand-ins for CuPy and NCCL (no GPU needed).

What is Python logic is checked here: which transport each backend gets, that
NCCL is called once on the device buffer's pointer with the right count, dtype,
operation and stream, that the watchdog gets an event to watch, that a
CUDA-aware MPI gets the device array after the stream is synchronised, and that
ranks pick their GPU by local rank. Real NCCL runs only on a multi-GPU machine.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest

import nnkernel as nk
from nnkernel.distributed import transport


class FakeNccl:
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 7, 8, 0
    available = True

    def __init__(self):
        self.calls = []
        outer = self

        class Communicator:
            def __init__(self, n, uid, rank):
                outer.calls.append(("init", n, uid, rank, FakeCupy.current_device))

            def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802 - NCCL's
                outer.calls.append(("allReduce", send, recv, count, dtype, op, stream))

            def bcast(self, buf, count, dtype, root, stream):
                outer.calls.append(("bcast", buf, count, dtype, root, stream))

        self.NcclCommunicator = Communicator

    def get_unique_id(self):
        return (42,) * 4


class FakeCupy:
    current_device = None

    class cuda:  # noqa: N801 - cupy.cuda
        class Event:
            def __init__(self, block=False, disable_timing=False):
                self.done, self.recorded = False, None

            def record(self, stream):
                self.recorded = stream

        @staticmethod
        def get_current_stream():
            return SimpleNamespace(ptr=0xBEEF)


class FakeDeviceArray:
    def __init__(self, n, dtype="float32"):
        self.size, self.dtype = n, np.dtype(dtype)
        self.data = SimpleNamespace(ptr=0x1000)
        self.flags = SimpleNamespace(c_contiguous=True)


class FakeWorld:
    def __init__(self, rank=1, size=2):
        self.rank, self.size, self.is_root = rank, size, rank == 0
        self.log = []
        self.watchdog = SimpleNamespace(track=lambda what, ev: self.log.append(("track", ev)))

    def bcast_obj(self, obj, root, what):
        self.log.append(("bcast_obj", what))
        return (42,) * 4 if obj is None else obj

    def call(self, what, fn, *args):
        return fn(*args)

    def allreduce_(self, buf, what):
        self.log.append(("allreduce", buf))
        return buf

    def bcast_(self, buf, root, what):
        self.log.append(("bcast", buf, root))
        return buf


class FakeCupyBackend:
    name, mutable, asynchronous, device_name = "cupy", True, True, "gpu:1"
    module = FakeCupy

    def __init__(self):
        self.synced = 0

    @contextlib.contextmanager
    def activate(self):
        FakeCupy.current_device = 1
        yield
        FakeCupy.current_device = None

    def synchronize(self):
        self.synced += 1


def test_nccl_transport_reduces_the_device_buffer_in_place_on_the_current_stream():
    nccl, world, be = FakeNccl(), FakeWorld(rank=1), FakeCupyBackend()
    t = transport.NcclTransport(world, be, nccl=nccl)
    assert nccl.calls[0] == ("init", 2, (42,) * 4, 1, 1)  # on this rank's device
    grad = FakeDeviceArray(1000)
    assert t.allreduce(grad, "the gradient allreduce") is grad
    assert nccl.calls[1] == ("allReduce", 0x1000, 0x1000, 1000, 7, 0, 0xBEEF)  # one call, SUM
    (kind, event), = [e for e in world.log if e[0] == "track"]
    assert event.recorded.ptr == 0xBEEF  # the watchdog watches the stream, the host never waits
    t.bcast(FakeDeviceArray(10, "float64"), 0, "the parameter broadcast")
    assert nccl.calls[2] == ("bcast", 0x1000, 10, 8, 0, 0xBEEF)
    with pytest.raises(nk.ConfigError, match="float16"):
        t.allreduce(FakeDeviceArray(4, "float16"), "x")


def test_cuda_aware_transport_syncs_the_stream_then_hands_mpi_the_device_array():
    world, be = FakeWorld(), FakeCupyBackend()
    t = transport.CudaAwareTransport(world, be)
    grad = FakeDeviceArray(8)
    assert t.allreduce(grad, "g") is grad
    assert be.synced == 1 and world.log == [("allreduce", grad)]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_host_transport_reduces_the_buffer_itself_in_place(backend):
    if backend == "torch":
        pytest.importorskip("torch")

    class Doubling:
        def allreduce_(self, a, what):
            a *= 2.0

        def bcast_(self, a, root, what):
            a += 1.0

    be = nk.Backend(backend)
    buf = be.asarray(np.ones(4, np.float32))
    t = transport._make(Doubling(), be, None)
    assert t.name == "host" and t.allreduce(buf, "g") is buf and t.bcast(buf, 0, "p") is buf
    np.testing.assert_array_equal(nk.backend.to_numpy(buf), np.full(4, 3.0, np.float32))


def test_transport_choice_per_backend(monkeypatch):
    world = FakeWorld()
    monkeypatch.delenv("NNKERNEL_GPU_ALLREDUCE", raising=False)
    assert transport._make(world, nk.Backend("numpy"), None).name == "host"
    assert transport._make(world, nk.Backend("array_api_strict"), None).name == "staged"
    monkeypatch.setattr(transport, "nccl_module", lambda cp: None)
    assert transport._make(world, FakeCupyBackend(), None).name == "staged"  # no NCCL here
    assert transport._make(world, FakeCupyBackend(), "mpi").name == "mpi"
    with pytest.raises(nk.ConfigError, match="no usable NCCL"):
        transport._make(world, FakeCupyBackend(), "nccl")
    with pytest.raises(nk.ConfigError, match="one of"):
        transport._make(world, nk.Backend("numpy"), "carrier-pigeon")


def test_staged_transport_rebinds_an_immutable_gradient():
    be = nk.Backend("array_api_strict")
    world = SimpleNamespace(allreduce_=lambda buf, what: buf.__imul__(2.0))  # "2 ranks"
    g = be.asarray(np.arange(4.0), dtype=be.dtype("float64"))
    out = transport.StagedTransport(world, be).allreduce(g, "g")
    assert out is not g and np.array_equal(be.to_numpy(out), [0.0, 2.0, 4.0, 6.0])


def test_gpu_ranks_take_local_rank_modulo_visible_gpus(monkeypatch):
    from nnkernel.cli import distributed as cli_dist

    monkeypatch.setattr(cli_dist, "gpu_count", lambda name: 2)
    dp = SimpleNamespace(world=SimpleNamespace(local_rank=3))
    args, runtime = SimpleNamespace(device=None, backend=None), {"device": "gpu"}
    cli_dist.place(runtime, args, dp)
    assert runtime["device"] == "gpu:1"
    args = SimpleNamespace(device="cpu", backend=None)
    cli_dist.place(runtime, args, dp)
    assert args.device == "cpu"
