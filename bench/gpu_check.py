"""One script for a machine with an NVIDIA GPU: environment, test suite, benchmarks.

    python bench/gpu_check.py [--out bench/RESULTS-gpu.md] [--skip-tests] [--quick]

1. Prints the GPU, CUDA, CuPy and PyTorch versions.
2. Runs the whole test suite (``python -m pytest tests -q``); with CuPy seeing a GPU
   the cupy backend joins every backend-parametrised test, and tests/test_cupy_twin.py
   compares each CuPy kernel with the reference.
3. Benchmarks nnkernel on CuPy against PyTorch CUDA eager: same network, float32,
   batch and optimizer (Adam), runs interleaved, wall time of synchronised blocks
   of steps, medians:
   - the 784-512-512-10 ReLU MLP training step at batch 64, 256, 1024, 8192
     (and 8192 with TF32 on for both libraries);
   - a launch-bound 2-16-1 tanh network (batch 32), where CPU launch cost rules;
   - the fused kernels alone against nnkernel's generic reference on CuPy and the
     PyTorch equivalent;
   - the cuBLAS GEMM rate (cupy.matmul of float32 squares) against the MLP's
     achieved GFLOP/s at batch 8192;
   - an ensemble of E=256 784-128-10 MLPs against torch.func (vmap over stacked
     parameters).
4. Writes the tables as markdown to stdout and to --out, with the date and GPU name.

Without a usable GPU it prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import functools
import importlib.util
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_GPU_EXIT = 2


def fail_without_gpu() -> None:
    """Exit 2 with one line unless CuPy is installed and sees a GPU."""
    if importlib.util.find_spec("cupy") is None:
        reason = 'CuPy is not installed (pip install "nnkernel[gpu]")'
    else:
        try:
            import cupy

            reason = None if cupy.is_available() else "cupy.is_available() is False"
        except Exception as err:  # noqa: BLE001 - a broken CUDA install is "no GPU" too
            reason = f"CuPy cannot reach CUDA ({type(err).__name__}: {err})"
    if reason:
        print(f"gpu_check: no usable GPU: {reason}", file=sys.stderr)
        sys.exit(NO_GPU_EXIT)


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
    import numpy as np

    import nnkernel as nk

    layers = [nk.Dense(a, b, activation=activation) for a, b in zip(sizes[:-2], sizes[1:-1],
                                                                       strict=True)]
    model = nk.Sequential(*layers, nk.Dense(sizes[-2], sizes[-1]), seed=seed, backend="cupy")
    rng = np.random.default_rng(seed)
    xb = model.backend.asarray(rng.standard_normal((batch, sizes[0]), dtype=np.float32))
    if loss == "cross_entropy":
        yb = model.backend.asarray(rng.integers(0, sizes[-1], batch))
        loss_fn = lambda out: nk.losses.cross_entropy(out, yb, num_check=False)  # noqa: E731
    else:
        yb = model.backend.asarray(rng.integers(0, 2, (batch, sizes[-1])).astype(np.float32))
        loss_fn = lambda out: nk.losses.binary_cross_entropy(out, yb)  # noqa: E731
    opt = nk.optim.Adam(lr=1e-3)

    def step():
        out = model.forward(xb, train=True)
        _, dy = loss_fn(out)
        model.backward(dy, input_grad=False)
        opt.step(model.params, model.grads)

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


def mlp_flops(sizes, batch) -> float:
    """Matmul FLOPs of a training step: 6·B·K·M per layer, less the first layer's dx."""
    total = sum(6.0 * batch * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return total - 2.0 * batch * sizes[0] * sizes[1]


def set_tf32(enabled: bool, have_torch: bool) -> None:
    from nnkernel.kernels.cupy_twin import enable_tf32

    enable_tf32(enabled)
    if have_torch:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = enabled


# -- sections -----------------------------------------------------------------------------------
MLP = (784, 512, 512, 10)
TINY = (2, 16, 1)


def bench_mlp(args, have_torch):
    rows = []
    cases = [(b, False) for b in (64, 256, 1024, 8192)] + [(8192, True)]
    for batch, tf32 in cases:
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


def comparison_row(label, t, batch):
    nk_ms = t["nnkernel"] * 1e3
    torch_ms = t.get("torch")
    return [label, f"{nk_ms:.3f}", f"{batch / t['nnkernel']:,.0f}",
            "n/a" if torch_ms is None else f"{torch_ms * 1e3:.3f}",
            "n/a" if torch_ms is None else f"{torch_ms / t['nnkernel']:.2f}x"]


def bench_fused(args, have_torch):
    """Each fused CuPy kernel against the generic reference on CuPy (and PyTorch's way)."""
    import array_api_compat
    import cupy
    import numpy as np

    from nnkernel.kernels.cupy_twin import CupyKernels
    from nnkernel.kernels.reference import Kernels

    xp = array_api_compat.array_namespace(cupy.empty(1))
    twin, ref = CupyKernels(xp), Kernels(xp)
    rng = np.random.default_rng(0)
    dev = cupy.asarray
    rows = []

    # softmax + cross-entropy on (8192, 10) logits: losses and dz
    z = dev(rng.standard_normal((8192, 10), dtype=np.float32))
    t = dev(np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8192)])
    steps = {"twin": lambda: twin.softmax_cross_entropy(z, t, 8192),
             "reference": lambda: ref.softmax_cross_entropy(z, t, 8192)}
    if have_torch:
        import torch

        tz = torch.randn(8192, 10, device="cuda", requires_grad=True)
        ty = torch.randint(0, 10, (8192,), device="cuda")
        steps["torch"] = lambda: torch.autograd.grad(
            torch.nn.functional.cross_entropy(tz, ty), tz)
    rows.append(kernel_row("softmax + cross-entropy, value and grad, 8192x10", steps, args))

    # bias + ReLU after a (8192, 512) @ (512, 512) GEMM
    x = dev(rng.standard_normal((8192, 512), dtype=np.float32))
    W = dev(rng.standard_normal((512, 512), dtype=np.float32))
    b = dev(rng.standard_normal(512, dtype=np.float32))
    steps = {"twin": lambda: twin.affine_act(x, W, b, "relu"),
             "reference": lambda: xp.maximum(ref.affine(x, W, b), 0.0)}
    if have_torch:
        tx, tW, tb = (torch.as_tensor(a, device="cuda") for a in (x, W, b))
        steps["torch"] = lambda: torch.relu(torch.addmm(tb, tx, tW))
    rows.append(kernel_row("GEMM + bias + ReLU, 8192x512 @ 512x512", steps, args))

    # Adam over the MLP's parameters: per parameter, one flat buffer, reference, torch
    shapes = [(a, b_) for a, b_ in zip(MLP[:-1], MLP[1:], strict=True)]
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
    if have_torch:
        tps = [torch.nn.Parameter(torch.as_tensor(p, device="cuda").clone()) for p in ps]
        for tp, g in zip(tps, gs, strict=True):
            tp.grad = torch.as_tensor(g, device="cuda").clone()
        topt = torch.optim.Adam(tps, lr=1e-3)
        steps["torch"] = topt.step
    n = sum(int(np.prod(s)) for s in shapes)
    rows.append(kernel_row(f"Adam step, {n:,} parameters (6 arrays; twin: one flat buffer)",
                           steps, args))
    return rows


def kernel_row(label, steps, args):
    t = interleaved(steps, args.repeats, args.block_s)
    us = {name: f"{sec * 1e6:.1f}" for name, sec in t.items()}
    return [label, us["twin"], us.get("twin per parameter", "-"), us["reference"],
            us.get("torch", "n/a")]


def bench_gemm(args, mlp_rows):
    import cupy

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
    import numpy as np

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


# -- environment and tests ------------------------------------------------------------------------
def environment(have_torch) -> list[list[str]]:
    import cupy
    import numpy as np

    import nnkernel

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    rt = cupy.cuda.runtime.runtimeGetVersion()
    drv = cupy.cuda.runtime.driverGetVersion()
    rows = [["GPU", f"{name} (compute capability {props['major']}.{props['minor']}, "
                    f"{props['totalGlobalMem'] / 2**30:.1f} GiB)"],
            ["CUDA runtime / driver", f"{rt // 1000}.{rt % 1000 // 10} / "
                                      f"{drv // 1000}.{drv % 1000 // 10}"],
            ["CuPy", cupy.__version__],
            ["nnkernel / NumPy / Python", f"{nnkernel.__version__} / {np.__version__} / "
                                          f"{platform.python_version()}"]]
    if have_torch:
        import torch

        rows.append(["PyTorch", f"{torch.__version__} (CUDA {torch.version.cuda})"])
    else:
        rows.append(["PyTorch", "not usable on this GPU: comparisons show n/a"])
    return rows


def gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def torch_cuda_usable() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def run_test_suite(timeout_s: int) -> list[list[str]]:
    print("running: python -m pytest tests -q", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests", "-q", "-p",
                               "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return [["python -m pytest tests -q", f"timed out after {timeout_s} s", "-"]]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "(no output)"
    if proc.returncode != 0:  # show what failed, not only the count
        print(proc.stdout[-6000:], proc.stderr[-2000:], sep="\n", flush=True)
    return [["python -m pytest tests -q", summary,
             f"exit {proc.returncode}, {time.perf_counter() - t0:.0f} s"]]


# -- markdown -------------------------------------------------------------------------------------
def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def section(title, header, produce):
    """A markdown section; an error in one benchmark is reported, not fatal."""
    try:
        body = table(header, produce())
    except Exception as err:  # noqa: BLE001 - report and go on to the next section
        body = f"failed: {type(err).__name__}: {err}"
    text = f"## {title}\n\n{body}\n"
    print(text, flush=True)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-gpu.md"),
                        help="markdown file to write (default: bench/RESULTS-gpu.md)")
    parser.add_argument("--skip-tests", action="store_true", help="benchmarks only")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--test-timeout", type=int, default=1200, help="seconds for pytest")
    args = parser.parse_args(argv)
    args.repeats, args.block_s = (3, 0.05) if args.quick else (7, 0.2)

    fail_without_gpu()
    if importlib.util.find_spec("nnkernel") is None:  # run from a checkout
        sys.path.insert(0, str(ROOT))
    have_torch = torch_cuda_usable()

    parts = [f"# nnkernel on {gpu_name()}: GPU check, "
             f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n"]
    print(parts[0], flush=True)
    parts.append(section("Environment", ["", ""], lambda: environment(have_torch)))
    if not args.skip_tests:
        parts.append(section("Test suite (cupy backend included)",
                             ["command", "result", "status"],
                             lambda: run_test_suite(args.test_timeout)))
    step_header = ["case", "nnkernel ms/step", "nnkernel samples/s", "torch ms/step",
                   "torch time / nnkernel time"]
    mlp_rows = []

    def mlp():
        mlp_rows.extend(bench_mlp(args, have_torch))
        return mlp_rows

    parts.append(section("MLP training step (float32, Adam, cross-entropy; medians of "
                         f"{args.repeats} interleaved blocks)", step_header, mlp))
    parts.append(section("Launch-bound tiny network (binary cross-entropy, Adam)",
                         step_header, lambda: bench_tiny(args, have_torch)))
    parts.append(section("Fused kernels alone (µs per call)",
                         ["kernel", "CuPy twin", "twin, per parameter",
                          "generic reference on CuPy", "PyTorch"],
                         lambda: bench_fused(args, have_torch)))
    parts.append(section("GEMM ceiling against the MLP", ["what", "GFLOP/s", "kind"],
                         lambda: bench_gemm(args, mlp_rows)))
    parts.append(section("Ensemble against torch.func (Adam, cross-entropy per member)",
                         step_header, lambda: bench_ensemble(args, have_torch)))
    notes = ("Timing: wall clock around blocks of steps, with cudaDeviceSynchronize before "
             "and after each block, so CPU launch overhead counts; blocks of the two "
             "libraries alternate and the median block is reported. torch time / nnkernel "
             "time > 1 means nnkernel is faster. PyTorch runs eager with its default Adam "
             "(foreach on CUDA). TF32 rows switch TF32 on for both libraries' matmuls.\n")
    parts.append(f"## Notes\n\n{notes}")
    print(parts[-1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
