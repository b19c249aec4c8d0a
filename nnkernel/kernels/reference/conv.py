"""Convolution and pooling kernels: the reference mathematics, in the Array API standard only.

Layout. Images are NCHW, weights (C_out, C_in, kH, kW) and bias (C_out,), as
`torch.nn.Conv2d`, so weights move between the two unchanged. An ensemble of E
models puts a member axis first: W (E, C_out, C_in, kH, kW), b (E, C_out), x
either (E, N, C, H, W) (each member its own input) or (N, C, H, W) (one input
shared by all), z (E, N, C_out, H_out, W_out).

Columns. ``im2col`` returns X̂ of shape (C·kH·kW, N·L), L = H_out·W_out (with the
member axis first for a per-member input): row (c, i, j) holds input channel c
at kernel offset (i, j), column (n, h, w) is output pixel (h, w) of sample n.
Rows are ordered as W.reshape(C_out, C·kH·kW), so with W̄ that reshape

    Z = W̄ X̂ + b            (C_out, N·L), then viewed as (N, C_out, H_out, W_out)
    dW = δ X̂ᵀ               the Σ over the batch is the product's own inner sum
    db = Σ_columns δ
    dX̂ = W̄ᵀ δ,   dx = col2im(dX̂)

are each one matrix product (E stacked ones for an ensemble) with the batch
inside the long dimension, instead of N small per-sample products; dW is
written straight into a gradient buffer with no batch-sized temporary to sum.
The price is one transpose of z (C_out, N, ...) -> (N, C_out, ...) forward and
of δ back: output-sized, kH·kW·C_in/C_out times smaller than X̂.

Only standard functions are used through ``self.xp`` (strided basic slicing,
``concat``, ``stack``, ``permute_dims``, ``reshape``, ``matmul``, ``where``), so
the class runs on array-api-strict, torch, NumPy and CuPy alike. It is a mixin:
the class it is mixed into provides ``self.xp``.
"""

from __future__ import annotations

import array_api_compat


def conv_out_size(n: int, k: int, stride: int, padding: int) -> int:
    """⌊(n + 2p − k) / s⌋ + 1 output positions along one axis (torch's floor mode)."""
    out = (n + 2 * padding - k) // stride + 1
    if stride < 1 or padding < 0 or out < 1:
        raise ValueError(f"kernel {k} with stride {stride}, padding {padding} does not fit "
                         f"an input of size {n}")
    return out


def check_conv_shapes(x_shape, W_shape) -> None:
    """x (N, C, H, W) or (E, N, C, H, W) against W (C_out, C, kH, kW) or (E, C_out, C, kH, kW)."""
    if len(x_shape) not in (4, 5) or len(W_shape) not in (4, 5):
        raise ValueError(f"conv2d wants x (N, C, H, W) or (E, N, C, H, W) and W (C_out, C_in, "
                         f"kH, kW) or (E, ...), got x {tuple(x_shape)}, W {tuple(W_shape)}")
    if x_shape[-3] != W_shape[-3]:
        raise ValueError(f"x has {x_shape[-3]} channels, W expects {W_shape[-3]}")
    if len(x_shape) == 5 and (len(W_shape) != 5 or x_shape[0] != W_shape[0]):
        raise ValueError(f"a per-member input {tuple(x_shape)} needs weights with the same "
                         f"member axis, got W {tuple(W_shape)}")


def window_slice(i: int, stride: int, n_out: int) -> slice:
    """Positions i, i + s, ..., i + s(n_out − 1): kernel offset i at every output position."""
    return slice(i, i + stride * (n_out - 1) + 1, stride)


class ConvKernels:
    """Reference conv / pooling kernels; mixed into `Kernels`, overridden by the twins."""

    # -- helpers: zero padding and the sum of shifted windows ------------------------
    def _pad2d(self, a, top: int, bottom: int, left: int, right: int):
        """a (..., H, W) with zero rows/columns around it, by concatenation."""
        xp = self.xp
        dev = array_api_compat.device(a)
        *lead, H, W = a.shape
        if top or bottom:
            parts = [xp.zeros((*lead, top, W), dtype=a.dtype, device=dev)] if top else []
            parts.append(a)
            if bottom:
                parts.append(xp.zeros((*lead, bottom, W), dtype=a.dtype, device=dev))
            a = xp.concat(parts, axis=-2)
            H += top + bottom
        if left or right:
            parts = [xp.zeros((*lead, H, left), dtype=a.dtype, device=dev)] if left else []
            parts.append(a)
            if right:
                parts.append(xp.zeros((*lead, H, right), dtype=a.dtype, device=dev))
            a = xp.concat(parts, axis=-1)
        return a

    def _windows(self, x, kh: int, kw: int, stride: int, padding: int):
        """The kH·kW strided slices x_pad[..., i + s·h, j + s·w], row-major in (i, j)."""
        H_out = conv_out_size(x.shape[-2], kh, stride, padding)
        W_out = conv_out_size(x.shape[-1], kw, stride, padding)
        x = self._pad2d(x, padding, padding, padding, padding)
        return [x[..., window_slice(i, stride, H_out), window_slice(j, stride, W_out)]
                for i in range(kh) for j in range(kw)]

    def _scatter_windows(self, parts, H: int, W: int, kh: int, kw: int, stride: int,
                         padding: int):
        """The adjoint of `_windows`: dx[.., i + s·h − p, j + s·w − p] += parts[i·kW + j][.., h, w].

        The standard has no scatter-add, so each part is placed by zero padding and
        added. Offsets i = s·a + r with the same residue r land on the rows ≡ r (mod s)
        of the padded input, at coarse row a + h of a grid ⌈H_p/s⌉ high. So for each
        of the s² residue pairs the parts are shifted (padded) on the coarse grid and
        summed, width first, then height; the s² coarse grids are interleaved once by a
        stack and a reshape, and the padding cropped. Each part is padded to 1/s² of
        the input's size, not to all of it; stride 1 has one residue class and the
        interleave is a no-op.
        """
        xp = self.xp
        s = stride
        H_out, W_out = parts[0].shape[-2:]
        lead = parts[0].shape[:-2]
        Hp, Wp = H + 2 * padding, W + 2 * padding
        Hc, Wc = -(-Hp // s), -(-Wp // s)  # the coarse grid: ⌈H_p/s⌉ × ⌈W_p/s⌉
        rows = []
        for r in range(s):
            grids = []
            for q in range(s):
                acc = None
                for i in range(r, kh, s):
                    a = (i - r) // s
                    row = None  # Σ over this row's offsets j ≡ q, shifted along the width
                    for j in range(q, kw, s):
                        b = (j - q) // s
                        t = self._pad2d(parts[i * kw + j], 0, 0, b, Wc - b - W_out)
                        row = t if row is None else row + t
                    if row is not None:
                        row = self._pad2d(row, a, Hc - a - H_out, 0, 0)
                        acc = row if acc is None else acc + row
                if acc is None:  # a residue no kernel offset reaches (stride > kernel)
                    acc = xp.zeros((*lead, Hc, Wc), dtype=parts[0].dtype,
                                   device=array_api_compat.device(parts[0]))
                grids.append(acc)
            rows.append(xp.stack(grids, axis=-1))  # (..., Hc, Wc, s): column residue last
        full = xp.stack(rows, axis=-3)  # (..., Hc, s, Wc, s): row r + s·Hc_index
        full = xp.reshape(full, (*lead, Hc * s, Wc * s))
        return full[..., padding:padding + H, padding:padding + W]

    # -- im2col / col2im ------------------------------------------------------------
    def im2col(self, x, kh: int, kw: int, stride: int = 1, padding: int = 0):
        """X̂ (C·kH·kW, N·H_out·W_out) of x (N, C, H, W); (E, C·kH·kW, N·L) for x (E, N, C, H, W).

        X̂[(c, i, j), (n, h, w)] = x_pad[n, c, s·h + i, s·w + j], x_pad being x with p
        zeros on each side: the kH·kW strided slices, stacked and transposed.
        """
        xp = self.xp
        *lead, N, C, H, W = x.shape
        H_out = conv_out_size(H, kh, stride, padding)
        W_out = conv_out_size(W, kw, stride, padding)
        t = xp.stack(self._windows(x, kh, kw, stride, padding), axis=-3)  # (.., N, C, kk, h, w)
        m = len(lead)
        t = xp.permute_dims(t, (*range(m), m + 1, m + 2, m, m + 3, m + 4))  # (.., C, kk, N, h, w)
        return xp.reshape(t, (*lead, C * kh * kw, N * H_out * W_out))

    def col2im(self, cols, x_shape, kh: int, kw: int, stride: int = 1, padding: int = 0):
        """The adjoint of `im2col`: dx (x_shape) with dx[n, c, s·h + i − p, s·w + j − p] summing
        dX̂[(c, i, j), (n, h, w)] over every (i, j, h, w) that reads that pixel.
        """
        xp = self.xp
        *lead, N, C, H, W = x_shape
        H_out = conv_out_size(H, kh, stride, padding)
        W_out = conv_out_size(W, kw, stride, padding)
        m = len(lead)
        t = xp.reshape(cols, (*lead, C, kh * kw, N, H_out, W_out))
        t = xp.permute_dims(t, (m + 1, *range(m), m + 2, m, m + 3, m + 4))  # (kk, .., N, C, h, w)
        parts = [t[o, ...] for o in range(kh * kw)]
        return self._scatter_windows(parts, H, W, kh, kw, stride, padding)

    # -- convolution ----------------------------------------------------------------
    def conv2d(self, x, W, b, stride: int = 1, padding: int = 0):
        """(z, cols): z = W̄ X̂ + b as one (stacked) matrix product, and X̂ for the backward.

        x (N, C_in, H, W) or (E, N, C_in, H, W); W (C_out, C_in, kH, kW) or
        (E, C_out, C_in, kH, kW); b (C_out,), (E, C_out) or None (no bias).
        z is (N, C_out, H_out, W_out), or (E, N, C_out, H_out, W_out) for an ensemble;
        H_out = ⌊(H + 2p − kH)/s⌋ + 1. Keep ``cols`` (and x.shape) for `conv2d_backward`.
        """
        xp = self.xp
        check_conv_shapes(x.shape, W.shape)
        C_out, C_in, kh, kw = W.shape[-4:]
        cols = self.im2col(x, kh, kw, stride, padding)
        W2 = xp.reshape(W, (*W.shape[:-3], C_in * kh * kw))  # W̄ (.., C_out, K)
        z = xp.matmul(W2, cols)  # (.., C_out, N·L): a shared X̂ broadcasts over members
        if b is not None:
            z = z + xp.expand_dims(b, axis=-1)
        N = x.shape[-4]
        H_out = conv_out_size(x.shape[-2], kh, stride, padding)
        W_out = conv_out_size(x.shape[-1], kw, stride, padding)
        lead = z.shape[:-2]
        z = xp.reshape(z, (*lead, C_out, N, H_out, W_out))
        m = len(lead)
        return xp.permute_dims(z, (*range(m), m + 1, m, m + 2, m + 3)), cols

    def _delta_columns(self, dz):
        """δ (.., N, C_out, H_out, W_out) as the matrix (.., C_out, N·L) that matches X̂."""
        xp = self.xp
        *lead, N, C_out, H_out, W_out = dz.shape
        m = len(lead)
        d = xp.permute_dims(dz, (*range(m), m + 1, m, m + 2, m + 3))
        return xp.reshape(d, (*lead, C_out, N * H_out * W_out))

    def conv2d_backward(self, x_shape, cols, W, dz, stride: int = 1, padding: int = 0,
                        need_dx: bool = True, out=None):
        """(dx, dW, db) of z = conv2d(x, W, b), from δ = dz and the forward's ``cols``:

            dW = δ X̂ᵀ (Σ over the batch: the batch is in the columns), shaped as W
            db = Σ δ over the batch and pixels, shaped (C_out,) or (E, C_out)
            dX̂ = W̄ᵀ δ,  dx = col2im(dX̂), shaped x_shape; None unless need_dx

        For an ensemble fed one shared input (x_shape (N, C, H, W)), dx is the sum
        over members, Σ_e W̄_eᵀ δ_e, computed as one product with inner dimension
        E·C_out; pass x_shape (E, N, C, H, W) to get one dx per member instead.
        ``out=(dW_buf, db_buf)``: arrays (either may be None) to fill in place and
        return, where the backend allows writes; the reference assigns into them.
        """
        xp = self.xp
        C_out, C_in, kh, kw = W.shape[-4:]
        K = C_in * kh * kw
        d = self._delta_columns(dz)
        dW = xp.reshape(xp.matmul(d, xp.matrix_transpose(cols)), W.shape)
        db = xp.sum(d, axis=-1)
        if out is not None:
            dW_buf, db_buf = out
            if dW_buf is not None:
                dW_buf[...] = dW
                dW = dW_buf
            if db_buf is not None:
                db_buf[...] = db
                db = db_buf
        if not need_dx:
            return None, dW, db
        if len(x_shape) == 4 and W.ndim == 5:  # shared input: [W̄_1 .. W̄_E]ᵀ [δ_1; ..; δ_E]
            E = W.shape[0]
            dcols = xp.matmul(xp.matrix_transpose(xp.reshape(W, (E * C_out, K))),
                              xp.reshape(d, (E * C_out, d.shape[-1])))
        else:
            dcols = xp.matmul(xp.matrix_transpose(xp.reshape(W, (*W.shape[:-3], K))), d)
        return self.col2im(dcols, x_shape, kh, kw, stride, padding), dW, db

    # -- pooling (no padding; floor mode, as torch's defaults) -------------------------
    def max_pool2d(self, x, k: int, stride: int | None = None):
        """(y, ctx): y[.., h, w] = max over the k×k window at (s·h, s·w); s defaults to k.

        x is (..., H, W) with any leading axes (N, C or E, N, C). ``ctx`` is opaque,
        for `max_pool2d_backward`: the argmax's offset i·k + j in each window. Ties go
        to the first offset in row-major order, as torch; a NaN wins over numbers (y is
        NaN, as torch) and the first NaN is the argmax (torch's CPU kernel takes the last).
        """
        xp = self.xp
        s = k if stride is None else stride
        windows = self._windows(x, k, k, s, 0)
        best = windows[0]
        idx = xp.zeros(best.shape, dtype=xp.int32, device=array_api_compat.device(x))
        for o in range(1, k * k):
            t = windows[o]
            take = xp.logical_or(t > best, xp.logical_and(xp.isnan(t),
                                                          xp.logical_not(xp.isnan(best))))
            best = xp.where(take, t, best)
            idx = xp.where(take, xp.asarray(o, dtype=xp.int32, device=array_api_compat.device(x)),
                           idx)
        return best, (idx, k, s)

    def max_pool2d_backward(self, ctx, dy, x_shape):
        """dx (x_shape): each dy[.., h, w] routed to its window's argmax, summed where
        overlapping windows (s < k) share an argmax."""
        xp = self.xp
        idx, k, s = ctx
        zero = xp.zeros((), dtype=dy.dtype, device=array_api_compat.device(dy))
        parts = [xp.where(idx == o, dy, zero) for o in range(k * k)]
        return self._scatter_windows(parts, x_shape[-2], x_shape[-1], k, k, s, 0)

    def avg_pool2d(self, x, k: int, stride: int | None = None):
        """(y, ctx): y = (Σ of the k×k window) / k², torch's avg_pool2d with padding 0."""
        s = k if stride is None else stride
        windows = self._windows(x, k, k, s, 0)
        total = windows[0]
        for t in windows[1:]:
            total = total + t
        return total / float(k * k), (k, s)

    def avg_pool2d_backward(self, ctx, dy, x_shape):
        """dx (x_shape): dy / k² added to every pixel of its window."""
        k, s = ctx
        g = dy / float(k * k)
        return self._scatter_windows([g] * (k * k), x_shape[-2], x_shape[-1], k, k, s, 0)
