"""NumPy twin of the convolution and pooling kernels: same numbers, fewer passes.

What the standard makes the reference do with whole-array temporaries, NumPy
does in place:

- im2col: `sliding_window_view` gives every window as a view; one copy in the
  column order (C, kH, kW, N, H_out, W_out) makes X̂. No kH·kW slices, no stack.
- col2im: dx is accumulated offset by offset, ``dx[.., i::s, j::s] += ...``,
  into strided views of one zeroed array, clipped to the unpadded input (no
  padded buffer, no crop, no zero-interleaving).
- the products are one GEMM per sample (a stacked matmul over strided views
  of X̂) where K < L (a first layer), which writes z in NCHW order with no
  transpose, else one product with the batch inside the long dimension and
  the bias add fused into the (C_out, N) -> (N, C_out) transpose of z; dW and
  db are written into the model's gradient buffers (``out=``), db as δ·1 (a
  matrix-vector product: faster than a sum along a strided axis).
- pooling works on the k² strided views of x, one per window offset: max-pool
  keeps a running maximum and the offset of the first maximum (int8), and its
  backward writes dy into each offset's view of dx where that offset won.

Contexts from these methods are for this class's backward methods only.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..reference.conv import ConvKernels, check_conv_shapes, conv_out_size, window_slice


def _clipped(i: int, stride: int, padding: int, n: int, n_out: int):
    """(input slice, output slice) of kernel offset i that fall inside the unpadded input:
    the outputs o with 0 <= i + s·o − p < n. None when there are none."""
    lo = max(0, -((i - padding) // stride))  # ⌈(p − i)/s⌉
    hi = min(n_out - 1, (n - 1 + padding - i) // stride)
    if hi < lo:
        return None
    start = i + stride * lo - padding
    return window_slice(start, stride, hi - lo + 1), slice(lo, hi + 1)


def _fill(buf, shape, compute):
    """compute(out) with out a view of ``buf`` reshaped to ``shape``; the buffer is returned.

    A reshape of a non-contiguous buffer would silently be a copy, so then the
    result is computed fresh and assigned.
    """
    if buf is None:
        return None
    if buf.flags.c_contiguous:
        compute(buf.reshape(shape))
    else:
        buf[...] = compute(None).reshape(buf.shape)
    return buf


class NumpyConvKernels(ConvKernels):
    """The conv / pooling kernels on NumPy arrays; mixed into `NumpyKernels`."""

    def im2col(self, x, kh, kw, stride=1, padding=0):
        *lead, N, C, H, W = x.shape
        H_out = conv_out_size(H, kh, stride, padding)
        W_out = conv_out_size(W, kw, stride, padding)
        if padding:
            p = padding
            padded = np.zeros((*lead, N, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
            padded[..., p:p + H, p:p + W] = x
            x = padded
        win = sliding_window_view(x, (kh, kw), axis=(-2, -1))[..., ::stride, ::stride, :, :]
        m = len(lead)  # win: (.., N, C, h, w, kh, kw) -> (.., C, kh, kw, N, h, w)
        cols = np.ascontiguousarray(win.transpose(*range(m), m + 1, m + 4, m + 5, m, m + 2,
                                                  m + 3))
        return cols.reshape(*lead, C * kh * kw, N * H_out * W_out)

    def col2im(self, cols, x_shape, kh, kw, stride=1, padding=0):
        *lead, N, C, H, W = x_shape
        H_out = conv_out_size(H, kh, stride, padding)
        W_out = conv_out_size(W, kw, stride, padding)
        t = cols.reshape(*lead, C, kh, kw, N, H_out, W_out)
        dx = np.zeros(tuple(x_shape), dtype=cols.dtype)
        for i in range(kh):
            rows = _clipped(i, stride, padding, H, H_out)
            if rows is None:
                continue
            for j in range(kw):
                columns = _clipped(j, stride, padding, W, W_out)
                if columns is None:
                    continue
                part = t[..., i, j, :, rows[1], columns[1]]  # (.., C, N, h, w)
                dx[..., rows[0], columns[0]] += np.swapaxes(part, -4, -3)
        return dx

    # Products per sample, where K < L (a first layer: K = C_in·kH·kW = 9 against L = 784
    # pixels). Z_n = W̄ X̂_n, X̂_n being sample n's L columns of X̂ (a strided view): one
    # stacked matmul, a GEMM per sample, writes z straight in NCHW order (.., N, C_out, L)
    # with no transpose copy of z (nor of δ back), and OpenBLAS runs the long, thin
    # (C_out, 9)·(9, N·L) product several times slower than the 128 per-sample ones.
    # Where K >= L the one (C_out, K)·(K, N·L) product is the faster form, transpose
    # included, because OpenBLAS spreads one large GEMM over its threads better than
    # many small ones (bench/history/2026-12-01-cnn-step.md).
    @staticmethod
    def _per_sample(cols, N):
        """X̂ (.., K, N·L) as its per-sample blocks (.., N, K, L), a view."""
        return np.moveaxis(cols.reshape(*cols.shape[:-1], N, cols.shape[-1] // N), -2, -3)

    def conv2d(self, x, W, b, stride=1, padding=0):
        check_conv_shapes(x.shape, W.shape)
        C_out, C_in, kh, kw = W.shape[-4:]
        cols = self.im2col(x, kh, kw, stride, padding)
        N = x.shape[-4]
        H_out = conv_out_size(x.shape[-2], kh, stride, padding)
        W_out = conv_out_size(x.shape[-1], kw, stride, padding)
        K, L = C_in * kh * kw, H_out * W_out
        if K < L:
            W2 = W.reshape(*W.shape[:-4], 1, C_out, K)  # broadcast over the samples
            z = np.matmul(W2, self._per_sample(cols, N))  # (.., N, C_out, L)
            if b is not None:
                z += b[..., None, :, None]
            return z.reshape(*z.shape[:-1], H_out, W_out), cols
        z2 = np.matmul(W.reshape(*W.shape[:-3], K), cols)  # (.., C_out, N·L)
        lead = z2.shape[:-2]
        src = np.swapaxes(z2.reshape(*lead, C_out, N, H_out, W_out), -4, -3)
        z = np.empty((*lead, N, C_out, H_out, W_out), dtype=z2.dtype)
        if b is None:
            np.copyto(z, src)
        else:  # the bias add is the transpose's copy
            np.add(src, b[..., None, :, None, None], out=z)
        return z, cols

    def conv2d_backward(self, x_shape, cols, W, dz, stride=1, padding=0, need_dx=True,
                        out=None):
        dW_buf, db_buf = (None, None) if out is None else out
        C_out, C_in, kh, kw = W.shape[-4:]
        K = C_in * kh * kw
        *lead, N, _, H_out, W_out = dz.shape
        L = H_out * W_out
        W2_shape = (*W.shape[:-3], K)
        summed = len(x_shape) == 4 and W.ndim == 5  # a shared input's dx: Σ over members
        if K < L and not summed:
            # Per sample: dW = Σ_n δ_n X̂_nᵀ, whose (.., N, C_out, K) partial products are
            # smaller than the transpose of δ the one-product form needs when K < L.
            dz3 = dz.reshape(*lead, N, C_out, L)
            per_sample = self._per_sample(cols, N)
            parts = np.matmul(dz3, np.swapaxes(per_sample, -1, -2))
            dW = _fill(dW_buf, W2_shape, lambda o: np.add.reduce(parts, axis=-3, out=o))
            if dW is None:
                dW = np.add.reduce(parts, axis=-3).reshape(W.shape)
            row_sums = np.matmul(dz3, np.ones(L, dtype=dz.dtype))  # (.., N, C_out)
            db = _fill(db_buf, (*lead, C_out), lambda o: np.add.reduce(row_sums, axis=-2,
                                                                        out=o))
            if db is None:
                db = np.add.reduce(row_sums, axis=-2)
            if not need_dx:
                return None, dW, db
            dcols = np.empty((*x_shape[:-4], K, N * L), dtype=dz.dtype)
            W2T = np.swapaxes(W.reshape(*W.shape[:-4], 1, C_out, K), -1, -2)
            np.matmul(W2T, dz3, out=self._per_sample(dcols, N))  # dX̂_n = W̄ᵀ δ_n
            return self.col2im(dcols, x_shape, kh, kw, stride, padding), dW, db
        # One product each, the batch inside the long dimension: δ as (.., C_out, N·L)
        d = np.ascontiguousarray(np.swapaxes(dz, -4, -3)).reshape(*lead, C_out, -1)
        colsT = np.swapaxes(cols, -1, -2)  # BLAS reads the transpose in place
        dW = _fill(dW_buf, W2_shape, lambda o: np.matmul(d, colsT, out=o))
        if dW is None:
            dW = np.matmul(d, colsT).reshape(W.shape)
        ones = np.ones(d.shape[-1], dtype=d.dtype)
        db = _fill(db_buf, d.shape[:-1], lambda o: np.matmul(d, ones, out=o))
        if db is None:
            db = np.matmul(d, ones)
        if not need_dx:
            return None, dW, db
        if summed:  # Σ_e W̄_eᵀ δ_e in one product
            E = W.shape[0]
            dcols = W.reshape(E * C_out, K).T @ d.reshape(E * C_out, -1)
        else:
            dcols = np.matmul(np.swapaxes(W.reshape(W2_shape), -1, -2), d)
        return self.col2im(dcols, x_shape, kh, kw, stride, padding), dW, db

    # -- pooling --------------------------------------------------------------------
    # Each window offset (i, j) is one strided view of x, x[.., i + s·h, j + s·w], so
    # pooling is k² element-wise passes over output-sized arrays. (Gathering the windows
    # into a (.., k²) copy and calling argmax over that short last axis, as before, took
    # 5-10x longer: a copy of the whole input, then NumPy's per-row loop overhead.)
    @staticmethod
    def _offsets(x, k, s):
        H_out, W_out = conv_out_size(x.shape[-2], k, s, 0), conv_out_size(x.shape[-1], k, s, 0)
        return [x[..., window_slice(i, s, H_out), window_slice(j, s, W_out)]
                for i in range(k) for j in range(k)]

    @staticmethod
    def _dx_for(dy, x_shape, k, s):
        """dx to write each offset's view into: uninitialised where the windows tile x
        exactly (every pixel is written once), else zeros."""
        H_out, W_out = dy.shape[-2:]
        exact = s == k and (H_out * k, W_out * k) == tuple(x_shape[-2:])
        return (np.empty if exact else np.zeros)(tuple(x_shape), dtype=dy.dtype)

    def max_pool2d(self, x, k, stride=None):
        s = k if stride is None else stride
        views = self._offsets(x, k, s)
        y = views[0].copy()
        small = k * k <= 127
        itype = np.int8 if small else np.int32
        idx = np.zeros(y.shape, dtype=itype)  # the offset of each window's first maximum
        take = np.empty(y.shape, dtype=bool)
        offset = np.empty(y.shape, dtype=itype)
        for o, v in enumerate(views[1:], 1):
            np.greater(v, y, out=take)  # strictly greater: ties keep the first maximum
            # idx = where(take, o, idx) as max(idx, o·take): o exceeds every earlier offset.
            # (np.copyto(idx, o, where=take) is 8x slower: NumPy's masked assignment loop.)
            np.multiply(take.view(np.int8) if small else take, itype(o), out=offset)
            np.maximum(idx, offset, out=idx)
            np.maximum(y, v, out=y)  # a NaN propagates into y (as torch) ...
        if np.isnan(np.add.reduce(y, axis=None)):  # ... and its window's argmax is the first NaN
            pending = np.isnan(y)
            for o, v in enumerate(views):
                hit = pending & np.isnan(v)
                np.copyto(idx, o, where=hit)
                pending &= ~hit
        return y, (idx, k, s)

    def max_pool2d_backward(self, ctx, dy, x_shape):
        idx, k, s = ctx
        H_out, W_out = dy.shape[-2:]
        hit = np.empty(idx.shape, dtype=bool)
        dx = self._dx_for(dy, x_shape, k, s)
        # dy·[idx == o] written straight into the offset's view of dx; that is dy routed to
        # the argmax (and ±0 elsewhere) only for a finite dy (NaN·0 is NaN), so a non-finite
        # dy takes `where`, 3x slower here, as does a masked copyto (6x).
        finite = bool(np.isfinite(np.add.reduce(dy, axis=None)))
        for o in range(k * k):
            i, j = divmod(o, k)
            view = dx[..., window_slice(i, s, H_out), window_slice(j, s, W_out)]
            np.equal(idx, o, out=hit)
            routed = np.multiply(dy, hit, out=view if s == k else None) if finite else \
                np.where(hit, dy, 0.0)
            if s != k:  # overlapping windows: accumulate offset by offset
                view += routed
            elif not finite:  # windows do not overlap: each view is written once
                view[...] = routed
        return dx

    def avg_pool2d(self, x, k, stride=None):
        s = k if stride is None else stride
        views = self._offsets(x, k, s)
        y = views[0].copy()
        for v in views[1:]:  # Σ in offset order, as the reference adds them
            y += v
        y /= k * k
        return y, (k, s)

    def avg_pool2d_backward(self, ctx, dy, x_shape):
        k, s = ctx
        g = dy / (k * k)
        H_out, W_out = dy.shape[-2:]
        dx = self._dx_for(dy, x_shape, k, s)
        for i in range(k):
            for j in range(k):
                view = dx[..., window_slice(i, s, H_out), window_slice(j, s, W_out)]
                if s == k:
                    view[...] = g
                else:
                    view += g
        return dx
