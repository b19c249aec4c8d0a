"""PyTorch eager's side of a benchmark, written the way its tutorials write it."""

from __future__ import annotations

import numpy as np

from .common import N_BATCHES, Step, cycle, image_inputs, inputs, matmul_shapes, random_arrays, step


def torch_device(case):
    return "cuda" if case.get("device", "cpu") == "gpu" else "cpu"


def torch_sync(torch, case):
    if torch_device(case) == "cuda":
        return torch.cuda.synchronize
    return None


def torch_tensors(torch, case, *arrays):
    return [torch.as_tensor(a).to(torch_device(case)) for a in arrays]


def _torch_mlp_model(torch, case):
    nn = torch.nn
    sizes, act = case["sizes"], case.get("activation", "relu")
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU() if act == "relu" else nn.Tanh())
    dt = getattr(torch, case.get("dtype", "float32"))
    return nn.Sequential(*layers).to(device=torch_device(case), dtype=dt)


def torch_optimizer(torch, case, params):
    if case.get("optimizer", "adam") == "adam":
        return torch.optim.Adam(params, lr=case.get("lr", 1e-3))
    return torch.optim.SGD(params, lr=case.get("lr", 0.01))


def torch_loss(torch, case):
    F = torch.nn.functional
    return F.cross_entropy if case.get("loss", "ce") == "ce" else F.mse_loss


def _torch_data(torch, case):
    xs, ts = inputs(case, case["sizes"][0])
    xs, ts = torch_tensors(torch, case, *xs), torch_tensors(torch, case, *ts)
    return cycle(list(zip(xs, ts, strict=True)))


def training_step(torch, case, model, opt, loss_fn, data):
    """The tutorials' step: forward, loss, zero_grad, backward, step."""

    def run():
        x, t = data()
        loss = loss_fn(model(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Step(run, torch_sync(torch, case))


@step("mlp", "torch")
def _torch_mlp(case):
    import torch

    model = _torch_mlp_model(torch, case)
    opt = torch_optimizer(torch, case, model.parameters())
    loss_fn = torch_loss(torch, case)
    data = _torch_data(torch, case)
    return training_step(torch, case, model, opt, loss_fn, data)


@step("ensemble", "torch-func", "torch-loop")
def _torch_ensemble(case):
    """torch-func: stack_module_state + vmap + functional_call; torch-loop: E models in turn."""
    import copy

    import torch

    E = case["members"]
    loss_fn = torch_loss(torch, case)
    data = _torch_data(torch, case)
    models = [_torch_mlp_model(torch, case) for _ in range(E)]
    if case["impl"] == "torch-loop":
        opts = [torch_optimizer(torch, case, m.parameters()) for m in models]

        def run_loop():
            x, t = data()
            for model, opt in zip(models, opts, strict=True):
                loss = loss_fn(model(x), t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return Step(run_loop, torch_sync(torch, case))
    from torch.func import functional_call, stack_module_state

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    members = torch.vmap(one, in_dims=(0, 0, None))
    opt = torch_optimizer(torch, case, list(params.values()))
    ce = case.get("loss", "ce") == "ce"

    def run_func():
        x, t = data()
        out = members(params, buffers, x)  # (E, N, C)
        # Each member's mean loss, summed: member i's gradient is that of its own mean loss.
        if ce:
            loss = loss_fn(out.reshape(-1, out.shape[-1]), t.repeat(E)) * E
        else:
            loss = loss_fn(out, t.expand_as(out)) * E
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return Step(run_func, torch_sync(torch, case))


def torch_cnn(torch, case):
    """nnkernel.nn.builders.cnn as nn.Sequential of Conv2d / ReLU / MaxPool2d / Linear."""
    nn = torch.nn
    layers, c_in, (_, h, w) = [], case["image"][0], case["image"]
    for c in case["channels"]:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, h, w = c, h // 2, w // 2
    layers.append(nn.Flatten())
    width = c_in * h * w
    for n in case["hidden"]:
        layers += [nn.Linear(width, n), nn.ReLU()]
        width = n
    layers.append(nn.Linear(width, case["classes"]))
    dt = getattr(torch, case.get("dtype", "float32"))
    return nn.Sequential(*layers).to(device=torch_device(case), dtype=dt)


@step("conv", "torch")
def _torch_conv(case):
    """The CNN trained the way the tutorials do (oneDNN convolutions on the CPU, cuDNN on
    CUDA)."""
    import torch

    model = torch_cnn(torch, case)
    opt = torch_optimizer(torch, case, model.parameters())
    loss_fn = torch_loss(torch, case)
    xs, ts = image_inputs(case)
    data = cycle(list(zip(torch_tensors(torch, case, *xs), torch_tensors(torch, case, *ts),
                          strict=True)))
    return training_step(torch, case, model, opt, loss_fn, data)


def _torch_arrays(torch, case, *shapes):
    return torch_tensors(torch, case, *random_arrays(case, *shapes))


@step("matmul", "torch")
@step("bmm", "torch")
def _torch_matmul(case):
    import torch

    a, b = _torch_arrays(torch, case, *matmul_shapes(case))
    return Step(lambda: torch.matmul(a, b), torch_sync(torch, case))


@step("dense_fwd", "torch")
@step("dense_fwd_bwd", "torch")
def _torch_dense(case):
    import torch

    n_in, n_out = case["n_in"], case["n_out"]
    dt = getattr(torch, case.get("dtype", "float32"))
    layer = torch.nn.Linear(n_in, n_out).to(device=torch_device(case), dtype=dt)
    xs = _torch_arrays(torch, case, *[(case["batch"], n_in)] * N_BATCHES)
    (dy,) = _torch_arrays(torch, case, (case["batch"], n_out))
    data = cycle(xs)
    if case["kind"] == "dense_fwd":  # a training forward: the graph is recorded, as in a step
        return Step(lambda: torch.relu(layer(data())), torch_sync(torch, case))

    def run():
        x = data().requires_grad_(True)  # dx is computed, as nnkernel's input_grad=True
        layer.zero_grad(set_to_none=True)
        torch.relu(layer(x)).backward(dy)
        x.grad = None

    return Step(run, torch_sync(torch, case))


@step("softmax_ce", "torch")
def _torch_softmax_ce(case):
    import torch

    F = torch.nn.functional
    logits = _torch_arrays(torch, case, *[(case["batch"], case["classes"])] * N_BATCHES)
    logits = [z.requires_grad_(True) for z in logits]
    rng = np.random.default_rng(1)
    (labels,) = torch_tensors(torch, case, rng.integers(0, case["classes"], case["batch"]))
    data = cycle(logits)

    def run():  # value and gradient with respect to the logits, as nnkernel's fused loss
        z = data()
        loss = F.cross_entropy(z, labels)
        torch.autograd.grad(loss, z)

    return Step(run, torch_sync(torch, case))


@step("adam", "torch")
def _torch_adam(case):
    import torch

    model = _torch_mlp_model(torch, case)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Step(opt.step, torch_sync(torch, case))
