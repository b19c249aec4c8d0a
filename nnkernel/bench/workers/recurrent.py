"""The recurrent section (issue 24): a 2-layer bidirectional LSTM's training step.

The network (plan.LSTM_CASE): float sequences (batch, T, features) into a
bidirectional LSTM of ``layers`` layers and ``hidden`` units per direction
(torch.nn.LSTM, batch_first, gate order i, f, g, o), a Linear head from the last
time step's 2·hidden outputs to ``classes`` logits; softmax cross-entropy, Adam.
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
    """nk.LSTM's step as fit runs it. NOT AVAILABLE until nk.LSTM exists (issue 24). The
    model below assumes an interface (nk.LSTM(n_in, hidden, layers=, bidirectional=,
    return_sequences=False) on (N, T, F) inputs): the layer's author adjusts it when it
    lands; tests/test_bench_sections.py runs this then."""
    nk = nnkernel_with("LSTM", "issue 24")
    H = case["hidden"]
    model = nk.Sequential(
        nk.LSTM(case["features"], H, layers=case["layers"], bidirectional=True,
                return_sequences=False),
        nk.Dense(2 * H, case["classes"]),
        seed=0, dtype=case.get("dtype", "float32"), backend=nk_backend(case))
    train = nk_train_step(nk, model, nk_optimizer(nk, case), case)
    be = model.backend
    data = cycle([(be.asarray(x), be.asarray(t)) for x, t in sequence_batches(case)])
    return Step(lambda: train(*data()), be.synchronize)


def torch_lstm(torch, case):
    """torch.nn.LSTM (bidirectional) and a Linear head on the last step's outputs."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(case["features"], case["hidden"], num_layers=case["layers"],
                                bidirectional=True, batch_first=True)
            self.head = nn.Linear(2 * case["hidden"], case["classes"])

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

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
