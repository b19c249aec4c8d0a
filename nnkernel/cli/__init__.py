"""The command line: ``nnkernel train | evaluate | predict | export | generate | info | bench``.

    nnkernel train                               # digits, offline, in seconds
    nnkernel train --dataset fashion-mnist --out runs/fmnist
    nnkernel train --resume runs/fmnist          # after Ctrl-C: continues bit for bit
    nnkernel evaluate runs/fmnist
    nnkernel predict runs/fmnist features.npy --output classes.csv
    nnkernel export runs/fmnist --onnx fmnist.onnx --safetensors fmnist.safetensors
    nnkernel train --dataset corpus.txt --model gpt --out runs/chars   # a character model
    nnkernel generate runs/chars --prompt "ROMEO:" --tokens 200 --top-k 40 --seed 1

One module per command. Every error is one line on stderr, ``nnkernel: error:
...``, with exit status 2 for usage and configuration errors and 1 for the rest;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

from . import args as types
from . import evaluate, export, generate, info, predict, train
from .args import Parser, UsageError, add_device_flags, add_output_flags  # noqa: F401
from .report import (  # noqa: F401 - the exit statuses and the one-line error, here too
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    one_line,
    report,
)

COMMANDS = {"train": train, "evaluate": evaluate, "predict": predict, "export": export,
            "generate": generate, "info": info}


def build_parser() -> Parser:
    parser = Parser(prog="nnkernel", description="Neural networks with hand-written "
                    "backpropagation on NumPy, CuPy, PyTorch or array-api-strict.")
    parser.add_argument("--version", action="version", version=f"nnkernel {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS.values():
        module.add_parser(sub, add_device_flags, add_output_flags, types)
    sub.add_parser("bench", help="benchmarks against PyTorch and the machine's limits; try "
                   "nnkernel bench --help", add_help=False)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv[:1] == ["bench"]:  # everything after it belongs to nnkernel.bench
            return _bench(argv[1:])
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help(sys.stderr)
            return EXIT_USAGE
        status = COMMANDS[args.command].run(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return status
    except BrokenPipeError:  # `nnkernel predict RUN x.npy | head`: the reader has left
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # outside fit (which saves a checkpoint first)
        print("nnkernel: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # --version and --help
        return int(e.code or 0)
    except Exception as error:  # noqa: BLE001 - turned into one line below
        if debug:
            raise
        return report(error)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's own flush at exit finds no broken pipe
    to complain about ("Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test capture)
        pass


def _bench(argv) -> int:
    """`nnkernel bench ...`: handed over to nnkernel.bench.main, imported only now."""
    try:
        from .. import bench
    except ImportError as e:
        print(f"nnkernel: error: the bench command is unavailable: nnkernel.bench cannot be "
              f"imported ({e})", file=sys.stderr)
        return EXIT_ERROR
    return int(bench.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
