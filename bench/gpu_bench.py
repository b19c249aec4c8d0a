"""The GPU benchmarks of bench/gpu_check.py: nnkernel on CuPy against PyTorch CUDA eager.

Same network, float32, batch and optimizer (Adam) for both libraries, runs
interleaved, wall time of synchronised blocks of steps, medians. Each function
returns the rows of one markdown table; gpu_check.py writes them as they come.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time

import numpy as np

MLP = (784, 512, 512, 10)
TINY = (2, 16, 1)


# -- timing -------------------------------------------------------------------------------
def synchronize() -> None:
    """Wait for all work on the device (CuPy's and PyTorch's streams alike)."""
    import cupy

    cupy.cuda.runtime.deviceSynchronize()


def block_seconds(step, n: int) -> float:
    synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    synchronize()
    return (time.perf_counter() - t0) / n


def steps_per_block(step, target_s: float) -> int:
    """Steps that take about target_s (after one warm-up block that compiles kernels)."""
    block_seconds(step, 3)
    n = 1
    while True:
        t = block_seconds(step, n)
        if t * n >= target_s / 4 or n >= 1 << 16:
            return max(1, int(n * target_s / max(t * n, 1e-9)))
        n *= 4


def interleaved(steps: dict, repeats: int, target_s: float) -> dict:
    """Median seconds per call of each step, blocks of the steps alternating in turn."""
    sizes = {name: steps_per_block(fn, target_s) for name, fn in steps.items()}
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:  # alternate who goes first
            times[name].append(block_seconds(steps[name], sizes[name]))
    return {name: statistics.median(ts) for name, ts in times.items()}


# -- the two libraries' training steps -----------------------------------------------------
def nnkernel_mlp_step(sizes, batch, activation="relu", loss="cross_entropy", seed=0):
    import nnkernel as nk

    layers = [nk.Dense(a, b, activation=activation) for a, b in zip(sizes[:-2], sizes[1:-1],
                                                                       strict=True)]
    model = nk.Sequential(*layers, nk.Dense(sizes[-2], sizes[-1]), seed=seed, backend="cupy")
    rng = np.random.default_rng(seed)
    xb = model.backend.asarray(rng.standard_normal((batch, sizes[0]), dtype=np.float32))
    if loss == "cross_entropy":
        yb = model.backend.asarray(rng.integers(0, sizes[-1], batch))
        loss_fn = functools.partial(nk.losses.cross_entropy, target=yb, num_check=False)
    else:
        yb = model.backend.asarray(rng.integers(0, 2, (batch, sizes[-1])).astype(np.float32))
        loss_fn = functools.partial(nk.losses.binary_cross_entropy, target=yb)
    opt = nk.optim.Adam(lr=1e-3)

    def step():
        out = model.forward(xb, train=True)
        _, dy = loss_fn(out)
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)  # one kernel over model.store's flat buffers

    return step


def torch_mlp_step(sizes, batch, activation="relu", loss="cross_entropy", seed=0):
    import torch

    torch.manual_seed(seed)
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation]
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [torch.nn.Linear(a, b), act()]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-2], sizes[-1])).cuda()
    xb = torch.randn(batch, sizes[0], device="cuda")
    if loss == "cross_entropy":
        yb = torch.randint(0, sizes[-1], (batch,), device="cuda")
        loss_fn = torch.nn.functional.cross_entropy
    else:
        yb = torch.randint(0, 2, (batch, sizes[-1]), device="cuda").float()
        loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)  # the default: foreach on CUDA

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()

    return step


def set_tf32(enabled: bool, have_torch: bool) -> None:
    from nnkernel.backend.cupy import set_tf32 as cupy_tf32

    cupy_tf32(enabled)
    if have_torch:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = enabled


def comparison_row(label, t, batch):
    nk_ms = t["nnkernel"] * 1e3
    torch_ms = t.get("torch")
    return [label, f"{nk_ms:.3f}", f"{batch / t['nnkernel']:,.0f}",
            "n/a" if torch_ms is None else f"{torch_ms * 1e3:.3f}",
            "n/a" if torch_ms is None else f"{torch_ms / t['nnkernel']:.2f}x"]


STEP_HEADER = ["case", "nnkernel ms/step", "nnkernel samples/s", "torch ms/step",
               "torch time / nnkernel time"]


# -- sections ---------------------------------------------------------------------------------
def bench_mlp(args, have_torch):
    rows = []
    for batch, tf32 in [(b, False) for b in (64, 256, 1024, 8192)] + [(8192, True)]:
        set_tf32(tf32, have_torch)
        try:
            steps = {"nnkernel": nnkernel_mlp_step(MLP, batch)}
            if have_torch:
                steps["torch"] = torch_mlp_step(MLP, batch)
            t = interleaved(steps, args.repeats, args.block_s)
        finally:
            set_tf32(False, have_torch)
        label = f"784-512-512-10, batch {batch}" + (", TF32" if tf32 else "")
        rows.append(comparison_row(label, t, batch))
    return rows


def bench_tiny(args, have_torch):
    steps = {"nnkernel": nnkernel_mlp_step(TINY, 32, activation="tanh", loss="bce")}
    if have_torch:
        steps["torch"] = torch_mlp_step(TINY, 32, activation="tanh", loss="bce")
    t = interleaved(steps, args.repeats, args.block_s)
    return [comparison_row("2-16-1 tanh, batch 32 (launch-bound)", t, 32)]


KERNEL_HEADER = ["kernel", "CuPy twin", "twin, per parameter", "generic reference on CuPy",
                 "PyTorch"]


def kernel_row(label, steps, args):
    t = interleaved(steps, args.repeats, args.block_s)
    us = {name: f"{sec * 1e6:.1f}" for name, sec in t.items()}
    return [label, us["twin"], us.get("twin per parameter", "-"), us["reference"],
            us.get("torch", "n/a")]


def bench_fused(args, have_torch):
    """Each fused CuPy kernel against the generic reference on CuPy (and PyTorch's way)."""
    import array_api_compat
    import cupy

    from nnkernel.kernels.cupy import CupyKernels
    from nnkernel.kernels.reference import Kernels
    from nnkernel.nn.activations import get_activation

    xp = array_api_compat.array_namespace(cupy.empty(1))
    twin, ref = CupyKernels(xp), Kernels(xp)
    rng = np.random.default_rng(0)
    dev = cupy.asarray
    torch = None
    if have_torch:
        import torch
    rows = []
    for C in (10, 1000, 32768):  # integer labels: warp per row below 1024 classes, block above
        n = 8192 if C < 32768 else 256
        z = dev(rng.standard_normal((n, C), dtype=np.float32))
        y = dev(rng.integers(0, C, n))
        steps = {"twin": lambda z=z, y=y, n=n: twin.softmax_cross_entropy_mean(
                     z, y, n, False, True),
                 "reference": lambda z=z, y=y, n=n: ref.softmax_cross_entropy_mean(
                     z, y, n, False, True)}
        if torch is not None:
            tz = torch.randn(n, C, device="cuda", requires_grad=True)
            ty = torch.randint(0, C, (n,), device="cuda")
            steps["torch"] = lambda tz=tz, ty=ty: torch.autograd.grad(
                torch.nn.functional.cross_entropy(tz, ty), tz)
        rows.append(kernel_row(f"softmax + cross-entropy, int labels, mean and grad, {n}x{C}",
                               steps, args))

    x = dev(rng.standard_normal((8192, 512), dtype=np.float32))
    W = dev(rng.standard_normal((512, 512), dtype=np.float32))
    b = dev(rng.standard_normal(512, dtype=np.float32))
    steps = {"twin": lambda: twin.affine_act(x, W, b, "relu"),
             "reference": lambda: xp.maximum(ref.affine(x, W, b), 0.0)}
    if torch is not None:
        tx, tW, tb = (torch.as_tensor(a, device="cuda") for a in (x, W, b))
        steps["torch"] = lambda: torch.relu(torch.addmm(tb, tx, tW))
    rows.append(kernel_row("GEMM + bias + ReLU, 8192x512 @ 512x512", steps, args))

    relu = get_activation("relu")
    a, da = cupy.maximum(x, 0.0), dev(rng.standard_normal((8192, 512), dtype=np.float32))
    steps = {"twin": lambda: twin.activation_backward(relu, None, a, da),
             "reference": lambda: ref.activation_backward(relu, None, a, da)}
    if torch is not None:
        ta, tda = torch.as_tensor(a, device="cuda"), torch.as_tensor(da, device="cuda")
        steps["torch"] = lambda: torch.ops.aten.threshold_backward(tda, ta, 0.0)
    rows.append(kernel_row("ReLU backward, 8192x512", steps, args))

    import nnkernel as nk

    rs = nk.Backend("cupy").random(0)
    steps = {"twin": lambda: twin.dropout(x, 0.2, rs), "reference": lambda: ref.dropout(x, 0.2, rs)}
    if torch is not None:
        steps["torch"] = lambda: torch.nn.functional.dropout(tx, 0.2, training=True)
    rows.append(kernel_row("Dropout p=0.2 forward (mask and output), 8192x512", steps, args))

    shapes = [(a_, b_) for a_, b_ in zip(MLP[:-1], MLP[1:], strict=True)]
    shapes = [s for pair in shapes for s in (pair, (pair[1],))]
    ps = [dev(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    gs = [dev(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    ms = [cupy.zeros_like(p) for p in ps]
    vs = [cupy.zeros_like(p) for p in ps]
    flat = [cupy.concatenate([a.ravel() for a in arrs]) for arrs in (ps, gs, ms, vs)]
    hyper = (1e-3, 0.9, 0.999, 1e-8, None, False, 10)

    def per_parameter():
        for p, g, m, v in zip(ps, gs, ms, vs, strict=True):
            twin.adam(p, g, m, v, *hyper)

    steps = {"twin": lambda: twin.adam(*flat, *hyper), "twin per parameter": per_parameter,
             "reference": lambda: [ref.adam(p, g, m, v, *hyper)
                                   for p, g, m, v in zip(ps, gs, ms, vs, strict=True)]}
    if torch is not None:
        tps = [torch.nn.Parameter(torch.as_tensor(p, device="cuda").clone()) for p in ps]
        for tp, g in zip(tps, gs, strict=True):
            tp.grad = torch.as_tensor(g, device="cuda").clone()
        steps["torch"] = torch.optim.Adam(tps, lr=1e-3).step
    n = sum(int(np.prod(s)) for s in shapes)
    rows.append(kernel_row(f"Adam step, {n:,} parameters (6 arrays; twin: one flat buffer)",
                           steps, args))
    return rows


def bench_gemm(args, mlp_rows):
    import cupy

    from nnkernel.bench.plan import mlp_flops

    rows = []
    for n in (4096, 8192):
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        for tf32 in (False, True):
            set_tf32(tf32, have_torch=False)
            try:
                gemm = functools.partial(cupy.matmul, a, b)
                sec = interleaved({"gemm": gemm}, args.repeats, args.block_s)["gemm"]
            finally:
                set_tf32(False, have_torch=False)
            rows.append([f"cupy.matmul float32 {n}x{n}" + (" (TF32)" if tf32 else ""),
                         f"{2.0 * n**3 / sec / 1e9:,.0f}", "cuBLAS ceiling"])
    flops = mlp_flops(MLP, 8192)
    for row in mlp_rows:
        if row[0].endswith("batch 8192"):
            rows.append(["784-512-512-10 step, batch 8192, nnkernel",
                         f"{flops / (float(row[1]) / 1e3) / 1e9:,.0f}", "achieved"])
            if row[3] != "n/a":
                rows.append(["784-512-512-10 step, batch 8192, torch",
                             f"{flops / (float(row[3]) / 1e3) / 1e9:,.0f}", "achieved"])
    return rows


def bench_ensemble(args, have_torch, members=256, sizes=(784, 128, 10), batch=256):
    import nnkernel as nk

    layers = [nk.Dense(sizes[0], sizes[1], activation="relu"), nk.Dense(sizes[1], sizes[2])]
    ens = nk.Sequential(*layers, ensemble=members, backend="cupy")
    rng = np.random.default_rng(0)
    xb = ens.backend.asarray(rng.standard_normal((batch, sizes[0]), dtype=np.float32))
    yb = ens.backend.asarray(rng.integers(0, sizes[2], batch))
    opt = nk.optim.Adam(lr=1e-3)

    def nk_step():
        out = ens.forward(xb, train=True)  # shared input: (E, N, C) outputs
        _, dy = nk.losses.cross_entropy(out, yb, members=True, num_check=False)
        ens.backward(dy, input_grad=False)
        opt.step(ens.params, ens.grads)

    steps = {"nnkernel": nk_step}
    if have_torch:
        steps["torch"] = torch_func_ensemble_step(members, sizes, batch)
    t = interleaved(steps, args.repeats, args.block_s)
    label = f"E={members} x {'-'.join(map(str, sizes))}, shared batch {batch}"
    return [comparison_row(label, t, batch)]


def torch_func_ensemble_step(members, sizes, batch):
    """The torch.func recipe: stacked parameters, vmap(grad(loss)), Adam on the stacks."""
    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1]), torch.nn.ReLU(),
                                torch.nn.Linear(sizes[1], sizes[2])).cuda()
            for _ in range(members)]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    xb = torch.randn(batch, sizes[0], device="cuda")
    yb = torch.randint(0, sizes[2], (batch,), device="cuda")

    def loss(p, b, x, y):
        return torch.nn.functional.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads_of = vmap(grad(loss), in_dims=(0, 0, None, None))
    opt = torch.optim.Adam(list(params.values()), lr=1e-3)

    def step():
        grads = grads_of(params, buffers, xb, yb)
        for key, p in params.items():
            p.grad = grads[key]
        opt.step()

    return step
