"""``nnkernel export RUN --onnx FILE --safetensors FILE --npz FILE``: a run's model as files.

    nnkernel train --out runs/digits
    nnkernel export runs/digits --onnx digits.onnx --safetensors digits.safetensors

Every name is checked before anything is written; each file is then written
atomically, in the order onnx, safetensors, npz, and named on stderr when done
(``--json``: one object on stdout instead). The preprocessing record comes from
the run's config.json ("preprocessing", what the dataset loader applied to the
raw features); a run that has none exports an empty record. The model is built
on NumPy on the host: exporting needs no device.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FORMATS = ("onnx", "safetensors", "npz")


def add_parser(sub, add_device_flags, add_output_flags, types):
    export = sub.add_parser(
        "export", help="write a run's model as ONNX, safetensors or npz",
        description="Write the model of a training run as files other tools read "
        "(docs/format.md). Give at least one of --onnx, --safetensors, --npz.")
    export.add_argument("run_dir", metavar="DIR", help="a run directory (nnkernel train --out)")
    export.add_argument("--onnx", metavar="FILE", help="ONNX graph (pip install 'nnkernel[onnx]')")
    export.add_argument("--safetensors", metavar="FILE",
                        help="safetensors file (pip install 'nnkernel[safetensors]')")
    export.add_argument("--npz", metavar="FILE", help="NumPy .npz file")
    export.add_argument("--opset", type=types.positive_int, default=17,
                        help="ONNX opset (default 17)")
    add_output_flags(export)  # no device flags: the model is exported from the host


def run(args) -> int:
    """Export the run ``args.run_dir`` to each file given; returns the exit status (0)."""
    from ..errors import CheckpointError, ConfigError
    from ..io import run_dir, saving
    from ..io.onnx_export import export_onnx

    targets = {fmt: getattr(args, fmt) for fmt in FORMATS if getattr(args, fmt)}
    if not targets:
        raise ConfigError("export: give at least one of --onnx FILE, --safetensors FILE, "
                          "--npz FILE")
    for fmt, path in targets.items():
        if fmt != "onnx" and Path(path).suffix.lower() != "." + fmt:
            raise ConfigError(f"export: --{fmt} {path}: the file name must end in .{fmt}")
    paths = [Path(p).resolve() for p in targets.values()]
    if len(set(paths)) < len(paths):
        raise ConfigError("export: two formats would be written to the same file")
    saved = run_dir.load(args.run_dir)
    if any(p.parent == saved.directory.resolve() and p.name in run_dir.RUN_FILES
           for p in paths):
        raise ConfigError(f"export: a file name would replace one of the run's own files "
                          f"({', '.join(run_dir.RUN_FILES)}) in {saved.directory}")
    model = saved.build_model()
    preprocessing = saved.config.get("preprocessing") or {}
    if not isinstance(preprocessing, dict):
        raise CheckpointError(f"{saved.directory / run_dir.CONFIG}: 'preprocessing' must be a "
                              "JSON object")
    for fmt, path in targets.items():
        if fmt == "onnx":
            export_onnx(model, path, opset=args.opset, preprocessing=preprocessing)
        else:
            saving.save(model, path, preprocessing=preprocessing)
        if not (args.quiet or args.json):
            print(f"wrote {path} ({fmt})", file=sys.stderr)
    if args.json:
        print(json.dumps({"run": str(saved.directory), "epoch": saved.epoch,
                          "preprocessing": preprocessing, **targets}))
    return 0
