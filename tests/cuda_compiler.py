"""Compile CUDA sources as device code without a GPU: NVRTC (what CuPy uses) or nvcc.

- NVRTC through ctypes: the library from $NNKERNEL_NVRTC (a path), else where
  ``cuda.pathfinder`` finds it (the ``nvidia-cuda-nvrtc`` wheel, a CUDA toolkit),
  else the system's. One program per architecture, with CuPy's options.
- nvcc: ``nvcc -fatbin`` with one ``-gencode`` per architecture (CuPy's nvcc
  backend compiles the same way, one architecture at a time).

Both run ptxas with ``-v``; `resources` reads its report (registers, stack frame,
spill stores and loads per kernel and architecture). Compilation needs no GPU
and no driver. CuPy's headers come from an installed CuPy, found without importing it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ARCHS = ("sm_80", "sm_90")  # A100 and H100/H200


@dataclass(frozen=True)
class Resources:
    registers: int = -1
    stack_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0


@dataclass
class Result:
    ok: bool
    log: str
    resources: dict = field(default_factory=dict)  # (function, arch) -> Resources


# -- where things are ------------------------------------------------------------------------
def cupy_include() -> Path | None:
    """CuPy's header folder (``cupy/_core/include``), found without importing CuPy."""
    spec = importlib.util.find_spec("cupy")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "_core" / "include"
    return folder if (folder / "cupy" / "carray.cuh").is_file() else None


def cuda_include() -> Path | None:
    """The CUDA runtime headers (cuda_fp16.h), as CuPy looks for them, then the usual places."""
    candidates = []
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        candidates.append(find_nvidia_header_directory("cudart"))
    except Exception:  # noqa: BLE001 - no cuda.pathfinder, or nothing found
        pass
    candidates += [os.path.join(os.environ[v], "include") for v in ("CUDA_PATH", "CUDA_HOME")
                   if os.environ.get(v)] + ["/usr/local/cuda/include"]
    for folder in filter(None, candidates):
        if (Path(folder) / "cuda_fp16.h").is_file():
            return Path(folder)
    return None


def cupy_compile_options(options, cupy_inc: Path | None, cuda_inc: Path | None) -> list[str]:
    """``assemble_cupy_compiler_options`` and ``_compile_with_cache_cuda``'s additions."""
    cccl = [f"-I{cupy_inc}/cupy/_cccl/{d}" for d in ("cub", "thrust", "libcudacxx")] \
        if cupy_inc else []
    includes = [f"-I{p}" for p in (cupy_inc, cuda_inc) if p]
    return cccl + list(options) + includes + ["-ftz=true"]


# -- ptxas's report --------------------------------------------------------------------------
_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+a?)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")


def resources(log: str) -> dict:
    """{(function, arch): Resources} from ptxas -v output (nvcc's or NVRTC's log)."""
    found: dict = {}
    arch = current = props = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            current, arch = m.group(1), m.group(2)
            found.setdefault((current, arch), Resources())
        elif m := _PROPS.search(line):
            props = m.group(1)
        elif (m := _FRAME.search(line)) and props is not None and arch is not None:
            stack, stores, loads = map(int, m.groups())
            old = found.get((props, arch), Resources())
            found[(props, arch)] = Resources(old.registers, stack, stores, loads)
        elif (m := _USED.search(line)) and current is not None:
            old = found[(current, arch)]
            found[(current, arch)] = Resources(int(m.group(1)), old.stack_bytes,
                                               old.spill_stores, old.spill_loads)
    return found


# -- the compilers ---------------------------------------------------------------------------
class Nvrtc:
    name = "nvrtc"

    def __init__(self, path: str):
        folder = Path(path).resolve().parent
        for builtins in sorted(folder.glob("libnvrtc-builtins.so*")):
            if ".alt." not in builtins.name:  # NVRTC opens it by name: load it first
                ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
        self.lib = ctypes.CDLL(path)
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = f"NVRTC {major.value}.{minor.value}"
        # NVRTC 12.8+ reuses the parsed headers (CuPy's, CUB's) of an earlier program with
        # the same options: CuPy does too under CUPY_NVRTC_USE_PCH=1. 3-7x faster here.
        self.pch = (major.value, minor.value) >= (12, 8)

    def compile(self, source: str, options: list[str], archs=ARCHS) -> Result:
        logs, ok = [], True
        for arch in archs:
            opts = [*options, f"-arch={arch}", "--device-as-default-execution-space",
                    "-Xptxas=-v"] + (["--pch", "--pch-messages=false"] if self.pch else [])
            good, log = self._one(source, opts)
            ok &= good
            logs.append(log)
        log = "\n".join(logs)
        return Result(ok, log, resources(log) if ok else {})

    def _one(self, source: str, options: list[str]) -> tuple[bool, str]:
        lib, prog = self.lib, ctypes.c_void_p()
        if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kern.cu", 0, None,
                                  None):
            return False, "nvrtcCreateProgram failed"
        try:
            argv = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            status = lib.nvrtcCompileProgram(prog, len(options), argv)
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value + 1)
            lib.nvrtcGetProgramLog(prog, log)
            return status == 0, log.value.decode(errors="replace")
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


class Nvcc:
    name = "nvcc"

    def __init__(self, path: str):
        self.path = path
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        release = re.search(r"release (\S+),", out.stdout)
        self.version = f"nvcc {release.group(1) if release else '?'}"

    def compile(self, source: str, options: list[str], archs=ARCHS) -> Result:
        gencode = [f"-gencode=arch=compute_{a[3:]},code={a}" for a in archs]
        with tempfile.TemporaryDirectory() as tmp:
            cu = Path(tmp) / "kern.cu"
            cu.write_text(source)
            proc = subprocess.run([self.path, "-fatbin", *gencode, *options, "-Xptxas", "-v",
                                   str(cu), "-o", str(Path(tmp) / "kern.fatbin")],
                                  capture_output=True, text=True, timeout=300)
        log = (proc.stdout + proc.stderr).replace(str(cu), "kern.cu")
        return Result(proc.returncode == 0, log, resources(log) if proc.returncode == 0 else {})


def _nvrtc_path() -> str | None:
    if os.environ.get("NNKERNEL_NVRTC"):
        return os.environ["NNKERNEL_NVRTC"]
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return load_nvidia_dynamic_lib("nvrtc").abs_path
    except Exception:  # noqa: BLE001 - no cuda.pathfinder, or no NVRTC where it looks
        return ctypes.util.find_library("nvrtc")


def find_compilers() -> tuple[list, list[str]]:
    """(compilers, why others are missing): NVRTC when it is found, else nvcc;
    $NNKERNEL_CUDA_COMPILERS (say ``nvrtc,nvcc``) asks for particular ones."""
    wanted = [w for w in os.environ.get("NNKERNEL_CUDA_COMPILERS", "").split(",") if w] or None
    found, missing = [], []
    missing += [f"NNKERNEL_CUDA_COMPILERS names {w!r}, not nvrtc or nvcc"
                for w in wanted or () if w not in ("nvrtc", "nvcc")]
    if wanted is None or "nvrtc" in wanted:
        path = _nvrtc_path()
        if path is None:
            missing.append("no NVRTC (pip install nvidia-cuda-nvrtc, or set NNKERNEL_NVRTC)")
        else:
            try:
                found.append(Nvrtc(path))
            except OSError as err:
                missing.append(f"NVRTC at {path} does not load ({err})")
    if wanted is None and found:
        return found, missing
    if wanted is None or "nvcc" in wanted:
        cuda_nvcc = os.path.join(os.environ.get("CUDA_PATH", "/usr/local/cuda"), "bin", "nvcc")
        nvcc = os.environ.get("NVCC") or shutil.which("nvcc") or (
            cuda_nvcc if os.path.isfile(cuda_nvcc) else None)
        if nvcc is None:
            missing.append("no nvcc on the PATH")
        else:
            found.append(Nvcc(nvcc))
    return found, missing
