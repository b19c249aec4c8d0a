"""CuPy's Python paths on the CPU, through the CuPy test double (tests/cupy_double.py).

Device names; the device context (a model on gpu:1 runs everything with device 1
current); host reads per training step; the dtype of what is copied to the GPU;
copying and pickling a CuPy model; the command line on --device gpu / gpu:1
(train, resume, evaluate, predict, info, --tf32, out of memory). The CUDA kernels
themselves run only on a GPU (tests/test_cupy_twin.py); here the model uses the
reference kernels, and the twin's Python side is checked up to its first launch.
"""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import array_api_compat
import numpy as np
import pytest
from cupy_double import STATE, fake_cupy  # noqa: F401 - the fixture

import nnkernel as nk
from nnkernel.backend import parse_device, resolve_backend
from nnkernel.cli import main
from nnkernel.errors import ConfigError, DeviceError
from nnkernel.io import checkpoint, datasets
from nnkernel.kernels.reference import Kernels

pytestmark = pytest.mark.usefixtures("fake_cupy")
SMALL = ["--hidden", "16", "--batch-size", "64", "--lr", "1e-2"]


def mlp(device="gpu:1", ensemble=None, dropout=True):
    layers = [nk.Dense(6, 16), nk.BatchNorm(16), nk.ReLU()]
    layers += [nk.Dropout(0.2)] if dropout else []
    layers += [nk.Dense(16, 12, activation="tanh"), nk.Dense(12, 3)]
    return nk.Sequential(*layers, seed=0, backend="cupy", device=device, ensemble=ensemble)


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 6)), rng.integers(0, 3, n)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- the double as nnkernel sees it ----------------------------------------------------------
def test_the_double_stands_in_for_cupy():
    import cupy

    be = nk.Backend("cupy")
    x = be.asarray([1.0, 2.0])
    assert be.xp.__name__ == "array_api_compat.cupy" and array_api_compat.is_cupy_array(x)
    assert type(be.kernels) is Kernels  # the reference: the double cannot run CUDA code
    assert array_api_compat.device(x) == cupy.cuda.Device(0)
    assert repr(cupy.cuda.Device(0)) == str(cupy.cuda.Device(0)) == "<CUDA Device 0>"
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(x)
    with cupy.cuda.Device(1):
        y = be.xp.zeros(3)  # array-api-compat ignores device= here: the current device counts
        with pytest.raises(ValueError, match=r"resides \(0\) is different from the current"):
            x + 1.0
    assert y.device.id == 1 and STATE.current == 0


@pytest.mark.parametrize("spec,index", [("gpu", 0), ("gpu:1", 1), ("cuda:0", 0), ("CUDA:1 ", 1),
                                        (1, 1), ("1", 1), ("device", 1)])
def test_device_spellings(spec, index):
    import cupy

    spec = cupy.cuda.Device(1) if spec == "device" else spec
    be = nk.Backend("cupy", spec)
    assert be.device.id == index and be.device_name == f"gpu:{index}"
    assert parse_device(be.device) == ("gpu", index)
    assert resolve_backend(None, spec).device_name == f"gpu:{index}"


@pytest.mark.parametrize("spec", ["tpu", "gpu:x", -1, True, "gpu:-1", "cuda:1.5", 2.0])
def test_unreadable_devices_are_config_errors(spec):
    with pytest.raises(ConfigError, match="device|GPU index"):
        nk.Backend("cupy", spec)


def test_missing_gpus_are_device_errors():
    with pytest.raises(DeviceError, match=r"GPU 2 does not exist: CuPy sees 2 GPU\(s\) \(0..1\)"):
        resolve_backend(None, "gpu:2")
    STATE.available = False
    with pytest.raises(DeviceError, match="no usable GPU"):
        nk.Backend("cupy")
    with pytest.raises(ConfigError, match="runs on the CPU only"):
        resolve_backend("numpy", "gpu")


# -- the device context ------------------------------------------------------------------------
@pytest.mark.parametrize("ensemble", [None, 3])
def test_a_model_on_gpu1_runs_everything_with_device1_current(ensemble):
    X, y = data()
    model = mlp("gpu:1", ensemble)
    opt = nk.optim.AdamW(lr=1e-2, clip_norm=1.0)
    nk.fit(model, X, y, optimizer=opt, epochs=2, batch_size=16, validation_data=data(32, 1),
           progress=False)
    nk.evaluate(model, *data(40, 2))
    xb = model.backend.asarray(X[:20])
    model.predict(xb, batch_size=8)
    model.predict_proba(model.backend.asarray(X[:20].astype(np.float64)))
    out = model.forward(xb, train=True)
    with model.backend.activate():  # a loss, like any CuPy function, runs on the current GPU
        _, dy = nk.losses.cross_entropy(out, model.backend.asarray(y[:20]),
                                        members=bool(ensemble))
    model.backward(dy)
    opt.step(model.params, model.grads)
    assert STATE.launches[0] == 0 and STATE.launches[1] > 100
    assert STATE.current == 0  # every context was left again
    arrays = [*model.params.values(), *model.grads.values(), *model.state.values(),
              *opt._flat.arrays.values()]
    assert {a.device.id for a in arrays} == {1}


def test_moving_a_model_and_its_optimizer_to_gpu1():
    X, y = data()
    model = mlp("gpu:0", dropout=False)
    opt = nk.optim.Adam(lr=1e-2)
    nk.fit(model, X, y, optimizer=opt, epochs=1, batch_size=32, progress=False)
    before = model.arrays()
    launches = STATE.launches[0]
    model.to(device="gpu:1")
    nk.fit(model, X, y, optimizer=opt, epochs=1, batch_size=32, progress=False)
    assert STATE.launches[0] == launches and STATE.launches[1] > 0
    assert {a.device.id for a in opt._flat.arrays.values()} == {1}
    assert any(not np.array_equal(before[k], v) for k, v in model.arrays().items())


# -- what a training step costs the host ----------------------------------------------------------
@pytest.mark.parametrize("loss,clip", [("cross_entropy", 1.0), ("huber", 1.0),
                                       ("cross_entropy", None)])
def test_a_training_step_never_waits_for_the_gpu(loss, clip):
    """Host reads per epoch do not grow with the number of steps (clipping and Huber use
    minimum/maximum, labels are checked once per dataset, the NaN check is batched)."""
    def reads(n):
        X, y = data(n)
        y = y if loss == "cross_entropy" else X[:, :3] * 0.5
        model = mlp("gpu:1")
        STATE.host_reads = 0
        generators = STATE.generators
        nk.fit(model, X, y, loss=loss, optimizer=nk.optim.SGD(lr=1e-2, clip_norm=clip),
               epochs=2, batch_size=8, progress=False)
        return STATE.host_reads, STATE.generators - generators

    (short, made_short), (long, made_long) = reads(64), reads(256)  # 8 and 32 steps an epoch
    assert short == long <= 14
    assert made_short == made_long <= 3  # the model's cuRAND generator and one per epoch's shuffle


def test_data_is_cast_on_the_host_before_the_copy():
    X, y = data()
    nk.fit(mlp(), X, y, epochs=1, batch_size=32, progress=False)  # float64 host data
    pixels = np.random.default_rng(0).integers(0, 255, (96, 6), dtype=np.uint8)
    nk.fit(mlp(), pixels, y, epochs=1, batch_size=32, progress=False)
    shapes = [(dtype, shape) for dtype, shape in STATE.uploads if shape == (96, 6)]
    assert shapes == [("float32", (96, 6))] * 2


def test_random_source_keeps_one_generator_and_a_fresh_key_per_draw():
    be = nk.Backend("cupy", "gpu:1")
    rng = be.random((7, 0))
    keys = [rng.counter_key(), rng.counter_key()]
    for step in range(5):
        rng.reseed((7, step))
        u = rng.uniform((4, 3), np.float32)
    assert u.dtype == np.float32 and u.device.id == 1 and STATE.generators == 1
    rng.reseed((7, 0))
    assert [rng.counter_key(), rng.counter_key()] == keys and len(set(keys)) == 2
    p = rng.permutation(10)
    assert p.dtype == np.int64 and sorted(p.tolist()) == list(range(10))


# -- copies of a GPU model ---------------------------------------------------------------
def test_deepcopy_member_stack_and_pickle_stay_on_gpu1():
    ens = mlp("gpu:1", ensemble=2)
    nk.fit(ens, *data(), epochs=1, batch_size=32, progress=False)
    want = ens.arrays()
    twin = copy.deepcopy(ens)
    members = [ens.member(i) for i in range(2)]
    stacked = nk.Sequential.stack(members)
    unpickled = pickle.loads(pickle.dumps(ens))
    for m in (twin, *members, stacked, unpickled):
        assert m.backend.device_name == "gpu:1" and m.store.flat.device.id == 1
    for key, value in want.items():
        for m in (twin, stacked, unpickled):
            np.testing.assert_array_equal(m.arrays()[key], value)
        np.testing.assert_array_equal(members[1].arrays()[key], value[1])
    assert STATE.launches[0] == 0
    STATE.available = False  # unpickled where CuPy sees no GPU: NumPy, with a warning
    with pytest.warns(RuntimeWarning, match="onto numpy"):
        cpu = pickle.loads(pickle.dumps(ens))
    assert cpu.backend.name == "numpy"


# -- the twin's Python side, up to its first kernel launch ---------------------------------
def test_twin_affine_backward_writes_into_the_gradient_views():
    from nnkernel.kernels.cupy import CupyKernels

    twin = CupyKernels(nk.Backend("cupy").xp)
    for ens in (None, 3):
        model = nk.Sequential(nk.Dense(5, 4), backend="cupy", ensemble=ens)
        x = model.backend.asarray(np.random.default_rng(0).standard_normal((9, 5)))
        x = model.xp.astype(x, model.dtype)
        dz = model.xp.ones((9, 4) if ens is None else (ens, 9, 4), dtype=model.dtype)
        outs = (model.grads["0.W"], model.grads["0.b"])
        _, dW, db = twin.affine_backward(x, model.params["0.W"], dz, False, outs)
        assert dW is outs[0] and db is outs[1]
        np.testing.assert_allclose(model.grads.flat.get()[..., -4:], 9.0)  # db = Σ rows of 1s


@pytest.mark.parametrize("C,per_block", [(10, False), (1023, False), (1024, True)])
def test_twin_softmax_xent_launch(C, per_block):
    from nnkernel.kernels.cupy import losses as cupy_xent

    xp = nk.Backend("cupy").xp
    z = xp.zeros((3, 20, C), dtype=xp.float32)
    labels = xp.zeros(20, dtype=xp.int32)  # shared by 3 members, cast to int64
    STATE.kernel_calls = []
    with pytest.raises(RuntimeError, match="cannot run CUDA code"):
        cupy_xent.softmax_xent(z, labels, 20, labels=True, mean=True)
    (source, name), (grid, block, args) = STATE.kernel_calls[0]
    assert name == f"nnk_xent_labels_{'block' if per_block else 'warp'}" and name in source
    assert block == (256,) and grid == ((60,) if per_block else (8,))
    assert args[1].dtype == np.int64 and args[1].shape == (20,)
    assert [type(a) for a in args[4:]] == [np.int64] * 3 + [np.float32] * 2
    assert [int(a) for a in args[4:7]] == [60, C, 20] and args[7] == args[8] == np.float32(0.05)


# -- the command line ------------------------------------------------------------------------
def test_train_resume_evaluate_predict_on_gpu1(capsys, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    flags = [*SMALL, "--dropout", "0.2", "--device", "gpu:1", "--json", "--quiet"]
    assert main(["train", *flags, "--epochs", "2", "--out", str(straight)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["backend"], result["device"]) == ("cupy", "gpu:1")
    assert main(["train", *flags, "--epochs", "1", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "2", "--quiet", "--json"]) == 0
    capsys.readouterr()
    a, b = (checkpoint.load_arrays(d / "model.npz") for d in (straight, split))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    config = json.loads((split / "config.json").read_text())
    assert config["runtime"]["device"] == "gpu:1"

    code, out, _ = run(capsys, "evaluate", split, "--json", "--quiet")  # the saved device
    assert code == 0 and json.loads(out)["device"] == "gpu:1"
    np.save(tmp_path / "x.npy", datasets.load("digits").X_test[:5])
    code, out, _ = run(capsys, "predict", split, tmp_path / "x.npy", "--device", "gpu:1")
    assert code == 0 and len(out.split()) == 5
    assert STATE.launches[0] == 0 and STATE.launches[1] > 0


def test_train_on_gpu_means_gpu0(capsys):
    code, out, _ = run(capsys, "train", *SMALL, "--epochs", "1", "--device", "gpu", "--json",
                       "--quiet")
    assert code == 0 and json.loads(out)["device"] == "gpu:0"
    assert STATE.launches[1] == 0


def test_tf32_flag_wins_over_a_preset_environment(capsys, monkeypatch):
    monkeypatch.setenv("CUPY_TF32", "0")  # read by CuPy only while its choice is undecided
    code, _, err = run(capsys, "train", *SMALL, "--epochs", "1", "--device", "gpu", "--tf32")
    assert code == 0 and "TF32 matrix products on" in err
    assert STATE.compute_type == 7  # COMPUTE_TYPE_TF32
    code, out, _ = run(capsys, "info")
    assert "tf32: on" in out


def test_tf32_on_an_older_gpu_is_a_note_not_a_warning(capsys):
    STATE.compute_capability = (7, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, _, err = run(capsys, "train", *SMALL, "--epochs", "1", "--device", "gpu", "--tf32")
    assert code == 0 and "this GPU cannot use TF32" in err
    assert STATE.compute_type == 1  # COMPUTE_TYPE_DEFAULT


def test_info_lists_the_gpus_and_tf32(capsys, monkeypatch):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert "gpu: gpu:0 NVIDIA Test Double, 80.0 GiB (80.0 GiB free); gpu:1 NVIDIA" in out
    assert "tf32: off" in out and "cupy" in out
    monkeypatch.setenv("CUPY_TF32", "1")
    STATE.compute_type = 0  # undecided, as in a fresh process: CuPy reads the variable
    report = json.loads(run(capsys, "info", "--json")[1])
    assert report["tf32"].startswith("on") and report["backends"]["cupy"] == "ok"


def test_gpu_out_of_memory_is_one_line(capsys):
    STATE.max_allocation = 400_000  # the data (368 KB) fits, a 512x256 activation does not
    code, _, err = run(capsys, "train", "--hidden", "256", "--batch-size", "512", "--epochs",
                       "1", "--device", "gpu", "--quiet")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert lines[0] == ("nnkernel: error: GPU out of memory (Out of memory allocating 524,288 "
                        f"bytes (allocated so far: {STATE.allocated:,} bytes).); try a smaller "
                        "--batch-size")
