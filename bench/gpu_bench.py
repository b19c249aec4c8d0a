"""The GPU benchmarks of bench/gpu_check.py: nnkernel on CuPy against PyTorch CUDA eager.

Same network, float32, batch and optimizer (Adam) for both libraries, runs
interleaved, wall time of synchronised blocks of steps, medians. Each function
yields the rows of one markdown table as it measures them (bench/gpu_sections.py
writes each at once, so a section stopped at its time limit keeps its rows).
``args.plan`` picks the sizes: "quick" and "full" (the same sizes, fewer and
shorter repeats in quick), "dry" (tiny sizes for a run without a device).
"""

from __future__ import annotations

import copy
import functools
import statistics
import time

import numpy as np

MLP = (784, 512, 512, 10)
TINY = (2, 16, 1)
_SIZES = {"mlp": MLP, "batches": (64, 256, 1024, 8192), "tiny_batch": 32,
          "classes": (10, 1000, 32768), "rows": 8192, "wide_rows": 256, "dense": (8192, 512),
          "gemm": (4096, 8192), "ensemble": (256, (784, 128, 10), 256)}
PLANS = {"full": dict(_SIZES, repeats=7, block_s=0.2),
         "quick": dict(_SIZES, repeats=3, block_s=0.05),
         "dry": dict(mlp=(32, 16, 16, 10), batches=(8, 32), tiny_batch=8, classes=(10, 40),
                     rows=64, wide_rows=8, dense=(64, 32), gemm=(64,),
                     ensemble=(4, (32, 16, 10), 16), repeats=1, block_s=0.001)}


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
def bench_mlp(args):
    plan, have_torch = PLANS[args.plan], args.have_torch
    sizes, batches = plan["mlp"], plan["batches"]
    for batch, tf32 in [(b, False) for b in batches] + [(batches[-1], True)]:
        set_tf32(tf32, have_torch)
        try:
            steps = {"nnkernel": nnkernel_mlp_step(sizes, batch)}
            if have_torch:
                steps["torch"] = torch_mlp_step(sizes, batch)
            t = interleaved(steps, plan["repeats"], plan["block_s"])
        finally:
            set_tf32(False, have_torch)
        label = f"{'-'.join(map(str, sizes))}, batch {batch}" + (", TF32" if tf32 else "")
        yield comparison_row(label, t, batch)


def bench_tiny(args):
    plan, batch = PLANS[args.plan], PLANS[args.plan]["tiny_batch"]
    steps = {"nnkernel": nnkernel_mlp_step(TINY, batch, activation="tanh", loss="bce")}
    if args.have_torch:
        steps["torch"] = torch_mlp_step(TINY, batch, activation="tanh", loss="bce")
    t = interleaved(steps, plan["repeats"], plan["block_s"])
    yield comparison_row(f"2-16-1 tanh, batch {batch} (launch-bound)", t, batch)


KERNEL_HEADER = ["kernel", "CuPy twin", "twin, per parameter", "generic reference on CuPy",
                 "PyTorch"]


def kernel_row(label, steps, plan):
    t = interleaved(steps, plan["repeats"], plan["block_s"])
    us = {name: f"{sec * 1e6:.1f}" for name, sec in t.items()}
    return [label, us["twin"], us.get("twin per parameter", "-"), us["reference"],
            us.get("torch", "n/a")]


def bench_fused(args):
    """Each fused CuPy kernel against the generic reference on CuPy (and PyTorch's way)."""
    import array_api_compat
    import cupy

    from nnkernel.kernels.cupy import CupyKernels
    from nnkernel.kernels.reference import Kernels
    from nnkernel.nn.activations import get_activation

    plan = PLANS[args.plan]
    xp = array_api_compat.array_namespace(cupy.empty(1))
    ref = Kernels(xp)
    twin = ref if args.plan == "dry" else CupyKernels(xp)  # the stand-in runs no CUDA code
    rng = np.random.default_rng(0)
    dev = cupy.asarray
    torch = None
    if args.have_torch:
        import torch
    N, K = plan["dense"]
    for C in plan["classes"]:  # integer labels: warp per row below 1024 classes, block above
        n = plan["rows"] if C < 32768 else plan["wide_rows"]
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
        yield kernel_row(f"softmax + cross-entropy, int labels, mean and grad, {n}x{C}",
                         steps, plan)

    x = dev(rng.standard_normal((N, K), dtype=np.float32))
    W = dev(rng.standard_normal((K, K), dtype=np.float32))
    b = dev(rng.standard_normal(K, dtype=np.float32))
    fused = getattr(twin, "affine_act", lambda x, W, b, _: xp.maximum(ref.affine(x, W, b), 0.0))
    steps = {"twin": lambda: fused(x, W, b, "relu"),
             "reference": lambda: xp.maximum(ref.affine(x, W, b), 0.0)}
    if torch is not None:
        tx, tW, tb = (torch.as_tensor(a, device="cuda") for a in (x, W, b))
        steps["torch"] = lambda: torch.relu(torch.addmm(tb, tx, tW))
    yield kernel_row(f"GEMM + bias + ReLU, {N}x{K} @ {K}x{K}", steps, plan)

    relu = get_activation("relu")
    a, da = cupy.maximum(x, 0.0), dev(rng.standard_normal((N, K), dtype=np.float32))
    steps = {"twin": lambda: twin.activation_backward(relu, None, a, da),
             "reference": lambda: ref.activation_backward(relu, None, a, da)}
    if torch is not None:
        ta, tda = torch.as_tensor(a, device="cuda"), torch.as_tensor(da, device="cuda")
        steps["torch"] = lambda: torch.ops.aten.threshold_backward(tda, ta, 0.0)
    yield kernel_row(f"ReLU backward, {N}x{K}", steps, plan)

    import nnkernel as nk

    rs = nk.Backend("cupy").random(0)
    steps = {"twin": lambda: twin.dropout(x, 0.2, rs), "reference": lambda: ref.dropout(x, 0.2, rs)}
    if torch is not None:
        steps["torch"] = lambda: torch.nn.functional.dropout(tx, 0.2, training=True)
    yield kernel_row(f"Dropout p=0.2 forward (mask and output), {N}x{K}", steps, plan)

    mlp = plan["mlp"]
    shapes = [(a_, b_) for a_, b_ in zip(mlp[:-1], mlp[1:], strict=True)]
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
    yield kernel_row(f"Adam step, {n:,} parameters (6 arrays; twin: one flat buffer)",
                     steps, plan)


def bench_gemm(args):
    """cuBLAS's float32 GEMM rate, and the MLP section's steps as GFLOP/s (args.earlier_rows)."""
    import cupy

    from nnkernel.bench.plan import mlp_flops

    plan = PLANS[args.plan]
    rng = np.random.default_rng(0)
    for n in plan["gemm"]:
        a = cupy.asarray(rng.standard_normal((n, n), dtype=np.float32))
        b = cupy.asarray(rng.standard_normal((n, n), dtype=np.float32))
        for tf32 in (False, True):
            set_tf32(tf32, have_torch=False)
            try:
                gemm = functools.partial(cupy.matmul, a, b)
                sec = interleaved({"gemm": gemm}, plan["repeats"], plan["block_s"])["gemm"]
            finally:
                set_tf32(False, have_torch=False)
            yield [f"cupy.matmul float32 {n}x{n}" + (" (TF32)" if tf32 else ""),
                   f"{2.0 * n**3 / sec / 1e9:,.0f}", "cuBLAS ceiling"]
    mlp, batch = plan["mlp"], plan["batches"][-1]
    flops = mlp_flops(mlp, batch)
    for row in args.earlier_rows:
        if row[0].endswith(f"batch {batch}"):
            yield [f"{row[0]}, nnkernel", f"{flops / (float(row[1]) / 1e3) / 1e9:,.0f}",
                   "achieved"]
            if row[3] != "n/a":
                yield [f"{row[0]}, torch", f"{flops / (float(row[3]) / 1e3) / 1e9:,.0f}",
                       "achieved"]


def bench_ensemble(args):
    import nnkernel as nk

    plan, have_torch = PLANS[args.plan], args.have_torch
    members, sizes, batch = plan["ensemble"]
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
    t = interleaved(steps, plan["repeats"], plan["block_s"])
    label = f"E={members} x {'-'.join(map(str, sizes))}, shared batch {batch}"
    yield comparison_row(label, t, batch)


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
