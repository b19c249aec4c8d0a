"""The transformer section (issue 23): nanoGPT's training step, PyTorch eager and nnkernel.

The model is nanoGPT's `model.py` GPT at its CPU configuration (plan.GPT_CPU): token
and position embeddings, pre-LayerNorm blocks of causal self-attention (one fused
qkv Linear, heads as column blocks, `scaled_dot_product_attention(is_causal=True)`)
and a 4C MLP with tanh-form GELU (nnkernel has no erf), a final LayerNorm and an
lm_head tied to the token embedding; no dropout; AdamW with weight decay on the 2-D
parameters only, as nanoGPT's `configure_optimizers`. Module names follow nanoGPT's,
so its state_dict keys are nanoGPT's. Biases (Linear and LayerNorm) as the case's
"bias" says: plan.GPT_CPU has them, because nk.gpt always has them (nanoGPT's
GPTConfig default; its train.py turns them off), so both sides train one model.
"""

from __future__ import annotations

import numpy as np

from .common import N_BATCHES, Step, cycle, nnkernel_with, step
from .nnkernel_side import nk_backend, nk_train_step
from .torch_side import torch_device, torch_tensors, training_step


def token_batches(case) -> list:
    """N_BATCHES (inputs, next-token targets) pairs of shape (batch, block), int64 ids."""
    rng = np.random.default_rng(case.get("seed", 0))
    ids = [rng.integers(0, case["vocab"], (case["batch"], case["block"] + 1))
           for _ in range(N_BATCHES)]
    return [(a[:, :-1], a[:, 1:]) for a in ids]


@step("gpt", "nnkernel")
def nnkernel_gpt(case):
    """nk.gpt's step as fit runs it (`train_step`): forward, token cross-entropy, backward
    without dx, AdamW decaying the 2-D parameters only (``decay="matrices"``: the embeddings
    and weight matrices, as torch's side decays every p.dim() >= 2)."""
    nk = nnkernel_with("gpt", "issue 23")
    model = nk.gpt(vocab_size=case["vocab"], max_len=case["block"], dim=case["dim"],
                   heads=case["heads"], layers=case["layers"], tie_weights=True, seed=0,
                   dtype=case.get("dtype", "float32"), backend=nk_backend(case))
    opt = nk.optim.AdamW(lr=case["lr"], betas=tuple(case["betas"]),
                         weight_decay=case["weight_decay"], decay="matrices")

    def loss(logits, t, **options):  # the mean over all B·T tokens, as nanoGPT's
        return nk.losses.cross_entropy(logits, t, num_check=False, **options)

    train = nk_train_step(nk, model, opt, case, loss)
    be = model.backend
    data = cycle([(be.asarray(x), be.asarray(t)) for x, t in token_batches(case)])
    return Step(lambda: train(*data()), be.synchronize)


def torch_gpt(torch, case):
    """nanoGPT's GPT as nn.Modules, initialised as nanoGPT does (normal 0.02; the residual
    projections 0.02/√(2L))."""
    nn, F = torch.nn, torch.nn.functional
    C, H, L, bias = case["dim"], case["heads"], case["layers"], case["bias"]

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C, bias=bias)
            self.c_proj = nn.Linear(C, C, bias=bias)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = (z.view(B, T, H, C // H).transpose(1, 2)
                       for z in self.c_attn(x).split(C, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(C, 4 * C, bias=bias)
            self.gelu = nn.GELU(approximate="tanh")
            self.c_proj = nn.Linear(4 * C, C, bias=bias)

        def forward(self, x):
            return self.c_proj(self.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(C, bias=bias), CausalSelfAttention()
            self.ln_2, self.mlp = nn.LayerNorm(C, bias=bias), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(case["vocab"], C), wpe=nn.Embedding(case["block"], C),
                h=nn.ModuleList(Block() for _ in range(L)), ln_f=nn.LayerNorm(C, bias=bias)))
            self.lm_head = nn.Linear(C, case["vocab"], bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # tied
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, 0.0, 0.02 / (2 * L) ** 0.5)
                elif p.dim() == 2:
                    nn.init.normal_(p, 0.0, 0.02)
                elif "ln_" in name and name.endswith("weight"):
                    nn.init.ones_(p)
                else:
                    nn.init.zeros_(p)

        def forward(self, idx):
            t = self.transformer
            x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1], device=idx.device))
            for block in t.h:
                x = block(x)
            return self.lm_head(t.ln_f(x))

    torch.manual_seed(case.get("seed", 0))
    dt = getattr(torch, case.get("dtype", "float32"))
    return GPT().to(device=torch_device(case), dtype=dt)


@step("gpt", "torch")
def _torch_gpt_step(case):
    """nanoGPT's training step: forward, cross-entropy, zero_grad, backward, AdamW."""
    import torch

    model = torch_gpt(torch, case)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2],
               "weight_decay": case["weight_decay"]},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=case["lr"], betas=tuple(case["betas"]))
    V = case["vocab"]

    def loss_fn(logits, t):
        return torch.nn.functional.cross_entropy(logits.view(-1, V), t.reshape(-1))

    pairs = [tuple(torch_tensors(torch, case, x, t)) for x, t in token_batches(case)]
    return training_step(torch, case, model, opt, loss_fn, cycle(pairs))

