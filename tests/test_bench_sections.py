"""The transformer and recurrent sections of `nnkernel bench` (issues 23, 24) and the registry
that adds a case: the torch sides are the models the issues name, the FLOP counts are the ones
torch's own FlopCounterMode counts, and the nnkernel sides build and run (a side whose layer
is missing says "not available": no number is made up)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import torch_or_skip

import nnkernel as nk
from nnkernel import bench
from nnkernel.bench.plan import GPT_CPU, LSTM_CASE, gpt_flops, lstm_flops
from nnkernel.bench.workers import BenchWorker, calibrate, make_step, time_round
from nnkernel.bench.workers.common import BUILDERS

SMALL_GPT = {**GPT_CPU, "layers": 2, "heads": 2, "dim": 16, "block": 8, "batch": 3,
             "vocab": 11, "dtype": "float32"}
SMALL_LSTM = {**LSTM_CASE, "hidden": 8, "seq": 5, "batch": 3, "features": 4, "classes": 3,
              "dtype": "float32"}


def test_the_sections_are_the_issues_configurations():
    (gpt,) = bench.plan(["transformer"], bench.QUICK, "float32", "cpu")
    s = gpt.spec
    assert (s["layers"], s["heads"], s["dim"], s["block"], s["batch"], s["vocab"]) == \
        (4, 4, 128, 64, 12, 65)
    assert gpt.impls == ("nnkernel", "torch") and gpt.refs == ("torch",)
    assert gpt.items == 12 * 64 and gpt.unit == "tokens/s" and gpt.flops == gpt_flops(s)
    (lstm,) = bench.plan(["recurrent"], bench.FULL, "float64", "gpu")
    s = lstm.spec
    assert (s["layers"], s["hidden"], s["seq"], s["batch"], s["bidirectional"]) == \
        (2, 256, 64, 32, True)
    assert s["dtype"] == "float64" and s["device"] == "gpu" and lstm.flops == lstm_flops(s)
    assert bench.SECTIONS[-2:] == ("transformer", "recurrent")


def test_gpt_flops_are_what_torch_counts():
    """FlopCounterMode over the torch side's forward and backward (attention by the math
    backend, whose matmuls it sees) counts exactly gpt_flops."""
    torch = torch_or_skip()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from nnkernel.bench.workers.transformer import token_batches, torch_gpt

    for cfg in (SMALL_GPT, {**GPT_CPU, "dtype": "float32"}):
        model = torch_gpt(torch, cfg)
        x, t = (torch.as_tensor(a) for a in token_batches(cfg)[0])
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            logits = model(x)
            torch.nn.functional.cross_entropy(logits.view(-1, cfg["vocab"]),
                                              t.reshape(-1)).backward()
        assert counter.get_total_flops() == gpt_flops(cfg)


def test_the_torch_gpt_is_nanogpts():
    torch = torch_or_skip()
    from nnkernel.bench.workers.transformer import torch_gpt

    model = torch_gpt(torch, {**GPT_CPU, "bias": False, "dtype": "float32"})
    C, L, V, T = 128, 4, 65, 64
    # nanoGPT's count for this configuration: 12·C² per block, LayerNorm weights, wte
    # (tied with lm_head), wpe; no biases
    assert sum(p.numel() for p in model.parameters()) == L * (12 * C * C + 2 * C) + C + V * C \
        + T * C
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "transformer.h.3.attn.c_attn.weight" in model.state_dict()
    gelu = model.transformer.h[0].mlp.gelu
    assert gelu.approximate == "tanh"
    proj = model.transformer.h[0].attn.c_proj.weight
    assert float(proj.detach().std()) == pytest.approx(0.02 / (2 * L) ** 0.5, rel=0.1)
    ids = torch.randint(0, V, (2, T))
    later = ids.clone()
    later[:, 40:] = (later[:, 40:] + 1) % V
    with torch.no_grad():
        a, b = model(ids), model(later)
    assert torch.equal(a[:, :40], b[:, :40])  # causal: the future does not reach the past
    assert not torch.equal(a[:, 40:], b[:, 40:])


def unrolled_lstm(torch, lstm, x):
    """torch.nn.LSTM (bidirectional, batch_first) by hand from its weights: each layer's input
    projection of all steps as one GEMM, then h·W_hhᵀ step by step (gates i, f, g, o)."""
    F, H = torch.nn.functional, lstm.hidden_size
    for layer in range(lstm.num_layers):
        outs = []
        for suffix, steps in (("", range(x.shape[1])), ("_reverse", range(x.shape[1])[::-1])):
            w = {k: getattr(lstm, f"{k}_l{layer}{suffix}") for k in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            gx = F.linear(x, w["weight_ih"], w["bias_ih"])
            # h0 needs its gradient, so every one of the T steps' dh is computed and counted
            h = torch.zeros(x.shape[0], H, dtype=x.dtype, requires_grad=True)
            c = torch.zeros(x.shape[0], H, dtype=x.dtype)
            hs = [None] * x.shape[1]
            for t in steps:
                i, f, g, o = (gx[:, t] + F.linear(h, w["weight_hh"], w["bias_hh"])).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                hs[t] = h
            outs.append(torch.stack(hs, 1))
        x = torch.cat(outs, 2)
    return x


def test_the_torch_lstm_and_lstm_flops_are_what_an_unrolled_lstm_computes():
    torch = torch_or_skip()
    from torch.utils.flop_counter import FlopCounterMode

    from nnkernel.bench.workers.recurrent import sequence_batches, torch_lstm

    model = torch_lstm(torch, {**SMALL_LSTM, "dtype": "float64"})
    x, t = (torch.as_tensor(a) for a in sequence_batches({**SMALL_LSTM, "dtype": "float64"})[0])
    H = SMALL_LSTM["hidden"]
    with FlopCounterMode(display=False) as counter:
        out = unrolled_lstm(torch, model.lstm, x)
        final = torch.cat([out[:, -1, :H], out[:, 0, H:]], dim=1)  # each direction's last step
        torch.nn.functional.cross_entropy(model.head(final), t).backward()
    assert counter.get_total_flops() == lstm_flops(SMALL_LSTM)
    assert model.lstm.bidirectional and model.lstm.num_layers == 2
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), model.head(final).numpy(),
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, cfg", [("gpt", SMALL_GPT), ("lstm", SMALL_LSTM)])
def test_the_torch_side_builds_and_trains(kind, cfg):
    torch_or_skip()
    step = make_step({"kind": kind, "impl": "torch", **cfg})
    assert calibrate(step, 0.0, 0.001) >= 1
    assert time_round(step, 1) > 0


@pytest.mark.parametrize("kind, cfg, attr", [("gpt", SMALL_GPT, "gpt"),
                                             ("lstm", SMALL_LSTM, "LSTM")])
def test_the_nnkernel_side_runs_once_the_model_exists(kind, cfg, attr):
    """Until nk.gpt / nk.LSTM exist the nnkernel side is not available (and the worker says so
    instead of timing anything); from then on it must build and train."""
    case = {"kind": kind, "impl": "nnkernel", **cfg}
    if hasattr(nk, attr):
        step = make_step(case)
        assert calibrate(step, 0.0, 0.001) >= 1 and time_round(step, 1) > 0
        return
    with pytest.raises(bench.Unavailable, match=f"nk.{attr}"):
        make_step(case)
    answer = BenchWorker("nnkernel")({"cmd": "setup", "id": "a", "case": case})
    assert answer == {"unavailable": f"this nnkernel has no nk.{attr} yet "
                                     f"({'issue 23' if attr == 'gpt' else 'issue 24'})"}


def test_the_registry_refuses_a_second_builder_and_names_what_a_kind_has():
    make_step({"kind": "matmul", "impl": "nnkernel", "n": 4})  # loads every step module
    with pytest.raises(ValueError, match="two step builders"):
        bench.step("matmul", "nnkernel")(lambda case: None)
    assert BUILDERS[("matmul", "nnkernel")].__name__ != "<lambda>"
    with pytest.raises(ValueError, match="no 'numpy-loop' step for the 'gpt' workload.*torch"):
        make_step({"kind": "gpt", "impl": "numpy-loop", **SMALL_GPT})
    with pytest.raises(ValueError, match="unknown implementation"):
        make_step({"kind": "gpt", "impl": "tensorflow"})


def test_both_gpt_sides_train_one_model_with_one_decay_selection():
    """nk.gpt and the torch side have the same parameters (biases included, the head tied),
    and AdamW decays the same ones: every 2-D weight (torch: p.dim() >= 2; nnkernel:
    decay="matrices")."""
    torch = torch_or_skip()
    from nnkernel.bench.workers.transformer import torch_gpt

    cfg = {**GPT_CPU, "dtype": "float32"}
    theirs = torch_gpt(torch, cfg)
    ours = nk.gpt(vocab_size=cfg["vocab"], max_len=cfg["block"], dim=cfg["dim"],
                  heads=cfg["heads"], layers=cfg["layers"])
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    opt = nk.optim.AdamW(lr=1e-3, weight_decay=0.1, decay="matrices")
    decayed = sum(int(np.prod(v.shape)) for k, v in ours.params.items()
                  if opt.decays(k, v.shape))
    assert decayed == sum(p.numel() for p in theirs.parameters() if p.dim() >= 2)
