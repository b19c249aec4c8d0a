"""The CuPy twin's fused elementwise kernels (activation backward, dropout), run as host C++.

An ElementwiseKernel body is a snippet of C++ run once per element with the
element index ``i``: here it runs in a plain loop, compiled without FMA
contraction as the twin compiles it (--fmad=false). The backward kernels must give
the reference's numbers bit for bit; the dropout mask must keep 1 − p of the
units, independently, reproducibly from its key. The snippets are read from the
kernel specs the twin builds its kernels from (`dense.cuda_sources()`), so CuPy is
never called; tests/test_cuda_compile.py compiles them as device code and
tests/test_cupy_twin.py launches them on a GPU.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import array_api_compat.numpy as np_compat
import numpy as np
import pytest

from nnkernel.kernels.cupy import dense
from nnkernel.nn.activations import get_activation

CXX = shutil.which("g++") or shutil.which("c++")


def host_code(ctype):
    backward = {spec.name[len("nnk_"):-len("_backward")]: spec.operation
                for spec in dense.cuda_sources() if spec.name.endswith("_backward")}
    assert sorted(backward) == ["relu", "sigmoid", "tanh"]
    code = [f"namespace {ctype}_ {{ typedef {ctype} T;"]
    for name, body in backward.items():
        code.append(f'extern "C" void {name}_{ctype}(const T* a_, const T* da_, T* dz_, long n) '
                    "{ for (long i = 0; i < n; ++i) { const T a = a_[i], da = da_[i]; "
                    f"T& dz = dz_[i]; {body} }} }}")
    code.append(f'extern "C" void dropout_{ctype}(const T* x_, unsigned long long key, '
                "double p, T scale, T* y_, T* mask_, long n) { for (long i = 0; i < n; ++i) "
                "{ const T x = x_[i]; T& y = y_[i]; T& mask = mask_[i]; "
                + dense.DROPOUT.operation + " } }")
    return "\n".join(code) + "}\n"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler")
    folder = tmp_path_factory.mktemp("elementwise")
    (folder / "k.cpp").write_text("#include <cmath>\n" + host_code("float") + host_code("double"))
    subprocess.run([CXX, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o",
                    str(folder / "k.so"), str(folder / "k.cpp")], check=True,
                   capture_output=True, timeout=120)
    return ctypes.CDLL(str(folder / "k.so"))


def ptr(a):
    return ctypes.c_void_p(a.ctypes.data)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_backward_is_the_reference_bit_for_bit(host, name, dtype):
    rng = np.random.default_rng(0)
    g = get_activation(name)
    z = (rng.standard_normal(1000) * 3).astype(dtype)
    z[:3] = [0.0, -0.0, np.nan]
    a = g.forward(np_compat, z)
    da = rng.standard_normal(1000).astype(dtype)
    da[3:5] = [np.inf, np.nan]
    want = g.backward(np_compat, z, a, da)
    got = np.empty_like(da)
    ctype = "float" if dtype == "float32" else "double"
    getattr(host, f"{name}_{ctype}")(ptr(a), ptr(da), ptr(got), ctypes.c_long(a.size))
    np.testing.assert_array_equal(got, want)


def dropout(host, x, key, p):
    y, mask = np.empty_like(x), np.empty_like(x)
    scalar = ctypes.c_float if x.dtype == np.float32 else ctypes.c_double
    fn = getattr(host, f"dropout_{'float' if x.dtype == np.float32 else 'double'}")
    fn(ptr(x), ctypes.c_ulonglong(key), ctypes.c_double(p), scalar(1.0 / (1.0 - p)), ptr(y),
       ptr(mask), ctypes.c_long(x.size))
    return y, mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_one_minus_p_independently(host, p):
    n = 200_000
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    y, mask = dropout(host, x, 0x1234_5678_9ABC_DEF0, p)
    keep = mask != 0
    assert set(np.unique(mask).tolist()) == {0.0, np.float32(1.0 / (1.0 - p))}
    np.testing.assert_array_equal(y, x * mask)
    sd = np.sqrt(p * (1 - p) / n)
    assert abs(keep.mean() - (1 - p)) < 5 * sd
    both = (keep[1:] & keep[:-1]).mean()  # neighbours are independent
    assert abs(both - (1 - p) ** 2) < 5 * np.sqrt((1 - p) ** 2 / n)
    halves = keep.reshape(2, -1).mean(axis=1)  # no drift along the index
    assert abs(halves[0] - halves[1]) < 7 * sd


def test_dropout_masks_are_a_function_of_the_key(host):
    x = np.ones(10_000)
    _, a = dropout(host, x, 7, 0.5)
    _, again = dropout(host, x, 7, 0.5)
    _, other = dropout(host, x, 8, 0.5)
    np.testing.assert_array_equal(a, again)
    assert 0.45 < ((a != 0) == (other != 0)).mean() < 0.55  # unrelated masks agree half the time
