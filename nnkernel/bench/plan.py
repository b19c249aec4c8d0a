"""What `nnkernel bench` measures: the sections, their cases and the FLOPs of each step."""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS = ("kernels", "mlp", "tiny", "width", "depth", "ensemble", "conv")
# The conv section's network: `nnkernel train --conv 32,64 --hidden 128` on 1x28x28 images.
CONV_NET = {"image": [1, 28, 28], "channels": [32, 64], "hidden": [128], "classes": 10}
MLP_SIZES = (784, 512, 512, 10)
FULL = {"batches": (64, 128, 256, 512, 1024, 2048, 4096), "widths": (128, 256, 512, 1024, 2048),
        "depths": (1, 2, 4, 8), "members": (1, 8, 64, 256), "matmul": (512, 1024, 2048),
        "bmm": ((64, 128, 64, 64), (8, 256, 512, 512)), "dense_batches": (256, 1024),
        "ce": ((1024, 10), (1024, 1000)), "repeats": 7, "warmup_s": 0.3, "round_s": 0.25,
        "settle_s": 0.2, "ceiling_repeats": 7, "conv_batches": (128,)}
QUICK = {"batches": (64, 256, 1024), "widths": (256, 1024), "depths": (1, 4),
         "members": (8, 64), "matmul": (1024,), "bmm": ((64, 128, 64, 64),),
         "dense_batches": (256,), "ce": ((1024, 10),), "repeats": 3, "warmup_s": 0.2,
         "round_s": 0.05, "settle_s": 0.1,
         "ceiling_repeats": 3, "conv_batches": (128,)}


@dataclass
class Case:
    section: str
    label: str
    spec: dict
    impls: tuple
    refs: tuple                 # implementations every row is compared with
    items: float = 1.0          # samples (rows, parameters, steps) per step, for throughput
    unit: str = "samples/s"
    flops: float | None = None  # real floating-point operations per step
    x: float | None = None      # the swept value, for plots


def mlp_flops(sizes, batch) -> float:
    """Matmul FLOPs of one training step: forward 2·N·in·out per layer, backward 4·N·in·out,
    except the first layer, whose dx is skipped (2·N·in·out)."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    return sum(6.0 * batch * a * b for a, b in pairs) - 2.0 * batch * pairs[0][0] * pairs[0][1]


def conv_flops(net: dict, batch: int) -> float:
    """Matmul FLOPs of one CNN training step (3x3 convs, padding 1, 2x2 pools, then Dense):
    each conv 2·N·H·W·(9·C_in)·C_out forward, as much for dW and (but the first) for dX."""
    c_in, h, w = net["image"]
    total, first = 0.0, True
    for c in net["channels"]:
        gemm = 2.0 * batch * h * w * 9 * c_in * c
        total += gemm * (2.0 if first else 3.0)
        c_in, h, w, first = c, h // 2, w // 2, False
    dense = [c_in * h * w, *net["hidden"], net["classes"]]
    return total + sum(6.0 * batch * a * b for a, b in zip(dense, dense[1:], strict=False))


def plan(sections, p: dict, dtype: str, device: str) -> list[Case]:
    """The cases of each section, in order, from the size lists ``p`` (FULL or QUICK)."""
    common = {"dtype": dtype, "device": device}
    trio = ("nnkernel", "torch", "numpy-loop")
    jax = ("jax", "jax-compiled") if device == "cpu" else ()  # no CUDA jaxlib measured here
    cases: list[Case] = []

    def mlp_case(section, label, sizes, batch, x, **extra):
        spec = {"kind": "mlp", "sizes": list(sizes), "batch": batch, "activation": "relu",
                "loss": "ce", "optimizer": "adam", "lr": 1e-3, **common, **extra}
        flops = mlp_flops(sizes, batch)
        impls = trio + (jax if section in ("mlp", "tiny") else ())
        return Case(section, label, spec, impls, ("torch", "numpy-loop"), batch, "samples/s",
                    flops, x)

    if "kernels" in sections:
        duo, ref = ("nnkernel", "torch"), ("torch",)
        for n in p["matmul"]:
            cases.append(Case("kernels", f"matmul {n}x{n}", {"kind": "matmul", "n": n, **common},
                              duo, ref, 2.0 * n * n, "rows/s", 2.0 * n**3))
        for E, N, K, M in p["bmm"]:
            cases.append(Case("kernels", f"bmm ({E},{N},{K})@({E},{K},{M})",
                              {"kind": "bmm", "shape": [E, N, K, M], **common}, duo, ref,
                              E * N, "rows/s", 2.0 * E * N * K * M))
        for kind, factor in (("dense_fwd", 2.0), ("dense_fwd_bwd", 6.0)):
            for b in p["dense_batches"]:
                spec = {"kind": kind, "n_in": 512, "n_out": 512, "batch": b, **common}
                cases.append(Case("kernels", f"{kind} 512->512 N={b}", spec, duo, ref, b,
                                  "samples/s", factor * b * 512 * 512))
        for b, c in p["ce"]:
            cases.append(Case("kernels", f"softmax_ce N={b} C={c}",
                              {"kind": "softmax_ce", "batch": b, "classes": c, **common},
                              duo, ref, b, "rows/s"))
        n_params = sum(a * b + b for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True))
        cases.append(Case("kernels", "adam 784-512-512-10",
                          {"kind": "adam", "sizes": list(MLP_SIZES), **common}, duo, ref,
                          n_params, "params/s"))
    if "mlp" in sections:
        for b in p["batches"]:
            cases.append(mlp_case("mlp", f"784-512-512-10 N={b}", MLP_SIZES, b, b))
    if "tiny" in sections:
        for opt, lr in (("sgd", 0.1), ("adam", 1e-3)):
            cases.append(mlp_case("tiny", f"2-16-1 tanh mse {opt} N=64", (2, 16, 1), 64, None,
                                  activation="tanh", loss="mse", optimizer=opt, lr=lr))
    if "width" in sections:
        for w in p["widths"]:
            cases.append(mlp_case("width", f"784-{w}-{w}-10 N=256", (784, w, w, 10), 256, w))
    if "depth" in sections:
        for d in p["depths"]:
            sizes = (784,) + (512,) * d + (10,)
            cases.append(mlp_case("depth", f"{d} hidden x512 N=256", sizes, 256, d))
    if "ensemble" in sections:
        for E in p["members"]:
            spec = {"kind": "ensemble", "members": E, "sizes": [64, 64, 10], "batch": 128,
                    "activation": "relu", "loss": "ce", "optimizer": "adam", "lr": 1e-3,
                    **common}
            cases.append(Case("ensemble", f"E={E} 64-64-10 N=128", spec,
                              ("nnkernel", "nnkernel-loop", "torch-func", "torch-loop") + jax,
                              ("torch-func", "torch-loop"), 1, "steps/s",
                              E * mlp_flops((64, 64, 10), 128), E))
    if "conv" in sections:
        for b in p["conv_batches"]:
            spec = {"kind": "conv", "batch": b, **CONV_NET, "activation": "relu", "loss": "ce",
                    "optimizer": "adam", "lr": 1e-3, **common}
            net = "-".join(map(str, CONV_NET["channels"]))
            cases.append(Case("conv", f"conv {net} +128 1x28x28 N={b}", spec,
                              ("nnkernel", "torch"), ("torch",), b, "samples/s",
                              conv_flops(CONV_NET, b), b))
    return cases
