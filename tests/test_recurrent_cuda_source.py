"""The CuPy twin's fused recurrent-step kernels, run as host C++ against the reference.

Each ElementwiseKernel body of nnkernel/kernels/cupy/recurrent.py (`_KERNELS`,
read from the file's text: CuPy is never imported) runs here once per element
``i`` in a plain C++ loop, compiled without FMA contraction as the twin compiles
it: raw arrays are pointers (contiguous here; CuPy's raw indexing follows a
view's strides, which the GPU test below exercises), the other inputs one
element each, broadcast beforehand. Every output must equal the reference
kernels' (NumPy) to a few ulps, with and without a mask and a dy, in float32
and float64. Where CuPy sees a GPU, the twin itself is launched and compared.
"""

from __future__ import annotations

import ast
import ctypes
import shutil
import subprocess
from pathlib import Path

import array_api_compat.numpy as np_compat
import numpy as np
import pytest
from conftest import backend_unavailable

from nnkernel.kernels import Kernels

MODULE = Path(__file__).resolve().parents[1] / "nnkernel" / "kernels" / "cupy" / "recurrent.py"
CXX = shutil.which("g++") or shutil.which("c++")
REF = Kernels(np_compat)
B, H = 5, 3
RTOL = {"float32": 4e-6, "float64": 1e-14}


def kernels():
    tree = ast.parse(MODULE.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign)
                and getattr(n.targets[0], "id", None) == "_KERNELS")
    return ast.literal_eval(node.value)


def params(text):
    """[(raw, type, name)] of an ElementwiseKernel parameter list."""
    out = []
    for item in text.split(","):
        words = item.split()
        out.append((words[0] == "raw", words[-2], words[-1]))
    return out


def host_function(name, ins, outs, body, ctype):
    ctypes_of = {"T": ctype, "bool": "unsigned char", "int64": "long long"}
    args, loads = [], []
    for raw, typ, var in params(ins):
        if typ == "int64":
            args.append(f"long long {var}")
        elif raw:
            args.append(f"const {ctypes_of[typ]}* {var}")
        else:
            args.append(f"const {ctypes_of[typ]}* {var}_")
            cast = "(bool)" if typ == "bool" else ""
            loads.append(f"const {'bool' if typ == 'bool' else ctype} {var} = {cast}{var}_[i];")
    for raw, _, var in params(outs):
        args.append(f"{ctype}* {var}" if raw else f"{ctype}* {var}_")
        if not raw:
            loads.append(f"{ctype}& {var} = {var}_[i];")
    return (f'extern "C" void {name}_{ctype}({", ".join(args)}, long n) {{\n'
            f"  for (ptrdiff_t i = 0; i < n; ++i) {{ {' '.join(loads)}\n{body}\n  }}\n}}\n")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler")
    code = ["#include <cmath>", "#include <cstddef>", "using std::tanh;"]
    for ctype in ("float", "double"):
        code.append(f"namespace {ctype}_ {{ typedef {ctype} T;")
        code += [host_function(n, *spec, ctype) for n, spec in kernels().items()]
        code.append("}")
    folder = tmp_path_factory.mktemp("recurrent")
    (folder / "k.cpp").write_text("\n".join(code))
    subprocess.run([CXX, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o",
                    str(folder / "k.so"), str(folder / "k.cpp")], check=True,
                   capture_output=True, timeout=120)
    return ctypes.CDLL(str(folder / "k.so"))


def run(host, name, dtype, inputs, outputs):
    """Call kernel ``name`` with host arrays in parameter order; fills ``outputs``."""
    ins, outs, _ = kernels()[name]
    ctype = "float" if dtype == "float32" else "double"
    args, alive = [], []  # the broadcast copies live until the call returns
    for (raw, typ, _), value in zip(params(ins), inputs, strict=True):
        if typ == "int64":
            args.append(ctypes.c_longlong(value))
            continue
        if not raw:
            want = np.uint8 if typ == "bool" else dtype
            value = np.ascontiguousarray(np.broadcast_to(value, (B, H)), dtype=want)
            alive.append(value)
        args.append(ctypes.c_void_p(value.ctypes.data))
    args += [ctypes.c_void_p(o.ctypes.data) for o in outputs]
    getattr(host, f"{name}_{ctype}")(*args, ctypes.c_long(B * H))
    return outputs


def check(got, want, dtype, what):
    want = np.zeros_like(got) if want is None else want
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype], err_msg=what)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("with_dy", [False, True], ids=["no_dy", "dy"])
def test_step_kernels_compute_the_reference(host, dtype, masked, with_dy):
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape) * 1.5).astype(dtype)

    keep = np.array([[True], [False], [True], [True], [False]]) if masked else None
    k_in = True if keep is None else keep
    h0, c0, dh, dc = rand(B, H), rand(B, H), rand(B, H), rand(B, H)
    dy = rand(B, H) if with_dy else None
    dy_in = np.zeros((B, H), dtype) if dy is None else dy
    new = lambda *shape: np.empty(shape, dtype)  # noqa: E731

    for act in ("tanh", "relu"):
        xw, hh = rand(B, H), rand(B, H)
        h_ref, saved = REF.rnn_step(xw, hh, h0, keep, act)
        (h,) = run(host, f"rnn_{act}_step", dtype, [xw, hh, h0, k_in], [new(B, H)])
        check(h, h_ref, dtype, f"rnn {act} h")
        dA_ref, skip_ref = REF.rnn_step_backward(dh, dy, saved, keep, act)
        dA, skip = run(host, f"rnn_{act}_backward", dtype, [dh, dy_in, h, k_in],
                       [new(B, H), new(B, H)])
        check(dA, dA_ref, dtype, f"rnn {act} dA")
        check(skip, skip_ref, dtype, f"rnn {act} skip")

    xw, hh = rand(B, 4 * H), rand(B, 4 * H)
    h_ref, c_ref, saved = REF.lstm_step(xw, hh, h0, c0, keep)
    h, c, gates, tanh_c = run(host, "lstm_step", dtype, [xw, hh, h0, c0, k_in, H],
                              [new(B, H), new(B, H), new(B, 4 * H), new(B, H)])
    for got, want, what in ((h, h_ref, "h"), (c, c_ref, "c"),
                            (gates, np.concatenate(saved[:4], axis=1), "gates"),
                            (tanh_c, saved[4], "tanh c")):
        check(got, want, dtype, f"lstm {what}")
    refs = REF.lstm_step_backward(dh, dy, dc, saved, c0, keep)
    outs = run(host, "lstm_backward", dtype, [dh, dy_in, dc, gates, tanh_c, c0, k_in, H],
               [new(B, 4 * H), new(B, H), new(B, H)])
    for got, want, what in zip(outs, refs, ("dA", "dc_prev", "skip"), strict=True):
        check(got, want, dtype, f"lstm {what}")

    xw, hh, b_hn = rand(B, 3 * H), rand(B, 3 * H), rand(H)
    h_ref, saved = REF.gru_step(xw, hh, h0, b_hn, keep)
    h, gates, hn = run(host, "gru_step", dtype, [xw, hh, h0, b_hn, k_in, H],
                       [new(B, H), new(B, 3 * H), new(B, H)])
    for got, want, what in ((h, h_ref, "h"), (gates, np.concatenate(saved[:3], axis=1), "gates"),
                            (hn, saved[3], "hn")):
        check(got, want, dtype, f"gru {what}")
    refs = REF.gru_step_backward(dh, dy, saved, h0, keep)
    outs = run(host, "gru_backward", dtype, [dh, dy_in, gates, hn, h0, k_in, H],
               [new(B, 3 * H), new(B, 3 * H), new(B, H)])
    for got, want, what in zip(outs, refs, ("dxw", "dhh", "skip"), strict=True):
        check(got, want, dtype, f"gru {what}")


def test_a_wrong_body_is_caught(host):
    """The harness itself: a kernel whose gate order is swapped must fail the comparison."""
    dtype, rng = "float64", np.random.default_rng(1)
    xw, hh = rng.standard_normal((B, 4 * H)), rng.standard_normal((B, 4 * H))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    swapped = np.concatenate([xw[:, H:2 * H], xw[:, :H], xw[:, 2 * H:]], axis=1)  # f, i, g, o
    h_ref, _, _ = REF.lstm_step(xw, hh, h0, c0)
    h = run(host, "lstm_step", dtype, [swapped, hh, h0, c0, True, H],
            [np.empty((B, H)), np.empty((B, H)), np.empty((B, 4 * H)), np.empty((B, H))])[0]
    assert not np.allclose(h, h_ref)


# -- on a GPU: the twin itself, with a step's strided view of the projection -------------------
NO_GPU = backend_unavailable("cupy")


@pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_cupy_twin_steps_equal_the_reference_on_a_gpu(dtype, masked):
    import array_api_compat.cupy as cp_compat
    import cupy

    from nnkernel.kernels.cupy import CupyKernels

    ref, twin = Kernels(cp_compat), CupyKernels(cp_compat)
    rng = np.random.default_rng(2)

    def rand(*shape):
        return cupy.asarray(rng.standard_normal(shape).astype(dtype))

    keep = cupy.asarray(np.array([[True], [False], [True], [True], [False]])) if masked else None
    h0, c0, dh, dc, dy = (rand(B, H) for _ in range(5))
    b_hn = rand(H)
    for G, cell in ((1, "rnn"), (4, "lstm"), (3, "gru")):
        xw = rand(B, 7, G * H)[:, 3, :]   # strided, as the loop passes it
        hh = rand(B, G * H)
        outs = []
        for k in (ref, twin):
            if cell == "rnn":
                h, s = k.rnn_step(xw, hh.copy(), h0, keep, "tanh")
                outs.append((h, *k.rnn_step_backward(dh, dy, s, keep, "tanh")))
            elif cell == "lstm":
                h, c, s = k.lstm_step(xw, hh.copy(), h0, c0, keep)
                outs.append((h, c, *k.lstm_step_backward(dh, None, dc, s, c0, keep)))
            else:
                h, s = k.gru_step(xw, hh.copy(), h0, b_hn, keep)
                outs.append((h, *k.gru_step_backward(dh, dy, s, h0, keep)))
        for a, b in zip(*outs, strict=True):
            assert (a is None) == (b is None), cell
            if a is not None:
                np.testing.assert_allclose(cupy.asnumpy(b), cupy.asnumpy(a), rtol=RTOL[dtype],
                                           atol=RTOL[dtype], err_msg=cell)
