"""nk.RNN / LSTM / GRU against torch.nn.RNN / LSTM / GRU autograd in float64 (rtol 1e-8).

nnkernel draws the weights; torch gets them as W_ih = Wxᵀ, W_hh = Whᵀ, b_ih = b,
b_hh = 0 (the GRU's n block of b_hh = b_hn). Both run the same batch with an
initial state, variable lengths (torch through pack_padded_sequence) and a loss
on the outputs and on the final state, L = Σ y ⊙ R + Σ h_n ⊙ S (+ Σ c_n ⊙ S_c).
Compared: outputs, final states, dx, dL/d initial state and every weight
gradient (torch's dL/db_ih = dL/db_hh = our dL/db; the GRU's n blocks apart).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import host, make, torch_or_skip
from cupy_double import fake_cupy  # noqa: F401 - the fixture

import nnkernel as nk

torch = torch_or_skip()
RTOL, ATOL = 1e-8, 1e-12
B, T, N_IN, H = 4, 5, 3, 4
TORCH = {nk.RNN: torch.nn.RNN, nk.LSTM: torch.nn.LSTM, nk.GRU: torch.nn.GRU}
CELLS = {
    "rnn_tanh": lambda **kw: nk.RNN(N_IN, H, **kw),
    "rnn_relu": lambda **kw: nk.RNN(N_IN, H, activation="relu", **kw),
    "lstm": lambda **kw: nk.LSTM(N_IN, H, **kw),
    "gru": lambda **kw: nk.GRU(N_IN, H, **kw),
}


def torch_twin(layer, params, num_layers=1):
    """torch's module with our weights; ``params``: (layer, {name: host array}) per layer."""
    extra = {"nonlinearity": layer.activation} if isinstance(layer, nk.RNN) else {}
    module = TORCH[type(layer)](layer.n_in, layer.hidden, num_layers=num_layers,
                                batch_first=True, bidirectional=layer.bidirectional,
                                **extra).double()
    with torch.no_grad():
        for index, p in enumerate(params):
            for s, ts in zip(layer.suffixes, ("", "_reverse"), strict=False):
                names = {n: getattr(module, f"{n}_l{index}{ts}")
                         for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
                names["weight_ih"].copy_(torch.tensor(p["Wx" + s].T))
                names["weight_hh"].copy_(torch.tensor(p["Wh" + s].T))
                names["bias_ih"].copy_(torch.tensor(p["b" + s]))
                b_hh = np.zeros(names["bias_hh"].shape)
                if isinstance(layer, nk.GRU):
                    b_hh[2 * layer.hidden:] = p["b_hn" + s]
                names["bias_hh"].copy_(torch.tensor(b_hh))
    return module


def torch_grads(layer, module, index=0):
    """The torch gradients in nnkernel's names and layout."""
    out, H_ = {}, layer.hidden
    for s, ts in zip(layer.suffixes, ("", "_reverse"), strict=False):
        g = {n: getattr(module, f"{n}_l{index}{ts}").grad.numpy()
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        out["Wx" + s], out["Wh" + s] = g["weight_ih"].T, g["weight_hh"].T
        if isinstance(layer, nk.GRU):
            np.testing.assert_allclose(g["bias_ih"][:2 * H_], g["bias_hh"][:2 * H_])
            out["b" + s], out["b_hn" + s] = g["bias_ih"], g["bias_hh"][2 * H_:]
        else:
            np.testing.assert_allclose(g["bias_ih"], g["bias_hh"])
            out["b" + s] = g["bias_ih"]
    return out


def close(ours, theirs, what):
    np.testing.assert_allclose(host(ours), theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def torch_run(module, x, lengths, state, sequences):
    """torch's forward on a padded batch: (y, final state tuple)."""
    if lengths is not None:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                                    enforce_sorted=False)
    out, final = module(x, state if len(state) > 1 else state[0])
    if lengths is not None:
        out = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)[0]
    final = final if isinstance(final, tuple) else (final,)
    if not sequences:  # our y is each direction's final h, side by side
        out = torch.cat(list(final[0]), dim=-1)
    return out, final


# every cell both ways, with and without lengths, all steps out; the last step out for LSTM and
# GRU in each of those cases and for the RNNs in the hardest one (bidirectional, lengths)
CASES = [pytest.param(cell, bi, lengths, seq, id=f"{cell}-{'bi' if bi else 'uni'}-"
                      f"{'lengths' if lengths else 'full'}-{'sequences' if seq else 'last'}")
         for cell in CELLS for bi in (False, True) for lengths in (None, [5, 1, 3, 4])
         for seq in (True, False) if seq or not cell.startswith("rnn") or (bi and lengths)]


@pytest.mark.parametrize(("cell", "bidirectional", "lengths", "sequences"), CASES)
def test_layer_equals_torch(backend, cell, bidirectional, lengths, sequences):
    compare_with_torch(backend, cell, bidirectional, lengths, sequences)


@pytest.mark.usefixtures("fake_cupy")
@pytest.mark.parametrize("cell", list(CELLS))
def test_layer_equals_torch_on_the_cupy_double(cell):
    compare_with_torch("cupy", cell, True, [5, 1, 3, 4], True)
    compare_with_torch("cupy", cell, True, None, False)


def compare_with_torch(backend, cell, bidirectional, lengths, sequences):
    layer = CELLS[cell](bidirectional=bidirectional, return_sequences=sequences)
    model = nk.Sequential(layer, dtype="float64", backend=backend, seed=11)
    params = {n: host(model.params[f"0.{n}"]) for n in layer.param_names}
    rng = np.random.default_rng(12)
    D, parts = layer.directions, len(layer.state_parts)
    x = rng.standard_normal((B, T, N_IN))
    state = [rng.standard_normal((D, B, H)) for _ in range(parts)]
    R = rng.standard_normal((B, T, D * H) if sequences else (B, D * H))
    S = [rng.standard_normal((D, B, H)) for _ in range(parts)]

    be = model.backend
    public = (lambda a: tuple(a)) if parts > 1 else (lambda a: a[0])
    y, final, backprop = layer.apply(
        {n: make(be, v) for n, v in params.items()}, make(be, x),
        lengths=None if lengths is None else np.array(lengths),
        initial_state=public([make(be, s) for s in state]))
    dx, d_initial, grads = backprop(make(be, R), public([make(be, s) for s in S]))

    module = torch_twin(layer, [params])
    tx = torch.tensor(x, requires_grad=True)
    tstate = tuple(torch.tensor(s, requires_grad=True) for s in state)
    ty, tfinal = torch_run(module, tx, lengths, tstate, sequences)
    loss = (ty * torch.tensor(R)).sum() + sum((f * torch.tensor(s)).sum()
                                              for f, s in zip(tfinal, S, strict=True))
    loss.backward()

    final = final if parts > 1 else (final,)
    d_initial = d_initial if parts > 1 else (d_initial,)
    close(y, ty.detach().numpy(), "y")
    for j in range(parts):
        close(final[j], tfinal[j].detach().numpy(), f"final {layer.state_parts[j]}")
        close(d_initial[j], tstate[j].grad.numpy(), f"d initial {layer.state_parts[j]}")
    close(dx, tx.grad.numpy(), "dx")
    expected = torch_grads(layer, module)
    assert set(grads) == set(expected) == set(layer.param_names)
    for name, g in expected.items():
        close(grads[name], g, name)


def test_a_stacked_bidirectional_lstm_model_equals_torch(backend):
    """nk.Sequential(LSTM, LSTM, Dense) = torch.nn.LSTM(num_layers=2) and a Linear on h_n."""
    first = nk.LSTM(N_IN, H, bidirectional=True, return_sequences=True)
    second = nk.LSTM(2 * H, H, bidirectional=True)
    model = nk.Sequential(first, second, nk.Dense(2 * H, 3), dtype="float64",
                          backend=backend, seed=13)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((B, T, N_IN))
    lengths = np.array([5, 2, 4, 3])
    y = model.forward(make(model.backend, x), train=True, lengths=lengths)
    dy = rng.standard_normal((B, 3))
    dx = model.backward(make(model.backend, dy))

    per_layer = [{n: host(model.params[f"{i}.{n}"]) for n in first.param_names} for i in (0, 1)]
    lstm = torch_twin(first, per_layer[:1])
    upper = torch_twin(second, per_layer[1:])  # torch's layer 1 has n_in = 2H: its own module
    stacked = torch.nn.LSTM(N_IN, H, num_layers=2, batch_first=True, bidirectional=True).double()
    with torch.no_grad():
        for name, p in stacked.named_parameters():
            src = lstm if "_l0" in name else upper
            p.copy_(getattr(src, name.replace("_l1", "_l0")))
    head = torch.nn.Linear(2 * H, 3).double()
    with torch.no_grad():
        head.weight.copy_(torch.tensor(host(model.params["2.W"]).T))
        head.bias.copy_(torch.tensor(host(model.params["2.b"])))
    tx = torch.tensor(x, requires_grad=True)
    packed = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths), batch_first=True,
                                                     enforce_sorted=False)
    _, (h_n, _) = stacked(packed)
    ty = head(torch.cat([h_n[-2], h_n[-1]], dim=-1))
    (ty * torch.tensor(dy)).sum().backward()

    close(y, ty.detach().numpy(), "y")
    close(dx, tx.grad.numpy(), "dx")
    close(model.grads["2.W"], head.weight.grad.numpy().T, "head W")
    for i, layer in ((0, first), (1, second)):
        for name, g in torch_grads(layer, stacked, index=i).items():
            close(model.grads[f"{i}.{name}"], g, f"layer {i} {name}")
