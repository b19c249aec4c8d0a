"""Every CUDA source nnkernel's CuPy twin can generate, compiled as device code for sm_80 and sm_90.

CuPy compiles a kernel the first time it is launched, so without this test a typo
in a kernel body is found on a GPU, at the first call. Here every spec listed by
`nnkernel.kernels.cupy.cuda_sources()` (each RawKernel/RawModule source for each
C type; each ElementwiseKernel and ReductionKernel for each dtype its module lets
through, wrapped as CuPy 14.2 wraps it: tests/cupy_codegen.py, and the CUB
reductions: tests/cupy_codegen_cub.py) is compiled with CuPy's options and
headers by NVRTC (what CuPy uses; the ``nvidia-cuda-nvrtc`` wheel) or, without
it, by nvcc, for both architectures. A kernel must compile, define the functions
its spec names, and neither spill registers nor use local memory (ptxas -v).
Without NVRTC and nvcc the compile tests skip with the reason; without CuPy
(its headers) so do the wrapped sources. Numerics are checked elsewhere: as host
C++ (tests/test_cupy_*_source.py, tests/test_conv_cupy_source.py) and on a GPU
(tests/test_cupy_twin.py). Sources are compiled in parallel, once per session.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cuda_compiler as cc
import numpy as np
import pytest
from cupy_codegen import (
    CUPY_HEADER,
    FLOAT16_DECL,
    elementwise_args,
    elementwise_code,
    reduction_args,
    reduction_code,
)
from cupy_codegen_cub import units

import nnkernel.kernels.cupy as twin
from nnkernel.kernels.cupy import optim
from nnkernel.kernels.cupy.specs import FLOATS, Elementwise, Raw, Reduction

FOLDER = Path(twin.__file__).parent
UNITS = {u.label: u for spec in twin.cuda_sources() for u in units(spec)}
_RESULTS: dict = {}  # (compiler, options, source) hash -> Result, for the session


def compile_units(compiler, selected, cupy_inc, cuda_inc) -> dict:
    """{label: Result} for the units, each source compiled once per session.

    Units sharing options and #include lines are compiled one after another, so NVRTC
    parses those headers once (its precompiled headers). NVRTC works one program at a
    time (threads measured slower here); nvcc runs one process per core.
    """
    def key(unit):
        options = cc.cupy_compile_options(unit.options, cupy_inc, cuda_inc)
        return options, hashlib.sha256("\0".join(
            [compiler.version, *options, unit.source]).encode()).hexdigest()

    def group(k):
        source, options = todo[k]
        return options, [ln for ln in source.splitlines() if ln.lstrip().startswith("#include")]

    todo = {k: (unit.source, options) for unit in selected for options, k in [key(unit)]
            if k not in _RESULTS}
    order = sorted(todo, key=group)
    workers = 1 if compiler.name == "nvrtc" else max(2, os.cpu_count() or 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        _RESULTS.update(zip(order, pool.map(lambda k: compiler.compile(*todo[k]), order),
                            strict=True))
    return {unit.label: _RESULTS[key(unit)[1]] for unit in selected}


def problems(unit, result) -> list[str]:
    """What is wrong with a compiled unit: an error, a missing kernel, spills, local memory."""
    if not result.ok:
        return [f"does not compile:\n{result.log[-4000:]}"]
    found = []
    for function in unit.functions:
        for arch in cc.ARCHS:
            r = result.resources.get((function, arch))
            if r is None:
                found.append(f"no kernel {function!r} for {arch} in ptxas's report")
            elif r.spill_stores or r.spill_loads:
                found.append(f"{function} spills on {arch}: {r}")
            elif r.stack_bytes:
                found.append(f"{function} uses local memory on {arch}: {r}")
    return found


@pytest.fixture(scope="module")
def toolchain():
    compilers, missing = cc.find_compilers()
    if not compilers:
        pytest.skip("no CUDA compiler to compile the kernels as device code: "
                    + "; ".join(missing))
    return compilers, cc.cupy_include(), cc.cuda_include()


def unavailable(unit, toolchain) -> str | None:
    """Why this machine cannot compile the unit as CuPy would, if it cannot."""
    compilers, cupy_inc, cuda_inc = toolchain
    if cupy_inc is None and unit.source.startswith(CUPY_HEADER):
        return "CuPy's headers (cupy/_core/include) not found: pip install cupy-cuda13x"
    if cuda_inc is None and FLOAT16_DECL in unit.source and any(
            c.name == "nvrtc" for c in compilers):
        return "CUDA's headers (cuda_fp16.h) not found for NVRTC: set CUDA_PATH"
    return None


@pytest.fixture(scope="module")
def compiled(toolchain, request):
    """{(compiler, label): Result} for the units this session runs (compiled together)."""
    compilers, cupy_inc, cuda_inc = toolchain
    wanted = {item.callspec.params["label"] for item in request.session.items
              if getattr(item, "module", None) is request.module
              and "label" in getattr(getattr(item, "callspec", None), "params", {})}
    selected = [UNITS[label] for label in sorted(wanted)
                if unavailable(UNITS[label], toolchain) is None]
    return {(c.version, label): r for c in compilers
            for label, r in compile_units(c, selected, cupy_inc, cuda_inc).items()}


@pytest.mark.parametrize("label", sorted(UNITS))
def test_compiles_for_sm80_and_sm90(toolchain, compiled, label):
    unit = UNITS[label]
    if reason := unavailable(unit, toolchain):
        pytest.skip(reason)
    for compiler in toolchain[0]:
        found = problems(unit, compiled[(compiler.version, label)])
        assert not found, f"{label} with {compiler.version}: " + "\n".join(found)


# -- the test of the test ----------------------------------------------------------------------
def test_a_broken_kernel_body_fails(toolchain):
    compilers, cupy_inc, cuda_inc = toolchain
    if cupy_inc is None:
        pytest.skip("CuPy's headers (cupy/_core/include) not found: pip install cupy-cuda13x")
    good = optim.cuda_sources()[0]  # plain SGD: p = p - lr * g
    broken = dataclasses.replace(good, name="nnk_broken", operation="T d = g;\np = p - lr * dd;",
                                 dtypes=("float32",))
    (unit,) = units(broken)
    for compiler in compilers:
        (result,) = compile_units(compiler, [unit], cupy_inc, cuda_inc).values()
        found = problems(unit, result)
        assert len(found) == 1 and found[0].startswith("does not compile")
        assert re.search(r'identifier "dd" is undefined', found[0]), found[0]


def test_local_memory_and_a_missing_kernel_are_problems(toolchain):
    compilers, cupy_inc, cuda_inc = toolchain
    code = """extern "C" __global__ void nnk_local(float* y, int k, int n) {
        float buf[128];  // written at run-time indices: it lives in local memory
        for (int i = 0; i < 128; ++i) buf[i] = y[i];
        for (int i = 0; i < n; ++i) buf[(i * k) & 127] += 1.0f;
        y[threadIdx.x] = buf[k & 127];
    }"""
    (unit,) = units(Raw("nnk_local", code, ("nnk_local", "nnk_other"), "float"))
    for compiler in compilers:
        (result,) = compile_units(compiler, [unit], cupy_inc, cuda_inc).values()
        found = problems(unit, result)
        assert result.ok and result.resources[("nnk_local", "sm_90")].stack_bytes >= 512
        assert [f.split(":")[0] for f in found] == [
            "nnk_local uses local memory on sm_80", "nnk_local uses local memory on sm_90",
            "no kernel 'nnk_other' for sm_80 in ptxas's report",
            "no kernel 'nnk_other' for sm_90 in ptxas's report"]


def test_ptxas_report_is_read_per_kernel_and_architecture():
    log = """ptxas info    : Compiling entry function 'k1' for 'sm_80'
ptxas info    : Function properties for k1
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'k1' for 'sm_90'
ptxas info    : Function properties for k1
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 38 registers, used 1 barriers"""
    assert cc.resources(log) == {("k1", "sm_80"): cc.Resources(40, 8, 4, 12),
                                 ("k1", "sm_90"): cc.Resources(38, 0, 0, 0)}


# -- the listing: every module, every kernel through a spec -------------------------------------
def test_every_kernel_module_lists_its_sources_and_builds_through_specs():
    direct = re.compile(r"\bcupy\s*\.\s*(ElementwiseKernel|ReductionKernel|RawKernel|RawModule"
                        r"|fuse)\b")
    modules = twin.kernel_modules()
    assert {"dense", "losses", "optim", "conv"} <= set(modules)
    for name in modules:
        text = (FOLDER / f"{name}.py").read_text()
        assert not direct.search(text), (
            f"{name}.py builds a CuPy kernel directly: build it from a spec (specs.py), and "
            "list the spec in its cuda_sources(), so CI compiles what runs")
    specs = twin.cuda_sources()
    assert {type(s) for s in specs} == {Elementwise, Reduction, Raw}
    for spec in specs:
        assert set(getattr(spec, "dtypes", FLOATS)) <= set(FLOATS), spec.name


def test_a_module_without_cuda_sources_is_refused(monkeypatch):
    monkeypatch.setattr(twin, "kernel_modules", lambda: ["dense", "specs"])
    with pytest.raises(AttributeError, match=r"specs\.py has no cuda_sources\(\)"):
        twin.cuda_sources()


def test_sources_are_the_ones_cupy_generates():
    """The wrapper in tests/cupy_codegen.py against CuPy's own, character for character."""
    cupy = pytest.importorskip("cupy", reason="CuPy not installed: nothing to compare with")
    if not cupy.__version__.startswith("14."):
        pytest.skip(f"written from CuPy 14.2's generator; CuPy {cupy.__version__} is installed")
    from cupy._core import _carray, _kernel, _reduction, _scalar

    def info(arg):
        if arg.kind == "array":
            return _kernel._ArgInfo(1, cupy.ndarray, np.dtype(arg.dtype), arg.ndim,
                                    arg.contiguous, True)
        if arg.kind == "indexer":
            return _kernel._ArgInfo(2, _carray.Indexer, None, arg.ndim, True, True)
        return _kernel._ArgInfo(3, _scalar.CScalar, np.dtype(arg.dtype), 0, True, True)

    compared = 0
    for spec in twin.cuda_sources():
        if isinstance(spec, Raw):
            continue
        k = spec.build()  # constructing a kernel needs no GPU
        for dtype in spec.dtypes:
            if isinstance(spec, Elementwise):
                infos = tuple(map(info, elementwise_args(spec, dtype)[1]))
                theirs = _kernel._get_elementwise_kernel_code(
                    infos, _kernel._TypeMap((("T", np.dtype(dtype)),)), k.params, k.operation,
                    k.name, k.preamble)
                ours = elementwise_code(spec, dtype)
            else:
                infos = tuple(map(info, reduction_args(spec, dtype)[1]))
                type_map = _kernel._TypeMap((("T", np.dtype(dtype)), ("IndexT", np.int32)))
                theirs = _reduction._ReductionKernel_get_cached_function_code(
                    1, 1, k._params, infos, type_map, k.name, 512, k.reduce_type, k.identity,
                    k.map_expr, k.reduce_expr, k.post_map_expr, k.preamble, k.options)
                ours = reduction_code(spec, dtype)
            assert ours == theirs, f"{spec.name}[{dtype}]: CuPy wraps it differently"
            compared += 1
    assert compared >= 90
