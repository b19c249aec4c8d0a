"""The conv section of `nnkernel bench`: its case, its FLOP count, and that both sides build
and train the same network."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

import nnkernel as nk
from nnkernel import bench
from nnkernel.bench.plan import CONV_NET, conv_flops
from nnkernel.bench.workers import calibrate, make_step, time_round
from nnkernel.nn.builders import cnn

SMALL = {"image": [1, 8, 8], "channels": [2, 4], "hidden": [8], "classes": 3, "batch": 6}


def test_the_conv_case_is_the_cli_network_at_batch_128():
    (case,) = bench.plan(["conv"], bench.FULL, "float32", "cpu")
    assert case.impls == ("nnkernel", "torch") and case.refs == ("torch",)
    assert case.spec["batch"] == 128 and case.spec["image"] == [1, 28, 28]
    assert case.spec["channels"] == [32, 64] and case.spec["optimizer"] == "adam"
    assert case.flops == conv_flops(CONV_NET, 128)
    gpu = bench.plan(["conv"], bench.QUICK, "float32", "gpu")[0]
    assert gpu.spec["device"] == "gpu"


def test_conv_flops_count_the_real_matmuls():
    n = 128
    conv1 = 2 * n * 28 * 28 * 9 * 1 * 32  # forward; dW as much; no dx for the input
    conv2 = 2 * n * 14 * 14 * 9 * 32 * 64  # forward, dW, dX
    dense = 6 * n * (64 * 7 * 7 * 128 + 128 * 10)
    assert conv_flops(CONV_NET, n) == 2 * conv1 + 3 * conv2 + dense


@pytest.mark.parametrize("impl", ["nnkernel", "torch"])
def test_each_side_builds_and_runs_a_small_conv_step(impl):
    if impl == "torch":
        torch_or_skip()
    step = make_step({"kind": "conv", "impl": impl, **SMALL, "activation": "relu",
                      "loss": "ce", "optimizer": "adam", "lr": 1e-3, "dtype": "float32"})
    assert calibrate(step, 0.0, 0.001) >= 1
    assert time_round(step, 1) > 0


def test_the_torch_side_is_the_same_network():
    torch = torch_or_skip()
    from nnkernel.bench.workers.torch_side import torch_cnn

    case = {**SMALL, "dtype": "float64"}
    ours = cnn(case["image"], case["channels"], case["hidden"], case["classes"],
               dtype="float64", seed=1)
    theirs = torch_cnn(torch, case)
    weighted = [m for m in theirs if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    keys = [i for i, layer in enumerate(ours.layers) if isinstance(layer, (nk.Conv2D, nk.Dense))]
    assert len(weighted) == len(keys)
    arrays = ours.arrays()
    with torch.no_grad():
        for module, i in zip(weighted, keys, strict=True):
            W = arrays[f"{i}.W"]  # Dense keeps (n_in, n_out), torch.nn.Linear (out, in)
            module.weight.copy_(torch.from_numpy(W if W.ndim == 4 else W.T))
            module.bias.copy_(torch.from_numpy(arrays[f"{i}.b"]))
    x = np.random.default_rng(0).random((5, *case["image"]))
    np.testing.assert_allclose(theirs(torch.from_numpy(x)).detach().numpy(), ours(x),
                               rtol=1e-10, atol=1e-12)
