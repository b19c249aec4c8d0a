"""NumPy twin of the recurrent steps: the reference's numbers in fewer passes over memory.

At B = 32, H = 256 a step's arrays are 32-128 KB, so each NumPy call costs about
as much in overhead as in arithmetic: the twin cuts calls. All gates go through
one tanh over the (B, G·H) block, σ in its tanh form ½ tanh(½a) + ½ with the
scales as per-column vectors (1 and 0 on tanh's columns): four passes instead of
one per gate and operation. ``hh`` (the loop's fresh product h·Wh) is overwritten
in place. σ′ and tanh′ are one expression over the block too: (a + u)(1 − a), u = 0
on σ's columns, 1 on tanh's. The operations and their order are the reference's,
so the numbers are too.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _columns(n_blocks: int, tanh_block: int | None, H: int, dtype):
    """(scale, shift, unit) per column: σ blocks ½, ½, 0; the tanh block 1, 0, 1."""
    scale = np.full(n_blocks * H, 0.5, dtype=dtype)
    shift = np.full(n_blocks * H, 0.5, dtype=dtype)
    unit = np.zeros(n_blocks * H, dtype=dtype)
    if tanh_block is not None:
        cols = slice(tanh_block * H, (tanh_block + 1) * H)
        scale[cols], shift[cols], unit[cols] = 1.0, 0.0, 1.0
    for a in (scale, shift, unit):
        a.flags.writeable = False
    return scale, shift, unit


def _activate(a, n_blocks, tanh_block, H):
    """σ on every block but ``tanh_block``, tanh there; in place."""
    scale, shift, _ = _columns(n_blocks, tanh_block, H, a.dtype)
    a *= scale
    np.tanh(a, out=a)
    a *= scale
    a += shift
    return a


def _derivative(a, n_blocks, tanh_block, H):
    """σ′ = σ(1 − σ), tanh′ = (1 + a)(1 − a) over the block, from the activations a."""
    _, _, unit = _columns(n_blocks, tanh_block, H, a.dtype)
    d = a + unit
    d *= 1.0 - a
    return d


class NumpyRecurrentKernels:
    def recurrent_weight_t(self, W):
        # dA·Whᵀ with B = 32 rows: OpenBLAS multiplies by a C-ordered copy markedly faster
        # than by the transposed view (one copy per backward, T products)
        return np.ascontiguousarray(W.T)

    def rnn_step(self, xw, hh, h_prev, keep=None, activation="tanh"):
        if activation != "tanh":
            return super().rnn_step(xw, hh, h_prev, keep, activation)
        hh += xw
        h = np.tanh(hh, out=hh)
        if keep is not None:
            h = np.where(keep, h, h_prev)
        return h, h

    def rnn_step_backward(self, dh, dy, saved, keep=None, activation="tanh"):
        if activation != "tanh":
            return super().rnn_step_backward(dh, dy, saved, keep, activation)
        h = saved
        dh = dh + dy if dy is not None else dh
        d = 1.0 - h
        d *= 1.0 + h
        dA = dh * d
        if keep is None:
            return dA, None
        return np.where(keep, dA, 0.0), np.where(keep, 0.0, dh)

    def lstm_step(self, xw, hh, h_prev, c_prev, keep=None):
        H = c_prev.shape[-1]
        hh += xw
        a = _activate(hh, 4, 2, H)                  # [i f g o], in place
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c = f * c_prev
        c += i * g                                  # c = f ⊙ c₋₁ + i ⊙ g
        tanh_c = np.tanh(c)
        h = o * tanh_c
        if keep is not None:
            h, c = np.where(keep, h, h_prev), np.where(keep, c, c_prev)
        return h, c, (a, tanh_c)

    def lstm_step_backward(self, dh, dy, dc, saved, c_prev, keep=None):
        a, tanh_c = saved
        H = tanh_c.shape[-1]
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        dh = dh + dy if dy is not None else dh
        t = 1.0 - tanh_c
        t *= 1.0 + tanh_c
        dc_now = dh * o
        dc_now *= t
        dc_now += dc                                # dc += dh ⊙ o ⊙ (1 − tanh² c)
        dA = np.empty_like(a)
        np.multiply(dc_now, g, out=dA[:, :H])       # di = dc ⊙ g
        np.multiply(dc_now, c_prev, out=dA[:, H:2 * H])  # df = dc ⊙ c₋₁
        np.multiply(dc_now, i, out=dA[:, 2 * H:3 * H])   # dg = dc ⊙ i
        np.multiply(dh, tanh_c, out=dA[:, 3 * H:])  # do = dh ⊙ tanh c
        dA *= _derivative(a, 4, 2, H)               # through σ′ and tanh′
        dc_prev = dc_now
        dc_prev *= f                                # dc₋₁ = dc ⊙ f
        if keep is None:
            return dA, dc_prev, None
        return (np.where(keep, dA, 0.0), np.where(keep, dc_prev, dc),
                np.where(keep, 0.0, dh))

    def gru_step(self, xw, hh, h_prev, b_hn, keep=None):
        H = h_prev.shape[-1]
        rz = hh[:, :2 * H]
        rz += xw[:, :2 * H]
        _activate(rz, 2, None, H)                   # r, z = σ(...), in place
        r, z = rz[:, :H], rz[:, H:]
        hn = hh[:, 2 * H:]
        hn += b_hn                                  # hn = hh_n + b_hn
        n = r * hn
        n += xw[:, 2 * H:]
        np.tanh(n, out=n)                           # n = tanh(xw_n + r ⊙ hn)
        h = 1.0 - z
        h *= n
        h += z * h_prev                             # h = (1 − z) ⊙ n + z ⊙ h₋₁
        if keep is not None:
            h = np.where(keep, h, h_prev)
        return h, (rz, n, hn)

    def gru_step_backward(self, dh, dy, saved, h_prev, keep=None):
        rz, n, hn = saved
        H = n.shape[-1]
        r, z = rz[:, :H], rz[:, H:]
        dh = dh + dy if dy is not None else dh
        dxw = np.empty((dh.shape[0], 3 * H), dtype=dh.dtype)
        dA_r, dA_z, dA_n = dxw[:, :H], dxw[:, H:2 * H], dxw[:, 2 * H:]
        np.multiply(dh, 1.0 - z, out=dA_n)
        t = 1.0 - n
        t *= 1.0 + n
        dA_n *= t                                   # dA_n = dh ⊙ (1 − z) ⊙ tanh′
        np.subtract(h_prev, n, out=dA_z)
        dA_z *= dh                                  # dz = dh ⊙ (h₋₁ − n)
        np.multiply(dA_n, hn, out=dA_r)             # dr = dA_n ⊙ hn
        dxw[:, :2 * H] *= _derivative(rz, 2, None, H)  # through σ′
        dhh = dxw.copy()
        dhh[:, 2 * H:] *= r                         # dhh_n = r ⊙ dA_n
        skip = dh * z
        if keep is None:
            return dxw, dhh, skip
        return (np.where(keep, dxw, 0.0), np.where(keep, dhh, 0.0), np.where(keep, skip, dh))
