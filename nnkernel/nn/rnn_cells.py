"""Backprop through time for one direction of an RNN, LSTM or GRU: a forward/backward pair each.

    y, hT, cT, cache = lstm_forward(k, x, Wx, Wh, b, h0, c0, keep)
    dx, dWx, dWh, db, dh0, dc0 = lstm_backward(cache, dy, dhT, dcT)

x is (B, T, n_in), batch first; Wx (n_in, G·H), Wh (H, G·H), b (G·H,) with the
G gate blocks in torch's order (so Wx = W_ihᵀ, Wh = W_hhᵀ, b = b_ih + b_hh); h0,
c0 (B, H). The work is laid out for speed:

    before the loop   XW = X·Wx + b for all T steps: one GEMM (B·T rows)
    in the loop       hh = h₋₁·Wh, then the step's element-wise work (k.<cell>_step:
                      one fused launch on CuPy); backward: dA·Whᵀ, k.<cell>_step_backward
    after the loop    dWx = Xᵀ·dA, dWh = Hprevᵀ·dA, db = Σ dA, dX = dA·Wxᵀ: one GEMM each

``keep`` (B, T, 1) boolean, or None: False at padded steps (t ≥ a sequence's
length), where the state carries through unchanged, x is read as zeros (NaN
padding stays harmless), y is 0 and no gradient flows. ``reverse=True`` runs
t = T−1 … 0 (the backward direction of a bidirectional layer); its padded steps
come first, so each sequence starts from h0 at its own last step.
``dy`` (B, T, H) is dL/dy, or None when only the final state was used; ``dhT``,
``dcT`` dL/d(final state), or None for zero. ``sequences=False`` skips building y.
"""

from __future__ import annotations


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def _project(k, x, Wx, b, keep):
    """(x with padded steps zeroed, XW = x·Wx + b as (B, T, G·H)): all steps in one GEMM."""
    xp = k.xp
    if keep is not None:
        x = xp.where(keep, x, 0.0)
    B, T, n_in = x.shape
    xw = k.affine(xp.reshape(x, (B * T, n_in)), Wx, b)
    return x, xp.reshape(xw, (B, T, xw.shape[-1]))


def _sequence(xp, hs, keep, reverse):
    """The per-step states (in processing order) as y (B, T, H) in time order, 0 at padding."""
    y = xp.stack(hs[::-1] if reverse else hs, axis=1)
    return y if keep is None else xp.where(keep, y, 0.0)


def _step_of(xp, a, t):
    return None if a is None else a[:, t, :]


def _weight_grads(k, x, Wx, h_prev, dxw, dhh, need_dx):
    """dX = dXW·Wxᵀ, dWx = Xᵀ·dXW, db = Σ dXW, dWh = Hprevᵀ·dHH: one GEMM each over B·T rows.
    ``h_prev`` and ``dxw``/``dhh`` are per-step lists in time order."""
    xp = k.xp
    B, T, n_in = x.shape
    dxw = xp.stack(dxw, axis=1)                        # (B, T, G·H)
    G = dxw.shape[-1]
    dx, dWx, db = k.affine_backward(xp.reshape(x, (B * T, n_in)), Wx,
                                    xp.reshape(dxw, (B * T, G)), need_dx)
    dhh = dxw if dhh is None else xp.stack(dhh, axis=1)
    H = h_prev[0].shape[-1]
    hp = xp.reshape(xp.stack(h_prev, axis=1), (B * T, H))
    dWh = xp.matmul(xp.matrix_transpose(hp), xp.reshape(dhh, (B * T, G)))
    dx = None if dx is None else xp.reshape(dx, (B, T, n_in))
    return dx, dWx, dWh, db, dhh


def _in_time_order(items, reverse):
    return items[::-1] if reverse else items


# -- Elman RNN -------------------------------------------------------------------------------
def rnn_forward(k, x, Wx, Wh, b, h0, keep=None, reverse=False, activation="tanh",
                sequences=True):
    """h_t = act(x_t Wx + b + h_{t-1} Wh).  Returns (y, hT, cache)."""
    xp = k.xp
    x, xw = _project(k, x, Wx, b, keep)
    h, hs, saved = h0, [], []
    for t in _steps(x.shape[1], reverse):
        h, s = k.rnn_step(xw[:, t, :], xp.matmul(h, Wh), h, _step_of(xp, keep, t), activation)
        hs.append(h)
        saved.append(s)
    y = _sequence(xp, hs, keep, reverse) if sequences else None
    return y, h, (k, x, Wx, Wh, h0, hs, saved, keep, reverse, activation)


def rnn_backward(cache, dy, dhT=None, need_dx=True):
    """dA_t = (dh_t + dy_t) ⊙ act′;  dh_{t-1} = dA_t Whᵀ.  Returns (dx, dWx, dWh, db, dh0)."""
    k, x, Wx, Wh, h0, hs, saved, keep, reverse, activation = cache
    xp = k.xp
    T = x.shape[1]
    if dy is not None and keep is not None:
        dy = xp.where(keep, dy, 0.0)      # y was 0 there: its gradient goes nowhere
    WhT = k.recurrent_weight_t(Wh)
    dh = xp.zeros_like(h0) if dhT is None else dhT
    dA = [None] * T
    for t in reversed(_steps(T, reverse)):
        dA[t], skip = k.rnn_step_backward(dh, _step_of(xp, dy, t), saved[_index(t, T, reverse)],
                                          _step_of(xp, keep, t), activation)
        dh = xp.matmul(dA[t], WhT)         # dh_{t-1} = dA_t Whᵀ
        if skip is not None:
            dh = dh + skip
    h_prev = _in_time_order([h0, *hs[:-1]], reverse)
    dx, dWx, dWh, db, _ = _weight_grads(k, x, Wx, h_prev, dA, None, need_dx)
    return dx, dWx, dWh, db, dh


def _index(t, T, reverse):
    """The processing index of time step t."""
    return T - 1 - t if reverse else t


# -- LSTM ------------------------------------------------------------------------------------
def lstm_forward(k, x, Wx, Wh, b, h0, c0, keep=None, reverse=False, sequences=True):
    """[i f g o] = [σ σ tanh σ](x_t Wx + b + h_{t-1} Wh);  c_t = f ⊙ c_{t-1} + i ⊙ g;
    h_t = o ⊙ tanh c_t.  Returns (y, hT, cT, cache)."""
    xp = k.xp
    x, xw = _project(k, x, Wx, b, keep)
    h, c, hs, cs, saved = h0, c0, [], [], []
    for t in _steps(x.shape[1], reverse):
        h, c, s = k.lstm_step(xw[:, t, :], xp.matmul(h, Wh), h, c, _step_of(xp, keep, t))
        hs.append(h)
        cs.append(c)
        saved.append(s)
    y = _sequence(xp, hs, keep, reverse) if sequences else None
    return y, h, c, (k, x, Wx, Wh, h0, c0, hs, cs, saved, keep, reverse)


def lstm_backward(cache, dy, dhT=None, dcT=None, need_dx=True):
    """Per step, last to first (k.lstm_step_backward has the formulas):
    dh = dh_next + dy_t;  do = dh ⊙ tanh c;  dc += dh ⊙ o ⊙ (1 − tanh² c);
    di = dc ⊙ g, df = dc ⊙ c₋₁, dg = dc ⊙ i, dc₋₁ = dc ⊙ f; dA = [di df dg do] through
    σ′ and tanh′;  dh₋₁ = dA·Whᵀ.  Returns (dx, dWx, dWh, db, dh0, dc0)."""
    k, x, Wx, Wh, h0, c0, hs, cs, saved, keep, reverse = cache
    xp = k.xp
    T = x.shape[1]
    if dy is not None and keep is not None:
        dy = xp.where(keep, dy, 0.0)
    WhT = k.recurrent_weight_t(Wh)
    dh = xp.zeros_like(h0) if dhT is None else dhT
    dc = xp.zeros_like(c0) if dcT is None else dcT
    dA = [None] * T
    for t in reversed(_steps(T, reverse)):
        s = _index(t, T, reverse)
        c_prev = cs[s - 1] if s > 0 else c0
        dA[t], dc, skip = k.lstm_step_backward(dh, _step_of(xp, dy, t), dc, saved[s], c_prev,
                                               _step_of(xp, keep, t))
        dh = xp.matmul(dA[t], WhT)         # dh₋₁ = dA·Whᵀ
        if skip is not None:
            dh = dh + skip
    h_prev = _in_time_order([h0, *hs[:-1]], reverse)
    dx, dWx, dWh, db, _ = _weight_grads(k, x, Wx, h_prev, dA, None, need_dx)
    return dx, dWx, dWh, db, dh, dc


# -- GRU -------------------------------------------------------------------------------------
def gru_forward(k, x, Wx, Wh, b, b_hn, h0, keep=None, reverse=False, sequences=True):
    """r, z = σ(x_t Wx + b + h_{t-1} Wh) (their blocks); n = tanh(xw_n + r ⊙ (hh_n + b_hn));
    h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.  b's n block is b_in alone; b_hn (H,) is torch's
    b_hh n block, which the reset gate multiplies.  Returns (y, hT, cache)."""
    xp = k.xp
    x, xw = _project(k, x, Wx, b, keep)
    h, hs, saved = h0, [], []
    for t in _steps(x.shape[1], reverse):
        h, s = k.gru_step(xw[:, t, :], xp.matmul(h, Wh), h, b_hn, _step_of(xp, keep, t))
        hs.append(h)
        saved.append(s)
    y = _sequence(xp, hs, keep, reverse) if sequences else None
    return y, h, (k, x, Wx, Wh, h0, hs, saved, keep, reverse)


def gru_backward(cache, dy, dhT=None, need_dx=True):
    """Per step (k.gru_step_backward): dxw = [dA_r, dA_z, dA_n], dhh = [dA_r, dA_z, r ⊙ dA_n];
    dh₋₁ = dhh·Whᵀ + z ⊙ dh;  after the loop dWh = Hprevᵀ·dHH, db_hn = Σ r ⊙ dA_n.
    Returns (dx, dWx, dWh, db, db_hn, dh0)."""
    k, x, Wx, Wh, h0, hs, saved, keep, reverse = cache
    xp = k.xp
    T = x.shape[1]
    if dy is not None and keep is not None:
        dy = xp.where(keep, dy, 0.0)
    WhT = k.recurrent_weight_t(Wh)
    dh = xp.zeros_like(h0) if dhT is None else dhT
    dxw, dhh = [None] * T, [None] * T
    for t in reversed(_steps(T, reverse)):
        s = _index(t, T, reverse)
        h_prev = hs[s - 1] if s > 0 else h0
        dxw[t], dhh[t], skip = k.gru_step_backward(dh, _step_of(xp, dy, t), saved[s], h_prev,
                                                   _step_of(xp, keep, t))
        dh = xp.matmul(dhh[t], WhT) + skip  # dh₋₁ = dhh·Whᵀ + z ⊙ dh
    h_prev = _in_time_order([h0, *hs[:-1]], reverse)
    dx, dWx, dWh, db, dhh = _weight_grads(k, x, Wx, h_prev, dxw, dhh, need_dx)
    H = h0.shape[-1]
    db_hn = xp.sum(dhh[:, :, 2 * H:], axis=(0, 1))
    return dx, dWx, dWh, db, db_hn, dh
