"""The recurrent section (issue 24): a 2-layer bidirectional LSTM's training step.

The network (plan.LSTM_CASE): float sequences (batch, T, features) into a
bidirectional LSTM of ``layers`` layers and ``hidden`` units per direction
(torch.nn.LSTM, batch_first, gate order i, f, g, o), a Linear head from the last
layer's final states of both directions (2·hidden) to ``classes`` logits; softmax
cross-entropy, Adam.
"""

from __future__ import annotations

import numpy as np

from .common import N_BATCHES, Step, cycle, nnkernel_with, step
from .nnkernel_side import nk_backend, nk_optimizer, nk_train_step
from .torch_side import torch_device, torch_optimizer, torch_tensors, training_step


def sequence_batches(case) -> list:
    """N_BATCHES (inputs (batch, seq, features), labels (batch,)) pairs, as NumPy."""
    rng = np.random.default_rng(case.get("seed", 0))
    dt = np.dtype(case.get("dtype", "float32"))
    shape = (case["batch"], case["seq"], case["features"])
    return [(rng.standard_normal(shape).astype(dt), rng.integers(0, case["classes"],
                                                                  case["batch"]))
            for _ in range(N_BATCHES)]


@step("lstm", "nnkernel")
def nnkernel_lstm(case):
    """nk.LSTM's step as fit runs it: ``layers`` bidirectional nk.LSTM layers stacked (each
    but the last returning every step), the last giving both directions' final states."""
    nk = nnkernel_with("LSTM", "issue 24")
    H, n = case["hidden"], case["layers"]
    stack = [nk.LSTM(case["features"] if i == 0 else 2 * H, H, bidirectional=True,
                     return_sequences=i < n - 1) for i in range(n)]
    model = nk.Sequential(*stack, nk.Dense(2 * H, case["classes"]), seed=0,
                          dtype=case.get("dtype", "float32"), backend=nk_backend(case))
    train = nk_train_step(nk, model, nk_optimizer(nk, case), case)
    be = model.backend
    data = cycle([(be.asarray(x), be.asarray(t)) for x, t in sequence_batches(case)])
    return Step(lambda: train(*data()), be.synchronize)


def torch_lstm(torch, case):
    """torch.nn.LSTM (bidirectional) and a Linear head on its last layer's final states."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(case["features"], case["hidden"], num_layers=case["layers"],
                                bidirectional=True, batch_first=True)
            self.head = nn.Linear(2 * case["hidden"], case["classes"])

        def forward(self, x):
            _, (h_n, _) = self.lstm(x)  # the last layer's final states, both directions
            return self.head(torch.cat([h_n[-2], h_n[-1]], dim=-1))

    torch.manual_seed(case.get("seed", 0))
    dt = getattr(torch, case.get("dtype", "float32"))
    return Net().to(device=torch_device(case), dtype=dt)


@step("lstm", "torch")
def _torch_lstm_step(case):
    import torch

    model = torch_lstm(torch, case)
    opt = torch_optimizer(torch, case, model.parameters())
    pairs = [tuple(torch_tensors(torch, case, x, t)) for x, t in sequence_batches(case)]
    return training_step(torch, case, model, opt, torch.nn.functional.cross_entropy,
                         cycle(pairs))
