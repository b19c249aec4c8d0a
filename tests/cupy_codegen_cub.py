"""CuPy 14.2's CUB reduction source for a ReductionKernel spec, and every source of a spec.

CuPy runs a ReductionKernel through CUB's ``BlockReduce`` when its input is
contiguous and at least 128 elements are reduced: one pass when rows are reduced
(an ensemble member's sum), two when everything is (partial sums per block, then
their sum). Copied from github.com/cupy/cupy v14.2.0 ``cupy/_core/_cub_reduction.pyx``
(``_create_cub_reduction_function``, ``_try_to_call_cub_reduction``: parameters
renamed to in0/out0 and their types to ``type_in0_raw``/``type_out0_raw``, a
``sizeT``; ``_cub_two_pass_launch``; ``_get_cub_block_specs``: 4 items per thread,
32 to 512 threads). CuPy builds this source only at a launch, so it cannot be
compared with CuPy's own without a GPU; tests/cupy_codegen.py's sources are.
"""

from __future__ import annotations

import string

from cupy_codegen import (
    CUPY_HEADER,
    Unit,
    cupy_options,
    dtype_of,
    elementwise_code,
    format_decls,
    parse_params,
    reduction_code,
    type_map,
    typedefs,
)

from nnkernel.kernels.cupy.specs import Elementwise, Raw, Reduction

CUB_BLOCK_SIZES = (32, 512)  # _get_cub_block_specs's extremes (rows of 128 and of 2048+)

_CUB_INCLUDE = """
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_load.cuh>
"""
_CUB_HEAD = '''
${type_decls}${type_preamble}
${preamble}

typedef ${reduce_type} _type_reduce;

static_assert(sizeof(_type_reduce) <= 32,
    "The intermediate reduction type is assumed to be at most 32 bytes.");

// Compile-time constants for CUB template specializations
#define ITEMS_PER_THREAD  ${items_per_thread}
#define BLOCK_SIZE        ${block_size}

// for hipCUB: use the hipcub namespace
#ifdef __HIP_DEVICE_COMPILE__
#define cub hipcub
#endif

#if defined FIRST_PASS
    typedef type_in0_raw  type_mid_in;
    typedef _type_reduce  type_mid_out;
    #define POST_MAP(a)   out0 = a;
#elif defined SECOND_PASS
    typedef _type_reduce  type_mid_in;
    typedef type_out0_raw type_mid_out;
    #define POST_MAP(a)   (${post_map_expr})
#else  // one-pass reduction
    typedef type_in0_raw  type_mid_in;
    typedef type_out0_raw type_mid_out;
    #define POST_MAP(a)   (${post_map_expr})
#endif

struct _reduction_op {
    __device__ __forceinline__ _type_reduce operator()(
        const _type_reduce &a, const _type_reduce &b) const {
        return ${reduce_expr};
    }
};

extern "C"
__global__ void ${name}(${params}) {
  unsigned int _tid = threadIdx.x;
'''
_CUB_BLOCK_LOAD_TYPE = '''
  // Specialize BlockLoad type for faster (?) loading
  typedef cub::BlockLoad<_type_reduce, BLOCK_SIZE,
                         ITEMS_PER_THREAD, cub::BLOCK_LOAD_DIRECT> BlockLoadT;

  // Shared memory for loading
  __shared__ typename BlockLoadT::TempStorage temp_storage_load;
'''
_CUB_BODY = '''
  // Specialize BlockReduce type for our thread block
  typedef cub::BlockReduce<_type_reduce, BLOCK_SIZE> BlockReduceT;

  // Shared memory for reduction
  __shared__ typename BlockReduceT::TempStorage temp_storage;

  // Declare reduction operation
  _reduction_op op;

  // input & output raw pointers
  const type_mid_in* _in0 = static_cast<const type_mid_in*>(_raw_in0);
  type_mid_out* _out0 = static_cast<type_mid_out*>(_raw_out0);

  // Per-thread tile data
  _type_reduce _sdata[ITEMS_PER_THREAD];
  #pragma unroll
  for (int j = 0; j < ITEMS_PER_THREAD; j++) {
      _sdata[j] = _type_reduce(${identity});
  }

  // each block handles the reduction of 1 segment
  size_t segment_idx = size_t(blockIdx.x) * _segment_size;
  const type_mid_in* segment_head = _in0 + segment_idx;
  size_t i = 0;  // tile head within the segment
  int tile_size = (BLOCK_SIZE * ITEMS_PER_THREAD < _segment_size ?
                   BLOCK_SIZE * ITEMS_PER_THREAD :
                   _segment_size);
  sizeT _seg_size = _segment_size;

  #if defined FIRST_PASS
  // for two-pass reduction only: "last segment" is special
  if (_array_size > 0) {
      if (_array_size - segment_idx <= _segment_size) {
          _seg_size = _array_size - segment_idx;
      }
      #ifdef __HIP_DEVICE_COMPILE__
      // We don't understand HIP...
      __syncthreads();  // Propagate the new value back to memory
      #endif
  }
  #endif

  // loop over tiles within 1 segment
  _type_reduce aggregate = _type_reduce(${identity});
  for (i = 0; i < _seg_size; i += BLOCK_SIZE * ITEMS_PER_THREAD) {
      // for the last tile
      if (_seg_size - i <= tile_size) { tile_size = _seg_size - i; }
'''
_CUB_LOAD_BLOCK = '''
      // load a tile
      BlockLoadT(temp_storage_load).Load(segment_head + i, _sdata, tile_size,
                                         _type_reduce(${identity}));
'''
_CUB_LOAD_MAPPED = '''
      // load a tile
      #pragma unroll
      for (int j = 0; j < ITEMS_PER_THREAD; j++) {
          // index of the element in a tile
          int e_idx = _tid * ITEMS_PER_THREAD + j;

          // some pre_map_expr uses _J internally...
          #if defined FIRST_PASS
          IndexT _J = (segment_idx + i + e_idx);
          #else  // only one pass
          IndexT _J = (segment_idx + i + e_idx) % _seg_size;
          #endif

          if (e_idx < tile_size) {
              const type_mid_in in0 = *(segment_head + i + e_idx);
              _sdata[j] = static_cast<_type_reduce>(${pre_map_expr});
          } else {
              _sdata[j] = _type_reduce(${identity});
          }
      }
'''
_CUB_TAIL = '''
      // Compute block reduction
      // Note that the output is only meaningful for thread 0
      aggregate = op(aggregate, BlockReduceT(temp_storage).Reduce(_sdata, op));

      __syncthreads();  // for reusing temp_storage
  }

  if (_tid == 0) {
      type_mid_out& out0 = *(_out0 + blockIdx.x);
      POST_MAP(aggregate);
  }
}
'''
CUB_ITEMS_PER_THREAD = 4
CUB_PASSES = {"rows": ("", ()), "pass1": ("_pass1", ("-DFIRST_PASS=1",)),
              "pass2": ("_pass2", ("-DSECOND_PASS=1",))}


def cub_code(spec: Reduction, dtype: str, kind: str, block_size: int) -> tuple[str, tuple]:
    """(source without CuPy's headers, options) of ``_create_cub_reduction_function``.

    kind: "rows" (one pass, a row per block: a member's sum), "pass1" / "pass2" (a
    full reduction: per-block partial sums, then their sum in one block).
    """
    (x,) = parse_params(spec.in_params, True)
    (y,) = parse_params(spec.out_params, False)
    pre_map = spec.map_expr.replace(x.name, "in0") if kind != "pass2" else "in0"
    post_map = spec.post_map_expr.replace(y.name, "out0")
    # in (an array, or the partial sums' buffer), out, then the two sizes, by value
    params = "const void* _raw_in0, void* _raw_out0, const int _segment_size, " \
        "const int _array_size"
    pairs = (type_map([x, y], dtype) + [("IndexT", "int32"), ("sizeT", "int32"),
             ("type_in0_raw", dtype_of(x, dtype)), ("type_out0_raw", dtype_of(y, dtype))])
    decls: set = set()
    preamble_typedefs = typedefs(pairs, decls)
    code = (_CUB_INCLUDE + _CUB_HEAD + (_CUB_BLOCK_LOAD_TYPE if pre_map == "in0" else "")
            + _CUB_BODY + (_CUB_LOAD_BLOCK if pre_map == "in0" else _CUB_LOAD_MAPPED)
            + _CUB_TAIL)
    suffix, options = CUB_PASSES[kind]
    code = string.Template(code).substitute(
        name=spec.name.replace("cupy_", "cupy_cub_") + suffix, block_size=block_size,
        items_per_thread=CUB_ITEMS_PER_THREAD, reduce_type=spec.reduce_type or y.ctype,
        params=params, type_decls=format_decls(decls), identity=spec.identity,
        reduce_expr=spec.reduce_expr, pre_map_expr=pre_map, post_map_expr=post_map,
        type_preamble=preamble_typedefs, preamble=spec.preamble)
    return code, options + ("--std=c++17", "-DCUB_DISABLE_BF16_SUPPORT")


# -- every source of a spec ------------------------------------------------------------------
def units(spec) -> list[Unit]:
    """The full sources CuPy compiles for a spec: one per dtype (and reduction path).

    CuPy hands a ReductionKernel's ``options`` to its own block reduction only; its
    CUB kernels get CUB's options alone (``_launch_cub`` passes ``()``).
    """
    if isinstance(spec, Raw):
        return [Unit(f"{spec.name}[{spec.dtype}]", spec.code, cupy_options(spec.options),
                     spec.functions)]
    if isinstance(spec, Elementwise):
        return [Unit(f"{spec.name}[{dtype}]", CUPY_HEADER + elementwise_code(spec, dtype),
                     cupy_options(spec.options), (spec.name,)) for dtype in spec.dtypes]
    if isinstance(spec, Reduction):
        found = []
        for dtype in spec.dtypes:
            found.append(Unit(f"{spec.name}[{dtype}]", CUPY_HEADER + reduction_code(spec, dtype),
                              cupy_options(spec.options), (spec.name,)))
            for kind in CUB_PASSES:
                for block in CUB_BLOCK_SIZES:
                    code, options = cub_code(spec, dtype, kind, block)
                    name = spec.name.replace("cupy_", "cupy_cub_") + CUB_PASSES[kind][0]
                    found.append(Unit(f"{name}[{dtype}, cub {kind}, block {block}]",
                                      CUPY_HEADER + code, cupy_options(options),
                                      (name,)))
        return found
    raise TypeError(f"not a kernel spec: {spec!r}")
