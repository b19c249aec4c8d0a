"""``nnkernel info``: versions, backends, GPUs, BLAS, threads and the allocator setting.

Fast by default: a backend whose library this process has not imported is reported from
its package metadata ("installed, not checked: torch 2.13.0"), because importing torch,
JAX, Dask and CuPy to look at them took seconds. ``--check`` imports each one and tries
it, as training would ("ok", or why it cannot be used), and lists the GPUs through CuPy.
A library already imported (NumPy always) is checked either way: it costs nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
from importlib import metadata

import numpy as np

# The distributions that install each backend's library (CuPy has one per CUDA version).
DISTRIBUTIONS = {"numpy": ("numpy",), "cupy": ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x",
                                               "cupy"),
                 "torch": ("torch",), "array_api_strict": ("array-api-strict",),
                 "jax": ("jax", "jaxlib"), "dask": ("dask",)}


def add_parser(sub, add_device_flags, add_output_flags, types):
    info = sub.add_parser("info", help="versions, backends, GPU, BLAS, threads",
                          description="Versions, backends, GPUs, BLAS, threads and the "
                          "allocator. Backends not imported yet are reported from their "
                          "package metadata; --check imports and tries each (seconds).")
    info.add_argument("--check", action="store_true",
                      help="import every installed backend and try it; list the GPUs")
    info.add_argument("--json", action="store_true")
    info.add_argument("--debug", action="store_true")


def run(args) -> int:
    from .. import __version__
    from ..backend import malloc
    from . import threads

    report = {"nnkernel": __version__, "python": platform.python_version(),
              "platform": platform.platform(), "numpy": np.__version__}
    report["array_api_compat"] = _version("array-api-compat") or "not installed"
    report["backends"] = backends(check=args.check)
    report["gpu"] = _gpus(report["backends"])
    report["tf32"] = _tf32_status(report["backends"])
    report["blas"] = threads.blas_libraries()
    report["threads"] = threads.rule()
    malloc.keep_freed_memory()  # what `nnkernel train` sets, so that the line below is true
    report["malloc"] = malloc.status()
    report["env"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                *threads.ENVIRONMENT, "CUPY_TF32",
                                                malloc.OPT_OUT, *malloc.GLIBC_VARIABLES)
                     if k in os.environ}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lines = [f"nnkernel {report['nnkernel']}",
             f"python {report['python']} ({report['platform']})",
             f"numpy {report['numpy']}",
             f"array-api-compat {report['array_api_compat']}",
             "backends:" + ("" if args.check else
                            " (not imported yet: from package metadata; --check tries them)")]
    for name, status in report["backends"].items():
        shown = "available" if status == "ok" else status if status.startswith(
            ("installed", "not installed")) else "unavailable: " + status
        lines.append(f"  {name:<17} {shown}")
    lines.append(f"gpu: {report['gpu']}")
    lines.append(f"tf32: {report['tf32']}")
    for lib in report["blas"]:
        lines.append("blas: " + ", ".join(f"{k} {v}" for k, v in lib.items() if k != "file"))
    lines.append(f"threads (nnkernel train): {report['threads']}")
    lines.append(f"malloc (nnkernel train): {report['malloc']}")
    for k, v in report["env"].items():
        lines.append(f"{k}={v}")
    print("\n".join(lines))
    return 0


def backends(check: bool = False) -> dict[str, str]:
    """Backend name -> "ok" or why it cannot be used (tried: imported already, or ``check``),
    else what its package metadata says ("installed, not checked: torch 2.13.0" or "not
    installed")."""
    from ..backend import BACKENDS, backend_class

    report = {}
    for name in BACKENDS:
        cls = backend_class(name)
        if check or cls.module_name in sys.modules:
            try:
                cls()
                report[name] = "ok"
            except Exception as err:  # noqa: BLE001 - a report, not control flow
                report[name] = str(err)
            continue
        report[name] = _installed(name, cls.module_name)
    return report


def _installed(name: str, module_name: str) -> str:
    top = module_name.split(".")[0]
    found = [f"{d} {v}" for d in DISTRIBUTIONS.get(name, (top,)) if (v := _version(d))]
    if importlib.util.find_spec(top) is None:
        return "not installed" + (f" (metadata of {', '.join(found)} without the module)"
                                  if found else "")
    return "installed, not checked: " + (", ".join(found) or f"module {top}")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _gpus(report) -> str:
    from ..backend import describe_gpus

    status = report.get("cupy", "not installed")
    if status.startswith("installed"):
        return "not checked (nnkernel info --check imports CuPy and lists the GPUs)"
    return describe_gpus(status)


def _tf32_status(backends) -> str:
    if backends.get("cupy") != "ok":
        return "no GPU checked (TF32 applies to GPU matrix products only)"
    from ..backend import Backend

    on = Backend("cupy").tf32_enabled()
    return ("on for float32 matrix products" if on else
            "off (full float32; nnkernel train --tf32 turns it on)")


def blas_info() -> list[dict]:
    """BLAS libraries and their thread counts (threadpoolctl)."""
    from .threads import blas_libraries

    return blas_libraries()
