"""``nnkernel info``: versions, backends, GPUs, BLAS, threads and the allocator setting."""

from __future__ import annotations

import json
import os
import platform

import numpy as np


def add_parser(sub, add_device_flags, add_output_flags, types):
    info = sub.add_parser("info", help="versions, backends, GPU and BLAS")
    info.add_argument("--json", action="store_true")
    info.add_argument("--debug", action="store_true")


def run(args) -> int:
    from .. import __version__
    from ..backend import available_backends, describe_gpus, malloc

    report = {"nnkernel": __version__, "python": platform.python_version(),
              "platform": platform.platform(), "numpy": np.__version__}
    try:
        import array_api_compat

        report["array_api_compat"] = array_api_compat.__version__
    except ImportError as e:
        report["array_api_compat"] = f"not installed ({e})"
    report["backends"] = available_backends()
    report["gpu"] = describe_gpus(report["backends"].get("cupy"))
    report["tf32"] = _tf32_status(report["backends"])
    report["blas"] = blas_info()
    malloc.keep_freed_memory()  # what `nnkernel train` sets, so that the line below is true
    report["malloc"] = malloc.status()
    report["env"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                "CUPY_TF32", malloc.OPT_OUT,
                                                *malloc.GLIBC_VARIABLES)
                     if k in os.environ}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    lines = [f"nnkernel {report['nnkernel']}",
             f"python {report['python']} ({report['platform']})",
             f"numpy {report['numpy']}",
             f"array-api-compat {report['array_api_compat']}",
             "backends:"]
    for name, status in report["backends"].items():
        lines.append(f"  {name:<17} {'available' if status == 'ok' else 'unavailable: ' + status}")
    lines.append(f"gpu: {report['gpu']}")
    lines.append(f"tf32: {report['tf32']}")
    for lib in report["blas"]:
        lines.append("blas: " + ", ".join(f"{k} {v}" for k, v in lib.items()))
    lines.append(f"malloc (nnkernel train): {report['malloc']}")
    for k, v in report["env"].items():
        lines.append(f"{k}={v}")
    print("\n".join(lines))
    return 0


def _tf32_status(backends) -> str:
    if backends.get("cupy") != "ok":
        return "no GPU (TF32 applies to GPU matrix products only)"
    from ..backend import Backend

    on = Backend("cupy").tf32_enabled()
    return ("on for float32 matrix products" if on else
            "off (full float32; nnkernel train --tf32 turns it on)")


def blas_info() -> list[dict]:
    """BLAS libraries and their thread counts: threadpoolctl if present, else numpy's config."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        return [{"library": lib.get("internal_api"), "file": lib.get("prefix"),
                 "version": lib.get("version"),
                 "threads": lib.get("num_threads"), "architecture": lib.get("architecture")}
                for lib in threadpool_info() if lib.get("user_api") == "blas"]
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return [{"library": blas.get("name"), "version": blas.get("version"),
                 "threads": "unknown (install threadpoolctl)"}]
    except Exception as e:  # noqa: BLE001 - older numpy has no mode="dicts"
        return [{"library": f"unknown ({e})"}]
