"""``nnkernel export RUN --onnx FILE --safetensors FILE --npz FILE``: a run's model as files.

    nnkernel train --out runs/digits
    nnkernel export runs/digits --onnx digits.onnx --safetensors digits.safetensors

Each file is written atomically, in the order onnx, safetensors, npz, and named
on stderr when done. The preprocessing record comes from the run's config.json
("preprocessing", what the dataset loader applied to the raw features); a run
that has none exports an empty record.
"""

from __future__ import annotations

import sys

FORMATS = ("onnx", "safetensors", "npz")


def add_parser(subparsers):
    """Add ``export`` to the command line's subparsers; returns its parser."""
    parser = subparsers.add_parser(
        "export", help="write a run's model as ONNX, safetensors or npz",
        description="Write the model of a training run as files other tools read "
        "(docs/format.md). Give at least one of --onnx, --safetensors, --npz.")
    parser.add_argument("run", metavar="RUN", help="a run directory (nnkernel train --out)")
    parser.add_argument("--onnx", metavar="FILE", help="ONNX graph (pip install 'nnkernel[onnx]')")
    parser.add_argument("--safetensors", metavar="FILE",
                        help="safetensors file (pip install 'nnkernel[safetensors]')")
    parser.add_argument("--npz", metavar="FILE", help="NumPy .npz file")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--quiet", action="store_true", help="no lines naming the files")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def run(args) -> int:
    """Export the run ``args.run`` to each file given; returns the exit status (0)."""
    from ..errors import CheckpointError, ConfigError
    from ..io import run_dir, saving
    from ..io.onnx_export import export_onnx

    targets = {fmt: getattr(args, fmt, None) for fmt in FORMATS}
    targets = {fmt: path for fmt, path in targets.items() if path}
    if not targets:
        raise ConfigError("export: give at least one of --onnx FILE, --safetensors FILE, "
                          "--npz FILE")
    for fmt, path in targets.items():
        if fmt != "onnx" and not str(path).lower().endswith("." + fmt):
            raise ConfigError(f"export: --{fmt} {path}: the file name must end in .{fmt}")
    saved = run_dir.load(args.run)
    model = saved.build_model()
    preprocessing = saved.config.get("preprocessing") or {}
    if not isinstance(preprocessing, dict):
        raise CheckpointError(f"{saved.directory / run_dir.CONFIG}: 'preprocessing' must be a "
                              "JSON object")
    for fmt, path in targets.items():
        if fmt == "onnx":
            export_onnx(model, path, opset=getattr(args, "opset", 17),
                        preprocessing=preprocessing)
        else:
            saving.save(model, path, preprocessing=preprocessing)
        if not getattr(args, "quiet", False):
            print(f"wrote {path} ({fmt})", file=sys.stderr)
    return 0
