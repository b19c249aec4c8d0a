"""What `nnkernel bench` measures: the sections, their cases and the FLOPs of each step.

A section is a function decorated ``@section(name)`` that returns its cases from the
size lists (FULL or QUICK) and ``common`` (dtype, device); SECTIONS lists them in
order. FLOP counts are the real matrix-product FLOPs of one step (2 per
multiply-add), the numerator of a row's GF/s and % of the GEMM ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass

# The conv section's network: `nnkernel train --conv 32,64 --hidden 128` on 1x28x28 images.
CONV_NET = {"image": [1, 28, 28], "channels": [32, 64], "hidden": [128], "classes": 10}
MLP_SIZES = (784, 512, 512, 10)
# nanoGPT's CPU configuration (its README: shakespeare_char on a CPU), AdamW as its config;
# with biases (GPTConfig's default) because nk.gpt has them: both sides train one model
GPT_CPU = {"layers": 4, "heads": 4, "dim": 128, "block": 64, "batch": 12, "vocab": 65,
           "bias": True, "optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.99],
           "weight_decay": 0.1}
LSTM_CASE = {"layers": 2, "hidden": 256, "seq": 64, "batch": 32, "features": 64,
             "classes": 10, "bidirectional": True, "optimizer": "adam", "lr": 1e-3}
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
PLANS: dict = {}  # section name -> plan function, in the order SECTIONS lists them


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


def section(name: str):
    """Register ``cases(p, common) -> list[Case]`` as the plan of section ``name``."""
    def register(fn):
        PLANS[name] = fn
        return fn

    return register


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


def gpt_flops(cfg: dict) -> float:
    """Matmul FLOPs of one GPT training step, M = batch·block tokens:
    per layer forward 2·M·C·(3C + C + 4C + 4C) (qkv, projection, MLP) + 2·2·B·T²·C (QKᵀ and
    PV over all heads, the causal half included, as a matmul computes it), then the lm_head
    2·M·C·V; the backward twice the forward (every input needs its gradient down to the
    embeddings). Equals nanoGPT's estimate_mfu count, 6·N + 12·L·C·T per token, with N the
    matmul weights."""
    B, T, C, L, V = cfg["batch"], cfg["block"], cfg["dim"], cfg["layers"], cfg["vocab"]
    M = B * T
    layer = 2.0 * M * C * 12 * C + 4.0 * B * T * T * C
    return 3.0 * (L * layer + 2.0 * M * C * V)


def lstm_flops(cfg: dict) -> float:
    """Matmul FLOPs of one bidirectional LSTM training step, M = batch·seq:
    per layer and direction, forward 2·M·4H·(I + H) (input and recurrent projections),
    backward twice that (dW and dX of each), except the first layer's dX of its input;
    I = features for layer 1, 2H above; then the head 6·batch·2H·classes."""
    M, H, N = cfg["batch"] * cfg["seq"], cfg["hidden"], cfg["batch"]
    total, n_in = 0.0, cfg["features"]
    for layer in range(cfg["layers"]):
        per_direction = 6.0 * M * 4 * H * (n_in + H) - (2.0 * M * 4 * H * n_in if layer == 0
                                                          else 0.0)
        total += 2 * per_direction
        n_in = 2 * H
    return total + 6.0 * N * 2 * H * cfg["classes"]


def _mlp_case(name, label, sizes, batch, x, common, **extra):
    spec = {"kind": "mlp", "sizes": list(sizes), "batch": batch, "activation": "relu",
            "loss": "ce", "optimizer": "adam", "lr": 1e-3, **common, **extra}
    jax = _jax(common) if name in ("mlp", "tiny") else ()
    return Case(name, label, spec, ("nnkernel", "torch", "numpy-loop") + jax,
                ("torch", "numpy-loop"), batch, "samples/s", mlp_flops(sizes, batch), x)


def _jax(common) -> tuple:
    return ("jax", "jax-compiled") if common["device"] == "cpu" else ()  # no CUDA jaxlib here


@section("kernels")
def kernel_cases(p, common):
    duo, ref, cases = ("nnkernel", "torch"), ("torch",), []
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
    return cases


@section("mlp")
def mlp_cases(p, common):
    return [_mlp_case("mlp", f"784-512-512-10 N={b}", MLP_SIZES, b, b, common)
            for b in p["batches"]]


@section("tiny")
def tiny_cases(p, common):
    return [_mlp_case("tiny", f"2-16-1 tanh mse {opt} N=64", (2, 16, 1), 64, None, common,
                      activation="tanh", loss="mse", optimizer=opt, lr=lr)
            for opt, lr in (("sgd", 0.1), ("adam", 1e-3))]


@section("width")
def width_cases(p, common):
    return [_mlp_case("width", f"784-{w}-{w}-10 N=256", (784, w, w, 10), 256, w, common)
            for w in p["widths"]]


@section("depth")
def depth_cases(p, common):
    return [_mlp_case("depth", f"{d} hidden x512 N=256", (784,) + (512,) * d + (10,), 256, d,
                      common) for d in p["depths"]]


@section("ensemble")
def ensemble_cases(p, common):
    cases = []
    for E in p["members"]:
        spec = {"kind": "ensemble", "members": E, "sizes": [64, 64, 10], "batch": 128,
                "activation": "relu", "loss": "ce", "optimizer": "adam", "lr": 1e-3, **common}
        cases.append(Case("ensemble", f"E={E} 64-64-10 N=128", spec,
                          ("nnkernel", "nnkernel-loop", "torch-func", "torch-loop")
                          + _jax(common), ("torch-func", "torch-loop"), 1, "steps/s",
                          E * mlp_flops((64, 64, 10), 128), E))
    return cases


@section("conv")
def conv_cases(p, common):
    net = "-".join(map(str, CONV_NET["channels"]))
    return [Case("conv", f"conv {net} +128 1x28x28 N={b}",
                 {"kind": "conv", "batch": b, **CONV_NET, "activation": "relu", "loss": "ce",
                  "optimizer": "adam", "lr": 1e-3, **common},
                 ("nnkernel", "torch"), ("torch",), b, "samples/s", conv_flops(CONV_NET, b), b)
            for b in p["conv_batches"]]


@section("transformer")
def transformer_cases(p, common):
    c = GPT_CPU
    label = (f"gpt L{c['layers']} H{c['heads']} C{c['dim']} T{c['block']} N{c['batch']} "
             f"V{c['vocab']}")
    return [Case("transformer", label, {"kind": "gpt", **c, **common}, ("nnkernel", "torch"),
                 ("torch",), c["batch"] * c["block"], "tokens/s", gpt_flops(c))]


@section("recurrent")
def recurrent_cases(p, common):
    c = LSTM_CASE
    label = f"bilstm {c['layers']}x{c['hidden']} T{c['seq']} N{c['batch']} F{c['features']}"
    return [Case("recurrent", label, {"kind": "lstm", **c, **common}, ("nnkernel", "torch"),
                 ("torch",), c["batch"], "sequences/s", lstm_flops(c))]


SECTIONS = tuple(PLANS)


def plan(sections, p: dict, dtype: str, device: str) -> list[Case]:
    """The cases of each section, in order, from the size lists ``p`` (FULL or QUICK)."""
    common = {"dtype": dtype, "device": device}
    return [case for name in SECTIONS if name in sections for case in PLANS[name](p, common)]
