"""Recurrent cells, the reference: the element-wise work of one time step, forward and backward.

The time loop lives in `nnkernel.nn.rnn_cells`: before it one GEMM gives every
step's input projection ``xw = x Wx + b``; inside it one product ``hh = h Wh`` per
step, then one call here does everything element-wise that the step needs
(one fused launch on the CuPy twin). Shapes: ``xw`` and ``hh`` (B, G·H) with the
G gate blocks side by side (torch's order; ``hh`` is the loop's own fresh product,
which a twin may overwrite), states (B, H), ``keep`` None or a
(B, 1) boolean: False where the step is padding (past a sequence's length), and
there the state passes through unchanged, h_t = h_{t-1}, and no gradient reaches
the cell.

Each forward returns what its backward needs as one opaque ``saved`` value (a
tuple here; a twin may pack it differently); each backward takes the gradient
reaching h_t from the step after it (``dh``) and from the layer's output at t
(``dy``, or None) and returns the gradient of the pre-activations, which the loop
multiplies by Whᵀ, plus ``dh_skip``: what reaches h_{t-1} directly, not through
Wh (GRU's z ⊙ dh, or a padded step's whole dh), None where nothing does.

Derivatives are taken from the activations' outputs: σ′ = σ(1 − σ),
tanh′ = (1 − a)(1 + a) (not 1 − a², which cancels catastrophically near |a| = 1).
"""

from __future__ import annotations


def sigmoid(xp, z):
    """σ(z) in its tanh form, ½(tanh(z/2) + 1), as nnkernel.nn.activations computes it."""
    return 0.5 * (xp.tanh(0.5 * z) + 1.0)


def _blocks(a, n):
    """The n gate blocks (B, H) of a (B, n·H) array, in order."""
    H = a.shape[-1] // n
    return [a[:, j * H:(j + 1) * H] for j in range(n)]


class RecurrentKernels:
    """Mixed into `Kernels` (which provides ``self.xp``); twins override these steps."""

    def recurrent_weight_t(self, W):
        """Whᵀ for the backward's per-step products dA·Whᵀ (a twin may lay it out for BLAS)."""
        return self.xp.matrix_transpose(W)

    # -- Elman RNN: h = act(xw + hh) ----------------------------------------------------------
    def rnn_step(self, xw, hh, h_prev, keep=None, activation="tanh"):
        """h_t = act(x_t Wx + b + h_{t-1} Wh), act tanh or relu. Returns (h, saved)."""
        xp = self.xp
        a = xw + hh
        h = xp.tanh(a) if activation == "tanh" else xp.maximum(a, 0.0)
        if keep is not None:
            h = xp.where(keep, h, h_prev)
        return h, h

    def rnn_step_backward(self, dh, dy, saved, keep=None, activation="tanh"):
        """dA = dh ⊙ act′, act′ from h: tanh′ = (1 − h)(1 + h), relu′ = [h > 0].
        Returns (dA, dh_skip)."""
        xp = self.xp
        h = saved
        if dy is not None:
            dh = dh + dy
        if activation == "tanh":
            dA = dh * ((1.0 - h) * (1.0 + h))
        else:
            dA = dh * xp.astype(h > 0.0, dh.dtype)
        if keep is None:
            return dA, None
        return xp.where(keep, dA, 0.0), xp.where(keep, 0.0, dh)

    # -- LSTM: gates i, f, g, o (torch.nn.LSTM's order) ----------------------------------------
    def lstm_step(self, xw, hh, h_prev, c_prev, keep=None):
        """a = xw + hh;  i, f, o = σ(a_i, a_f, a_o), g = tanh(a_g);
        c = f ⊙ c₋₁ + i ⊙ g;  h = o ⊙ tanh c.  Returns (h, c, saved)."""
        xp = self.xp
        a_i, a_f, a_g, a_o = _blocks(xw + hh, 4)
        i, f, g, o = sigmoid(xp, a_i), sigmoid(xp, a_f), xp.tanh(a_g), sigmoid(xp, a_o)
        c = f * c_prev + i * g
        tanh_c = xp.tanh(c)
        h = o * tanh_c
        if keep is not None:
            h, c = xp.where(keep, h, h_prev), xp.where(keep, c, c_prev)
        return h, c, (i, f, g, o, tanh_c)

    def lstm_step_backward(self, dh, dy, dc, saved, c_prev, keep=None):
        """do = dh ⊙ tanh c;  dc += dh ⊙ o ⊙ (1 − tanh² c);
        di = dc ⊙ g, df = dc ⊙ c₋₁, dg = dc ⊙ i, dc₋₁ = dc ⊙ f; then through σ′ and tanh′.
        Returns (dA (B, 4H), dc₋₁, dh_skip)."""
        xp = self.xp
        i, f, g, o, tanh_c = saved
        if dy is not None:
            dh = dh + dy
        dc_now = dc + dh * o * ((1.0 - tanh_c) * (1.0 + tanh_c))
        dA = xp.concat([
            dc_now * g * (i * (1.0 - i)),                   # dA_i = di ⊙ σ′
            dc_now * c_prev * (f * (1.0 - f)),              # dA_f = df ⊙ σ′
            dc_now * i * ((1.0 + g) * (1.0 - g)),           # dA_g = dg ⊙ tanh′
            dh * tanh_c * (o * (1.0 - o)),                  # dA_o = do ⊙ σ′
        ], axis=-1)
        dc_prev = dc_now * f
        if keep is None:
            return dA, dc_prev, None
        return (xp.where(keep, dA, 0.0), xp.where(keep, dc_prev, dc),
                xp.where(keep, 0.0, dh))

    # -- GRU: gates r, z, n (torch.nn.GRU's order), the reset gate inside n ---------------------
    def gru_step(self, xw, hh, h_prev, b_hn, keep=None):
        """r = σ(xw_r + hh_r), z = σ(xw_z + hh_z), n = tanh(xw_n + r ⊙ (hh_n + b_hn)),
        h = (1 − z) ⊙ n + z ⊙ h₋₁.  Returns (h, saved)."""
        xp = self.xp
        x_r, x_z, x_n = _blocks(xw, 3)
        h_r, h_z, h_n = _blocks(hh, 3)
        r, z = sigmoid(xp, x_r + h_r), sigmoid(xp, x_z + h_z)
        hn = h_n + b_hn
        n = xp.tanh(x_n + r * hn)
        h = (1.0 - z) * n + z * h_prev
        if keep is not None:
            h = xp.where(keep, h, h_prev)
        return h, (r, z, n, hn)

    def gru_step_backward(self, dh, dy, saved, h_prev, keep=None):
        """dn = dh ⊙ (1 − z), dz = dh ⊙ (h₋₁ − n), dA_n = dn ⊙ tanh′, dA_z = dz ⊙ σ′,
        dA_r = dA_n ⊙ hn ⊙ σ′ (hn = hh_n + b_hn).  Returns (dxw, dhh, dh_skip):
        dxw = [dA_r, dA_z, dA_n], dhh = [dA_r, dA_z, dA_n ⊙ r], dh_skip = dh ⊙ z."""
        xp = self.xp
        r, z, n, hn = saved
        if dy is not None:
            dh = dh + dy
        dA_n = dh * (1.0 - z) * ((1.0 - n) * (1.0 + n))
        dA_z = dh * (h_prev - n) * (z * (1.0 - z))
        dA_r = dA_n * hn * (r * (1.0 - r))
        dxw = xp.concat([dA_r, dA_z, dA_n], axis=-1)
        dhh = xp.concat([dA_r, dA_z, dA_n * r], axis=-1)
        skip = dh * z
        if keep is None:
            return dxw, dhh, skip
        return (xp.where(keep, dxw, 0.0), xp.where(keep, dhh, 0.0), xp.where(keep, skip, dh))
