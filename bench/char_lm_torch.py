"""The PyTorch side of the character language model comparison (README "A character GPT").

    python bench/char_lm_torch.py --text /path/input.txt --model gpt --threads 1
    python bench/char_lm_torch.py --text /path/input.txt --model lstm --threads 1

The same model, data and settings as

    nnkernel train --dataset TEXT --model gpt --block-size 64 --layers 4 --heads 4 --dim 128
    nnkernel train --dataset TEXT --model lstm --hidden 256 --layers 2

written in plain torch, in its own process:

- text: the file's sorted distinct characters are the ids; the last 10% is held out
  (int(0.9 n) characters train, as nanoGPT and nnkernel split it);
- batches: B = 12 random windows of T = 64 per step, their starts drawn by
  ``numpy.random.default_rng((seed, step, 0)).integers(0, n - T, B)``, nnkernel's draw,
  so both libraries see the same windows in the same order;
- gpt: nanoGPT's model (pre-LayerNorm blocks, fused qkv, tanh GELU as nnkernel's,
  lm_head tied to wte, biases on, dropout 0), GPT-2 init (N(0, 0.02²), residual
  projections N(0, (0.02/√(2·layers))²), biases 0); lstm: Embedding(V, 64) N(0, 1),
  nn.LSTM(64, 256, 2 layers, batch_first), Linear(256, V) Glorot-uniform, bias 0;
- optimizer: torch.optim.AdamW(lr 1e-3, betas (0.9, 0.99), eps 1e-8), weight decay 0.1
  on the weight matrices only (not embeddings, biases, LayerNorm), clip_grad_norm_ 1.0,
  lr factor (t + 1)/100 for t < 100, then 0.1 + 0.9·½(1 + cos(π (t − 100)/(S − 100)));
- scored: every 250 steps the mean loss over 200 evenly spaced non-overlapping windows
  of the held-out tail, and at the end over all of them (what ``nnkernel evaluate``
  reports).

Initial weights come from torch's generator (seed 0): the same distributions as
nnkernel's, not the same numbers. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, C, heads, layers, T):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.heads = heads
        self.register_buffer("mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))
        for lin in (self.c_attn, self.c_fc):
            nn.init.normal_(lin.weight, 0.0, 0.02)
        for lin in (self.c_proj, self.mlp_proj):
            nn.init.normal_(lin.weight, 0.0, 0.02 / math.sqrt(2 * layers))
        for lin in (self.c_attn, self.c_fc, self.c_proj, self.mlp_proj):
            nn.init.zeros_(lin.bias)

    def attn(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        att = att.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(B, T, C))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, V, T, C, heads, layers):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        nn.init.normal_(self.wte.weight, 0.0, 0.02)
        nn.init.normal_(self.wpe.weight, 0.0, 0.02)
        self.blocks = nn.ModuleList(Block(C, heads, layers, T) for _ in range(layers))
        self.ln_f = nn.LayerNorm(C)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # the tied head


class CharLSTM(nn.Module):
    def __init__(self, V, dim, hidden, layers):
        super().__init__()
        self.emb = nn.Embedding(V, dim)  # N(0, 1)
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, V)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids):
        return self.head(self.lstm(self.emb(ids))[0])


def decayed(model) -> set:
    """The weight matrices: parameters of 2+ axes outside the embeddings."""
    skip = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return {id(p) for p in model.parameters() if p.dim() >= 2 and id(p) not in skip}


def factor(t, steps, warmup):
    if t < warmup:
        return (t + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(t - warmup, steps - warmup)
                                             / (steps - warmup)))


def windows(ids, starts, T):
    index = starts[:, None] + np.arange(T + 1)[None, :]
    w = torch.from_numpy(ids[index])
    return w[:, :T], w[:, 1:]


def fixed_starts(n, T, limit=None):
    starts = np.arange(0, n - T, T)
    if limit is not None and len(starts) > limit:
        starts = starts[np.linspace(0, len(starts) - 1, num=limit).round().astype(int)]
    return starts


@torch.no_grad()
def score(model, ids, starts, T, batch=64):
    model.eval()
    total = 0.0
    for i in range(0, len(starts), batch):
        x, y = windows(ids, starts[i:i + batch], T)
        logits = model(x)
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))) \
            * len(starts[i:i + batch])
    model.train()
    return total / len(starts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--text", required=True)
    p.add_argument("--model", choices=("gpt", "lstm"), default="gpt")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    B, T, warmup, interval, lr = 12, 64, 100, 250, 1e-3
    text = open(a.text, encoding="utf-8").read()
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = np.array([lookup[c] for c in text], dtype=np.int64)
    n_train = int(len(ids) * 0.9)
    train, val = ids[:n_train], ids[n_train:]
    model = (GPT(len(vocab), T, 128, 4, 4) if a.model == "gpt"
             else CharLSTM(len(vocab), 64, 256, 2))
    chosen = decayed(model)
    groups = [{"params": [q for q in model.parameters() if id(q) in chosen], "weight_decay": 0.1},
              {"params": [q for q in model.parameters() if id(q) not in chosen],
               "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), eps=1e-8)
    val_some = fixed_starts(len(val), T, 200)
    start, t0, loss_sum, seen = time.perf_counter(), time.perf_counter(), 0.0, 0
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr * factor(step, a.steps, warmup)
        starts = np.random.default_rng((a.seed, step, 0)).integers(0, len(train) - T, size=B)
        x, y = windows(train, starts, T)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_sum, seen = loss_sum + loss.item(), seen + 1
        if (step + 1) % interval == 0 or step + 1 == a.steps:
            seconds = time.perf_counter() - t0
            v = score(model, val, val_some, T)
            print(f"step {step + 1}/{a.steps}  loss {loss_sum / seen:.4f} "
                  f"({loss_sum / seen / math.log(2):.3f} bpc)  val_loss {v:.4f} "
                  f"({v / math.log(2):.3f} bpc)  {seconds:.1f}s", flush=True)
            t0, loss_sum, seen = time.perf_counter(), 0.0, 0
    train_seconds = time.perf_counter() - start
    final = score(model, val, fixed_starts(len(val), T), T)
    print(json.dumps({"library": f"torch {torch.__version__}", "model": a.model,
                      "parameters": sum(q.numel() for q in model.parameters()),
                      "steps": a.steps, "threads": a.threads, "train_seconds": train_seconds,
                      "val_loss": final, "val_bpc": final / math.log(2)}))


if __name__ == "__main__":
    main()
