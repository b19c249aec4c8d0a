"""Ensemble training steps/s: nnkernel's stacked ensemble against torch.func and Python loops.

    python bench/ensemble_bench.py [--members 1,8,64,256] [--repeats 7] [--json FILE] ...

E members of a 64-64-10 MLP (ReLU, Adam lr 1e-3, cross-entropy), one shared input
batch of 128 rows, four ways:

- nnkernel       Sequential(..., ensemble=E): every Dense layer one batched matmul
- nnkernel-loop  E separate nnkernel models stepped in a Python loop
- torch-func     torch.func.stack_module_state + vmap + functional_call, with
                 torch.optim.Adam on the stacked parameters
- torch-loop     E separate PyTorch models and optimizers in a Python loop

This is `nnkernel bench --only ensemble` (the same code, one process per library,
rounds interleaved, medians with min–max); any other `nnkernel bench` option
passes through. Goals at E=64: >= 1.6x torch.func and >= 10x the PyTorch loop.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from nnkernel.bench import main as bench_main  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--only" or a.startswith("--only=") for a in argv):
        print("ensemble_bench.py runs the ensemble section only; drop --only", file=sys.stderr)
        return 2
    return bench_main(["--only", "ensemble", *argv])


if __name__ == "__main__":
    sys.exit(main())
