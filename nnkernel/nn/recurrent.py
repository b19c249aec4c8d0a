"""Recurrent layers: `RNN`, `LSTM`, `GRU` on batch-first sequences (B, T, n_in), with BPTT by hand.

    nk.Sequential(nk.LSTM(64, 256, bidirectional=True, return_sequences=True),
                  nk.LSTM(512, 256, bidirectional=True),      # the last step: (B, 512)
                  nk.Dense(512, 10))
    y = model.forward(x, train=True, lengths=lengths)         # lengths (B,): padded steps

Parameters, per direction, as nnkernel's Dense stores weights (in, out) and with
torch's gate order (LSTM i, f, g, o; GRU r, z, n): ``Wx`` (n_in, G·H) = W_ihᵀ,
``Wh`` (H, G·H) = W_hhᵀ, ``b`` (G·H,) = b_ih + b_hh. The GRU's reset gate
multiplies the hidden side of its n gate, bias included, n = tanh(x W_in + b_in +
r ⊙ (h W_hn + b_hn)), so that bias cannot be summed with b_in: the GRU's ``b``
holds b_ir + b_hr, b_iz + b_hz and b_in, and ``b_hn`` (H,) holds b_hn apart. A
bidirectional layer has the same names with "_reverse" for the backward direction
and outputs [forward, backward] along the last axis (2H). Initialisation is
torch's: U(−1/√H, 1/√H) for each weight and for b_ih and b_hh (b is their sum).

``return_sequences=True`` gives every step's output (B, T, D·H); otherwise the
final state of each direction (B, D·H): the forward direction's output at each
sequence's last step and the backward direction's after reading back to t = 0
(torch's h_n; Keras's Bidirectional). The cells' time loops are in
`nnkernel.nn.rnn_cells`, their per-step element-wise work in
``nnkernel/kernels/*/recurrent.py``.

Variable lengths: ``lengths`` (B,) integers, a side input (``model.forward(x,
lengths=...)``). Steps t ≥ lengths[b] are padding: the state carries through them,
their outputs are 0 and they change neither the outputs nor any gradient. Host
lengths (NumPy, lists) are checked to lie in 0..T; lengths already on the device
are not read back (that would be a host sync per layer), and act as clipped to 0..T.

State in and out — the choice. Inside a Sequential each layer gets one x and
gives one y, so a state cannot travel as a second output. The state goes beside
it instead, in a `RecurrentState` passed as the side input ``initial_state``: each
recurrent layer starts from ``state.initial[<its path>]`` (zeros where absent),
writes its final state to ``state.final[<its path>]`` and, in backward, dL/d(its
initial state) to ``state.grads[<its path>]``. ``state.next()`` starts the next
window from this one's final states: truncated BPTT over a long sequence cut
into windows, with no gradient crossing a window's start. A state is ``h`` (D, B, H)
for RNN and GRU and ``(h, c)`` for LSTM, D = 2 if bidirectional (torch's h_n of
one layer). The functional entry point `Recurrent.apply` (parameters and arrays
in, no model) returns the final state as well and takes dL/d(final state) in
backward, for a loss that reads the state itself.

Ensembles (a leading E axis) are not supported: building one raises ConfigError.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import device as device_of

from ..errors import ConfigError, DTypeError, ShapeError
from . import rnn_cells as cells
from .layer import Layer, positive_int, register_layer


class RecurrentState:
    """Recurrent layers' states by layer path ("0", "2.1", ...), carried across calls.

    ``initial``: where each layer starts (absent: zeros); ``final`` and ``grads``
    (dL/d initial state) are filled by the model's forward and backward.
    """

    def __init__(self, initial: dict | None = None):
        if initial is not None and not isinstance(initial, dict):
            raise ConfigError(f"RecurrentState takes a dict {{layer path: state}}, got "
                              f"{type(initial).__name__}")
        self.initial = dict(initial or {})
        self.final: dict = {}
        self.grads: dict = {}

    def next(self) -> RecurrentState:
        """A state starting where this one's forward ended (the next window of a sequence)."""
        return RecurrentState(self.final)

    def __getitem__(self, rows):
        # Sequential.predict(batch_size=...) slices side inputs by rows: a state cannot be
        # carried through that (each slice's final state would be lost), so say so.
        raise ConfigError("a RecurrentState cannot be split into batches: call "
                          "model(x, initial_state=...) on the whole batch")

    def __repr__(self):
        return (f"RecurrentState(initial={sorted(self.initial)}, final={sorted(self.final)}, "
                f"grads={sorted(self.grads)})")


def keep_mask(xp, lengths, B: int, T: int, like):
    """(B, T, 1) booleans, True where t < lengths[b]; None when there are no lengths."""
    if lengths is None:
        return None
    if isinstance(lengths, (list, tuple, np.ndarray)):
        host = np.asarray(lengths)
        if host.dtype.kind not in "iu":
            raise DTypeError(f"lengths must be integers, got dtype {host.dtype}")
        if host.shape != (B,):
            raise ShapeError(f"lengths has shape {host.shape}; it needs one length per "
                             f"sequence, ({B},)")
        if host.size and (host.min() < 0 or host.max() > T):
            raise ShapeError(f"lengths must lie in 0..{T} (the number of time steps), got "
                             f"{host.min()}..{host.max()}")
        lengths = xp.asarray(host.astype(np.int64), device=device_of(like))
    else:
        if tuple(lengths.shape) != (B,):
            raise ShapeError(f"lengths has shape {tuple(lengths.shape)}; it needs one length "
                             f"per sequence, ({B},)")
        if not xp.isdtype(lengths.dtype, "integral"):
            raise DTypeError(f"lengths must be integers, got dtype {lengths.dtype}")
        lengths = xp.astype(lengths, xp.int64)
    steps = xp.arange(T, dtype=xp.int64, device=device_of(like))
    return xp.expand_dims(xp.expand_dims(steps, axis=0) < xp.expand_dims(lengths, axis=1),
                          axis=2)


class Recurrent(Layer):
    """What RNN, LSTM and GRU share: directions, lengths, states, parameters, shapes."""

    side_inputs = ("lengths", "initial_state")
    gates = 1                      # G: gate blocks per step
    state_parts = ("h",)           # ("h", "c") for LSTM
    cell_params = ("Wx", "Wh", "b")

    def __init__(self, n_in: int, hidden: int, *, bidirectional: bool = False,
                 return_sequences: bool = False):
        name = type(self).__name__
        self.n_in = positive_int(f"{name} n_in", n_in)
        self.hidden = positive_int(f"{name} hidden", hidden)
        for arg, value in (("bidirectional", bidirectional),
                           ("return_sequences", return_sequences)):
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"{name} {arg} must be True or False, got {value!r}")
        self.bidirectional, self.return_sequences = bool(bidirectional), bool(return_sequences)
        self.suffixes = ("", "_reverse") if self.bidirectional else ("",)
        self.param_names = tuple(p + s for s in self.suffixes for p in self.cell_params)

    # -- shapes and parameters ----------------------------------------------------------------
    @property
    def directions(self) -> int:
        return len(self.suffixes)

    def input_shape(self):
        return (None, self.n_in)

    def output_shape(self, shape):
        if len(shape) != 2 or (shape[-1] is not None and shape[-1] != self.n_in):
            raise ShapeError(f"{type(self).__name__}({self.n_in}, {self.hidden}) takes "
                             f"sequences of {self.n_in} features, (T, {self.n_in}) per sample, "
                             f"but receives {tuple(shape)}")
        width = self.directions * self.hidden
        return (shape[0], width) if self.return_sequences else (width,)

    def param_shapes(self):
        GH, H = self.gates * self.hidden, self.hidden
        one = {"Wx": (self.n_in, GH), "Wh": (H, GH), "b": (GH,), "b_hn": (H,)}
        return {p + s: one[p] for s in self.suffixes for p in self.cell_params}

    def init_params(self, rng, ensemble=None, next_layer=None):
        if ensemble is not None:
            raise ConfigError(f"{type(self).__name__} does not support ensembles "
                              f"(ensemble={ensemble}): build one model per member")
        k = 1.0 / math.sqrt(self.hidden)
        GH, H = self.gates * self.hidden, self.hidden
        out = {}
        for s in self.suffixes:  # torch's draws: W_ih, W_hh, b_ih, b_hh ~ U(−k, k)
            out["Wx" + s] = rng.uniform(-k, k, (self.n_in, GH))
            out["Wh" + s] = rng.uniform(-k, k, (H, GH))
            b_ih, b_hh = rng.uniform(-k, k, GH), rng.uniform(-k, k, GH)
            if "b_hn" in self.cell_params:  # GRU: b_hn stays apart (see the module docstring)
                out["b" + s] = np.concatenate([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]])
                out["b_hn" + s] = b_hh[2 * H:]
            else:
                out["b" + s] = b_ih + b_hh
        return out

    # -- running ------------------------------------------------------------------------------
    def forward(self, ctx, x, train, lengths=None, initial_state=None):
        carry = initial_state
        if carry is not None and not isinstance(carry, RecurrentState):
            raise ConfigError(f"initial_state must be an nk.RecurrentState ({{layer path: "
                              f"state}}), got {type(carry).__name__}")
        start = None if carry is None else carry.initial.get(ctx.path)
        y, final, back = self._run(ctx.k, ctx.params, x, lengths, start)
        if carry is not None:
            carry.final[ctx.path] = self._public(final)

        def backprop(dy, need_dx=True):
            dx, grads, d_initial = back(dy, None, need_dx)
            for name, g in grads.items():
                ctx.grads.add(name, g)
            if carry is not None:
                carry.grads[ctx.path] = self._public(d_initial)
            return dx

        return y, backprop

    def apply(self, params, x, *, lengths=None, initial_state=None):
        """The layer as a function: (y, final_state, backprop), no model needed.

        ``params``: name -> array ("Wx", "Wh", "b", ...; from a model,
        ``{n: model.params[f"{path}.{n}"] for n in layer.param_names}``). ``backprop(dy,
        d_final_state=None, need_dx=True)`` returns (dx, dL/d initial_state, {name: dL/dparam});
        dy or d_final_state may be None (zero).
        """
        from ..backend import kernels_for_array  # the array's library: its kernels

        y, final, back = self._run(kernels_for_array(x), params, x, lengths, initial_state)

        def backprop(dy, d_final_state=None, need_dx=True):
            d_final = None if d_final_state is None else self._parts(d_final_state)
            dx, grads, d_initial = back(dy, d_final, need_dx)
            return dx, self._public(d_initial), grads

        return y, self._public(final), backprop

    def _run(self, k, params, x, lengths, initial):
        """(y, final state parts (D, B, H) each, back(dy, d_final parts, need_dx))."""
        xp, H, D = k.xp, self.hidden, self.directions
        if x.ndim != 3 or x.shape[-1] != self.n_in or x.shape[1] == 0:
            raise ShapeError(f"{type(self).__name__} takes (batch, T ≥ 1, {self.n_in}) "
                             f"sequences, got shape {tuple(x.shape)}")
        B, T = x.shape[0], x.shape[1]
        keep = keep_mask(xp, lengths, B, T, x)
        start = self._start(xp, initial, x)
        seqs, finals, backs = [], [], []
        for d, s in enumerate(self.suffixes):
            y, final, back = self._direction(
                k, x, [params[p + s] for p in self.cell_params], [part[d, ...] for part in start],
                keep, d == 1, self.return_sequences)
            seqs.append(y)
            finals.append(final)
            backs.append(back)
        final = tuple(xp.stack([f[j] for f in finals], axis=0) for j in range(len(start)))
        outs = seqs if self.return_sequences else [f[0] for f in finals]
        y = outs[0] if D == 1 else xp.concat(outs, axis=-1)

        def back(dy, d_final, need_dx):
            dx, grads, d_start = None, {}, []
            for d, (s, back_d) in enumerate(zip(self.suffixes, backs, strict=True)):
                dy_d = dy if dy is None or D == 1 else dy[..., d * H:(d + 1) * H]
                df = [None] * len(start) if d_final is None else [p[d, ...] for p in d_final]
                if not self.return_sequences:  # y was the final h: dy reaches it
                    df[0] = dy_d if df[0] is None or dy_d is None else df[0] + dy_d
                    dy_d = None
                dx_d, g, ds = back_d(dy_d, df, need_dx)
                dx = dx_d if dx is None else dx + dx_d
                grads.update({p + s: gp for p, gp in zip(self.cell_params, g, strict=True)})
                d_start.append(ds)
            d_start = tuple(xp.stack([ds[j] for ds in d_start], axis=0)
                            for j in range(len(start)))
            return (dx if need_dx else None), grads, d_start

        return y, final, back

    def _start(self, xp, state, x):
        """The initial state as parts (D, B, H) each: zeros, or the given one checked."""
        shape = (self.directions, x.shape[0], self.hidden)
        if state is None:
            zeros = xp.zeros(shape, dtype=x.dtype, device=device_of(x))
            return (zeros,) * len(self.state_parts)
        parts = self._parts(state)
        for name, part in zip(self.state_parts, parts, strict=True):
            if tuple(part.shape) != shape:
                raise ShapeError(f"{type(self).__name__} initial state {name} has shape "
                                 f"{tuple(part.shape)}; expected (directions, batch, hidden) "
                                 f"= {shape}")
            if part.dtype != x.dtype:
                raise DTypeError(f"{type(self).__name__} initial state {name} has dtype "
                                 f"{part.dtype}, the input {x.dtype}")
        return parts

    def _parts(self, state) -> tuple:
        n = len(self.state_parts)
        parts = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        if len(parts) != n:
            want = "(h, c)" if n == 2 else "h"
            raise ConfigError(f"a {type(self).__name__} state is {want}, got {len(parts)} "
                              f"array(s)")
        return parts

    def _public(self, parts):
        return parts if len(self.state_parts) > 1 else parts[0]

    def _direction(self, k, x, p, state, keep, reverse, sequences):
        """One direction: (y or None, final parts, back(dy, d_final parts, need_dx) ->
        (dx, parameter gradients in `cell_params` order, d initial parts))."""
        raise NotImplementedError

    def config(self):
        return {"type": type(self).__name__, "n_in": self.n_in, "hidden": self.hidden,
                "bidirectional": self.bidirectional, "return_sequences": self.return_sequences}


@register_layer
class RNN(Recurrent):
    """Elman RNN: h_t = act(x_t Wx + h_{t-1} Wh + b), act "tanh" or "relu" (torch.nn.RNN)."""

    def __init__(self, n_in: int, hidden: int, activation: str = "tanh", **kwargs):
        if activation not in ("tanh", "relu"):
            raise ConfigError(f"RNN activation must be 'tanh' or 'relu', got {activation!r}")
        self.activation = activation
        super().__init__(n_in, hidden, **kwargs)

    def _direction(self, k, x, p, state, keep, reverse, sequences):
        y, hT, cache = cells.rnn_forward(k, x, *p, state[0], keep, reverse, self.activation,
                                         sequences)

        def back(dy, d_final, need_dx):
            dx, dWx, dWh, db, dh0 = cells.rnn_backward(cache, dy, d_final[0], need_dx)
            return dx, (dWx, dWh, db), (dh0,)

        return y, (hT,), back

    def config(self):
        return {**super().config(), "activation": self.activation}


@register_layer
class LSTM(Recurrent):
    """Long short-term memory (torch.nn.LSTM): gates i, f, g, o; the state is (h, c)."""

    gates = 4
    state_parts = ("h", "c")

    def _direction(self, k, x, p, state, keep, reverse, sequences):
        y, hT, cT, cache = cells.lstm_forward(k, x, *p, *state, keep, reverse, sequences)

        def back(dy, d_final, need_dx):
            dx, dWx, dWh, db, dh0, dc0 = cells.lstm_backward(cache, dy, *d_final, need_dx)
            return dx, (dWx, dWh, db), (dh0, dc0)

        return y, (hT, cT), back


@register_layer
class GRU(Recurrent):
    """Gated recurrent unit (torch.nn.GRU): gates r, z, n, the reset gate inside n."""

    gates = 3
    cell_params = ("Wx", "Wh", "b", "b_hn")

    def _direction(self, k, x, p, state, keep, reverse, sequences):
        y, hT, cache = cells.gru_forward(k, x, *p, state[0], keep, reverse, sequences)

        def back(dy, d_final, need_dx):
            dx, dWx, dWh, db, db_hn, dh0 = cells.gru_backward(cache, dy, d_final[0], need_dx)
            return dx, (dWx, dWh, db, db_hn), (dh0,)

        return y, (hT,), back
