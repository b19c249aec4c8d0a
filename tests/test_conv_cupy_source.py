"""The CuPy twin's CUDA im2col / col2im, compiled as host C++, against the reference.

No GPU is needed: the kernels use a grid-stride loop, so with one block of one
thread (a few lines of stand-ins for CUDA's built-ins) the same source runs on
the CPU and covers every index. This checks the index arithmetic, which is
where such kernels go wrong; launching them through CuPy is tested only where
a GPU is (tests/test_cupy_twin.py's pattern). The source is the spec the twin
builds its module from (`conv.cuda_sources()`), so CuPy is never called;
tests/test_cuda_compile.py compiles it as device code.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import array_api_compat.numpy as np_compat
import numpy as np
import pytest

from nnkernel.kernels.cupy import conv
from nnkernel.kernels.reference.conv import ConvKernels

CXX = shutil.which("g++") or shutil.which("c++")
HOST_STANDINS = """
struct dim3 { unsigned x; };
static const dim3 blockIdx = {0}, blockDim = {1}, gridDim = {1}, threadIdx = {0};
#define __global__
"""


class Reference(ConvKernels):
    xp = np_compat


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler")
    (source,) = [spec.code for spec in conv.cuda_sources() if spec.dtype == "double"]
    folder = tmp_path_factory.mktemp("conv_cuda")
    (folder / "k.cpp").write_text(HOST_STANDINS + source)
    subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(folder / "k.so"),
                    str(folder / "k.cpp")], check=True, capture_output=True, timeout=120)
    return ctypes.CDLL(str(folder / "k.so"))


def launch(fn, src, dst, x_shape, kh, kw, stride, padding):
    *_, N, C, H, W = x_shape
    H_out = (H + 2 * padding - kh) // stride + 1
    W_out = (W + 2 * padding - kw) // stride + 1
    pointer = ctypes.POINTER(ctypes.c_double)
    fn(src.ctypes.data_as(pointer), dst.ctypes.data_as(pointer), ctypes.c_longlong(dst.size),
       *[ctypes.c_int(v) for v in (N, C, H, W, kh, kw, stride, padding, H_out, W_out)])
    return dst


@pytest.mark.parametrize("x_shape, kh, kw, stride, padding", [
    ((2, 3, 7, 6), 3, 3, 1, 1),
    ((2, 3, 8, 9), 3, 3, 2, 0),
    ((1, 2, 9, 7), 5, 5, 2, 1),
    ((2, 4, 5, 6), 1, 1, 2, 1),
    ((3, 1, 6, 7), 2, 3, 2, 1),
    ((1, 2, 7, 7), 3, 3, 3, 1),
    ((2, 2, 2, 7, 6), 3, 3, 2, 1),  # an ensemble's per-member input
])
def test_cuda_im2col_col2im_match_the_reference(host_kernels, x_shape, kh, kw, stride, padding):
    rng = np.random.default_rng(0)
    ref = Reference()
    x = rng.standard_normal(x_shape)
    cols = ref.im2col(x, kh, kw, stride, padding)
    ours = launch(host_kernels.nnk_im2col, x, np.empty_like(cols), x_shape, kh, kw, stride,
                  padding)
    np.testing.assert_array_equal(ours, cols)
    dcols = rng.standard_normal(cols.shape)
    dx = launch(host_kernels.nnk_col2im, dcols, np.empty(x_shape), x_shape, kh, kw, stride,
                padding)
    np.testing.assert_allclose(dx, ref.col2im(dcols, x_shape, kh, kw, stride, padding),
                               rtol=1e-13, atol=1e-13)
