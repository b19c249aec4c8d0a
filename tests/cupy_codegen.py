"""The full CUDA source CuPy 14.2 compiles for a kernel spec (nnkernel/kernels/cupy/specs.py).

CuPy wraps an ElementwiseKernel body in a ``__global__`` loop over a ``CIndexer``,
with its parameters as ``CArray`` (arrays) or by value (scalars), and a
ReductionKernel's expressions in a shared-memory block reduction or, for
contiguous inputs of 128 elements and more, in a CUB ``BlockReduce`` kernel (one
pass per row, or two passes for a full reduction). This module writes those
sources as CuPy 14.2.0 does, copied from github.com/cupy/cupy at v14.2.0:

- ``cupy/_core/_kernel.pyx``: ``_get_simple_elementwise_kernel_code``,
  ``_get_elementwise_kernel_code``, ``_get_kernel_params``, ``_ArgInfo.get_c_type``,
  ``ParameterInfo``, ``_decide_params_type_core`` (the sorted type map);
- ``cupy/_core/_reduction.pyx``: ``_create_reduction_function_code``,
  ``_ReductionKernel_get_cached_function_code`` (block size 512, ``IndexT`` int32);
- ``cupy/_core/_cub_reduction.pyx``: ``_create_cub_reduction_function``,
  ``_try_to_call_cub_reduction`` (parameters renamed to in0/out0, ``sizeT``),
  ``_cub_two_pass_launch``, ``_get_cub_block_specs`` (4 items per thread);
- ``cupy/_core/core.pyx``: ``compile_with_cache`` (the four headers prepended),
  ``assemble_cupy_compiler_options`` (``--std=c++17``, CCCL include paths first);
  ``cupy/cuda/compiler.py``: ``-ftz=true``, ``-arch=sm_XX``,
  ``--device-as-default-execution-space`` (NVRTC).

tests/test_cuda_compile.py checks the elementwise and block-reduction sources
against CuPy's own generators where CuPy is installed (those are plain Python
functions there; the CUB one is not reachable without a GPU).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from nnkernel.kernels.cupy.specs import Elementwise, Reduction

CUPY_HEADER = "".join(f"#include <{h}>\n" for h in (
    "cupy/complex.cuh", "cupy/carray.cuh", "cupy/atomics.cuh", "cupy/math_constants.h"))
TYPENAMES = {"float64": "double", "float32": "float", "float16": "float16",
             "int64": "long long", "int32": "int", "int16": "short", "int8": "signed char",
             "uint64": "unsigned long long", "uint32": "unsigned int",
             "uint16": "unsigned short", "uint8": "unsigned char", "bool": "bool"}
FLOAT16_DECL = '#include "cupy/float16.cuh"'


@dataclass(frozen=True)
class Param:
    """One entry of CuPy's ``ParameterInfo``: ``[raw] TYPE name``, const for inputs."""

    name: str
    ctype: str  # "T" (a type parameter) or a C type
    dtype: str | None  # for a fixed type
    raw: bool
    is_const: bool


@dataclass(frozen=True)
class Arg:
    """What CuPy's ``_ArgInfo`` records of an argument: kind, dtype, ndim, contiguity."""

    kind: str  # "array", "scalar", "indexer", "pointer"
    dtype: str | None = None
    ndim: int = 0
    contiguous: bool = True


@dataclass(frozen=True)
class Unit:
    """One CUDA source, as CuPy hands it to NVRTC, with the options it adds itself."""

    label: str
    source: str
    options: tuple[str, ...]  # before CuPy's include paths and -ftz=true
    functions: tuple[str, ...]


def parse_params(text: str, is_const: bool) -> list[Param]:
    params = []
    for item in text.strip().split(",") if text.strip() else []:
        *keywords, t, name = item.split()
        raw = "raw" in keywords
        fixed = len(t) > 1
        params.append(Param(name, TYPENAMES[t] if fixed else t, t if fixed else None, raw,
                            is_const and "_non_const" not in keywords))
    return params


def typename(dtype: str, decls: set) -> str:
    if dtype == "float16":
        decls.add(FLOAT16_DECL)
    return TYPENAMES[dtype]


def _c_type(arg: Arg, decls: set) -> str:
    if arg.kind == "array":
        return (f"CArray<{typename(arg.dtype, decls)}, {arg.ndim}, {int(arg.contiguous)}, 1>")
    if arg.kind == "scalar":
        return typename(arg.dtype, decls)
    if arg.kind == "indexer":
        return f"CIndexer<{arg.ndim}, 1>"
    raise ValueError(arg.kind)


def _kernel_params(params, args, decls) -> str:
    """``_get_kernel_params``: const for inputs, ``_raw_`` before array names."""
    out = []
    for p, a in zip(params, args, strict=True):
        ctype = ("const " if p.is_const else "") + _c_type(a, decls)
        name = f"_raw_{p.name}" if a.kind in ("array", "pointer") and not p.raw else p.name
        out.append(f"{ctype} {name}")
    return ", ".join(out)


def typedefs(pairs, decls) -> str:
    return "".join(f"typedef {typename(dtype, decls)} {name};\n" for name, dtype in pairs)


def format_decls(decls: set) -> str:
    return "\n".join(sorted(decls)) + "\n\n" if decls else ""


def dtype_of(p: Param, dtype: str) -> str:
    return p.dtype if p.dtype is not None else dtype


# -- ElementwiseKernel -----------------------------------------------------------------------
_ELEMENTWISE = string.Template('''
    ${type_decls}${typedef_preamble}
    ${preamble}
    extern "C" __global__ void ${name}(${params}) {
      ${loop_prep};
      #pragma unroll 1
      CUPY_FOR(i, _ind.size()) {
        _ind.set(i);
        ${operation};
      }
      ${after_loop};
    }
    ''')


def elementwise_args(spec: Elementwise, dtype: str) -> tuple[list[Param], list[Arg]]:
    params = parse_params(spec.in_params, True) + parse_params(spec.out_params, False)
    args = [Arg("scalar", dtype_of(p, dtype)) if p.name in spec.scalars else
            Arg("array", dtype_of(p, dtype), spec.ndim, spec.ndim == 1) for p in params]
    return (params + [Param("_ind", "CIndexer", None, False, False)],
            args + [Arg("indexer", ndim=spec.ndim)])


def elementwise_code(spec: Elementwise, dtype: str) -> str:
    """``_get_elementwise_kernel_code`` for T = dtype (type map: the T of the spec)."""
    params, args = elementwise_args(spec, dtype)
    decls: set = set()
    kernel_params = _kernel_params(params, args, decls)
    preamble_typedefs = typedefs(type_map(params, dtype), decls)
    op = [("const {t} &{n}" if p.is_const else "{t} &{n}").format(t=p.ctype, n=p.name)
          + f" = _raw_{p.name}[_ind.get()];"
          for p, a in zip(params, args, strict=True) if a.kind == "array" and not p.raw]
    return _ELEMENTWISE.substitute(
        type_decls=format_decls(decls), typedef_preamble=preamble_typedefs,
        preamble=spec.preamble,
        name=spec.name, params=kernel_params, loop_prep="", after_loop="",
        operation="\n".join(op + [spec.operation]))


def type_map(params, dtype) -> list[tuple[str, str]]:
    return sorted({(p.ctype, dtype) for p in params if len(p.ctype) == 1})


def cupy_options(options: tuple[str, ...]) -> tuple[str, ...]:
    """``assemble_cupy_compiler_options``: C++17 unless the kernel names a standard."""
    has_std = any("-std=" in o for o in options)
    return tuple(options) + (() if has_std else ("--std=c++17",))


# -- ReductionKernel: CuPy's own block reduction ---------------------------------------------
_REDUCTION = string.Template('''
${type_decls}${type_preamble}
${preamble}
#define REDUCE(a, b) (${reduce_expr})
#define POST_MAP(a) (${post_map_expr})
#define _REDUCE(_offset) if (_tid < _offset) { \
  _type_reduce _a = _sdata[_tid], _b = _sdata[(_tid + _offset)]; \
  _sdata[_tid] = REDUCE(_a, _b); \
}

typedef ${reduce_type} _type_reduce;
extern "C" __global__ void ${name}(${params}) {
  __shared__ char _sdata_raw[${block_size} * sizeof(_type_reduce)];
  _type_reduce *_sdata = reinterpret_cast<_type_reduce*>(_sdata_raw);
  unsigned int _tid = threadIdx.x;

  IndexT _J_offset = _tid >> __popc(_block_stride - 1); // _tid / _block_stride
  ptrdiff_t _j_offset = (ptrdiff_t)_J_offset * _out_ind.size();
  IndexT _J_stride = ${block_size} >> __popc(_block_stride - 1);
  ptrdiff_t _j_stride = (ptrdiff_t)_J_stride * _out_ind.size();

  for (ptrdiff_t _i_base = (ptrdiff_t)blockIdx.x * _block_stride;
       _i_base < _out_ind.size();
       _i_base += (ptrdiff_t)gridDim.x * _block_stride) {
    _type_reduce _s = _type_reduce(${identity});
    ptrdiff_t _i =
        _i_base + (_tid & (_block_stride - 1));  // _tid % _block_stride
    IndexT _J = _J_offset;
    for (ptrdiff_t _j = _i + _j_offset; _j < _in_ind.size();
         _j += _j_stride, _J += _J_stride) {
      _in_ind.set(_j);
      ${input_expr}
      _type_reduce _a = static_cast<_type_reduce>(${pre_map_expr});
      _s = REDUCE(_s, _a);
    }
    _sdata[_tid] = _s;
    __syncthreads();
    for (unsigned int _block = ${block_size} / 2;
         _block >= _block_stride; _block >>= 1) {
      if (_tid < _block) {
        _REDUCE(_block);
      }
      __syncthreads();
    }
    if (_tid < _block_stride) {
      _s = _sdata[_tid];
    }
    if (_tid < _block_stride && _i < _out_ind.size()) {
      _out_ind.set(static_cast<ptrdiff_t>(_i));
      ${output_expr}
      POST_MAP(_s);
    }
  }
}''')
REDUCTION_BLOCK_SIZE = 512  # _default_block_size on CUDA


def reduction_args(spec: Reduction, dtype: str) -> tuple[list[Param], list[Arg]]:
    """A full reduction of a 1-D array: the in array 1-D, the out array 0-D."""
    ins, outs = parse_params(spec.in_params, True), parse_params(spec.out_params, False)
    params = ins + outs + [Param("_in_ind", "CIndexer", None, False, False),
                           Param("_out_ind", "CIndexer", None, False, False),
                           Param("_block_stride", "int", "int32", False, True)]
    args = ([Arg("array", dtype_of(p, dtype), 1) for p in ins]
            + [Arg("array", dtype_of(p, dtype), 0) for p in outs]
            + [Arg("indexer", ndim=1), Arg("indexer", ndim=0), Arg("scalar", "int32")])
    return params, args


def reduction_code(spec: Reduction, dtype: str) -> str:
    """``_ReductionKernel_get_cached_function_code`` + ``_create_reduction_function_code``."""
    params, args = reduction_args(spec, dtype)
    nin = len(parse_params(spec.in_params, True))
    nout = len(parse_params(spec.out_params, False))
    input_expr = "\n".join(
        (("const {0} {1}" if p.is_const else "{0}& {1}") + " = _raw_{1}[_in_ind.get()];")
        .format(p.ctype, p.name) for p in params[:nin] if not p.raw)
    output_expr = "\n".join(f"{p.ctype} &{p.name} = _raw_{p.name}[_out_ind.get()];"
                            for p in params[nin:nin + nout] if not p.raw and not p.is_const)
    decls: set = set()
    kernel_params = _kernel_params(params, args, decls)
    pairs = type_map(params[:nin + nout], dtype) + [("IndexT", "int32")]
    return _REDUCTION.substitute(
        name=spec.name, block_size=REDUCTION_BLOCK_SIZE,
        reduce_type=spec.reduce_type or params[nin].ctype, params=kernel_params,
        type_decls=format_decls(decls), identity=spec.identity,
        reduce_expr=spec.reduce_expr, pre_map_expr=spec.map_expr,
        post_map_expr=spec.post_map_expr, type_preamble=typedefs(pairs, decls),
        input_expr=input_expr, output_expr=output_expr, preamble=spec.preamble)
