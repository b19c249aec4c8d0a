"""What each CuPy kernel is made of, readable without CuPy and without a GPU.

A CuPy kernel is a piece of CUDA C++ that CuPy compiles (with NVRTC) the first
time it is launched, so a typo in a kernel body is found only on a GPU, at the
first call. Every kernel of this folder is therefore built from a spec, a small
frozen record of exactly the arguments handed to CuPy, and every module lists
its specs: tests/test_cuda_compile.py wraps each one the way CuPy 14 does and
compiles it as device code for sm_80 and sm_90 on a machine without a GPU.

THE CONTRACT for a module of ``nnkernel/kernels/cupy/`` (attention.py, embedding.py,
recurrent.py, ...), which makes its kernels part of that compile test:

1. Build every kernel from a spec: ``Elementwise(...).build()``,
   ``Reduction(...).build()``, ``Raw(...).kernel()`` / ``Raw(...).module()``. Never
   call ``cupy.ElementwiseKernel`` / ``ReductionKernel`` / ``RawKernel`` /
   ``RawModule`` directly (the test checks the module text for that), so the
   source compiled in CI is the source that runs.
2. Define ``cuda_sources()`` at module level: a list of every spec the module can
   build — every flag combination of a kernel factory, and for a ``Raw`` source
   every C type it is instantiated with. ``dtypes`` says which dtypes ``T`` takes
   at run time (the ones the module's Python code lets through).
3. Nothing else: `nnkernel.kernels.cupy.cuda_sources()` finds every module of the
   folder (a module without ``cuda_sources`` fails the test), and a spec's name
   with its dtypes must be unique across the folder.

``scalars`` names the parameters passed as Python or NumPy scalars at the call
site (CuPy then declares them by value rather than as arrays); ``ndim`` is the
number of dimensions the arrays keep after CuPy merges contiguous ones (2 where
an operand is broadcast, as a bias over rows).
"""

from __future__ import annotations

from dataclasses import dataclass

FLOATS = ("float32", "float64", "float16")  # what a T parameter may be at run time

# A warp's sum and maximum by shuffles, for raw sources that take a row per warp (T: the
# source's float type); no '%' in it, so it joins sources that are %-formatted.
WARP_REDUCTIONS = r"""
__device__ __forceinline__ T warp_sum(T x) {
    for (int offset = 16; offset > 0; offset >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

__device__ __forceinline__ T warp_max(T x) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        T other = __shfl_xor_sync(0xffffffffu, x, offset);
        x = other > x ? other : x;
    }
    return x;
}
"""


@dataclass(frozen=True)
class Elementwise:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name, ...)``."""

    name: str
    in_params: str
    out_params: str
    operation: str
    options: tuple[str, ...] = ()
    preamble: str = ""
    dtypes: tuple[str, ...] = FLOATS
    scalars: frozenset[str] = frozenset()
    ndim: int = 1

    def build(self):
        import cupy

        kwargs = {"options": self.options} if self.options else {}
        if self.preamble:
            kwargs["preamble"] = self.preamble
        return cupy.ElementwiseKernel(self.in_params, self.out_params, self.operation,
                                      self.name, **kwargs)


@dataclass(frozen=True)
class Reduction:
    """``cupy.ReductionKernel(in_params, out_params, map, reduce, post_map, identity, name)``.

    CuPy runs it as its own block reduction or, for contiguous inputs of at least
    128 elements, through CUB (one pass per row, or two passes for a full
    reduction): the compile test compiles all three sources.
    """

    name: str
    in_params: str
    out_params: str
    map_expr: str
    reduce_expr: str
    post_map_expr: str
    identity: str
    reduce_type: str | None = None
    options: tuple[str, ...] = ()
    preamble: str = ""
    dtypes: tuple[str, ...] = FLOATS

    def build(self):
        import cupy

        kwargs = {"options": self.options} if self.options else {}
        if self.reduce_type is not None:
            kwargs["reduce_type"] = self.reduce_type
        if self.preamble:
            kwargs["preamble"] = self.preamble
        return cupy.ReductionKernel(self.in_params, self.out_params, self.map_expr,
                                    self.reduce_expr, self.post_map_expr, self.identity,
                                    self.name, **kwargs)


@dataclass(frozen=True)
class Raw:
    """A complete CUDA source: ``cupy.RawKernel(code, name)`` or ``cupy.RawModule(code=code)``.

    ``name`` identifies the source (and is the kernel of ``kernel()``); ``functions``
    lists its ``extern "C"`` kernels; ``dtype`` is the C type it was written for.
    """

    name: str
    code: str
    functions: tuple[str, ...]
    dtype: str
    options: tuple[str, ...] = ()

    def kernel(self):
        import cupy

        kwargs = {"options": self.options} if self.options else {}
        return cupy.RawKernel(self.code, self.name, **kwargs)

    def module(self):
        import cupy

        kwargs = {"options": self.options} if self.options else {}
        return cupy.RawModule(code=self.code, **kwargs)
