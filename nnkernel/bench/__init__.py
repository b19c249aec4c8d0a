"""`nnkernel bench`: throughput and scaling sweeps against PyTorch and the GEMM ceiling.

A harness apart from the library: nnkernel's core never imports it (the
command line does, only for ``nnkernel bench``). plan.py says what is measured,
runner.py runs the worker processes, report.py prints, cli.py is the command;
workers/ holds each library's side of every case.

    nnkernel bench [--quick] [--only kernels,mlp,tiny,width,depth,ensemble] [--device cpu|gpu]
                   [--dtype float32|float64] [--repeats N] [--json FILE] [--plot FILE.png]
                   [--unset-openblas-env]

How the timing stays honest:

- each library runs in its own long-lived worker process (`nnkernel.bench.workers`):
  PyTorch's OpenMP threads and OpenBLAS's threads spin against each other in one
  process. nnkernel, PyTorch and a hand-written NumPy step each get one;
- every case is warmed up, then timed in rounds that alternate between the
  processes (nnkernel, torch, numpy-loop, then the reverse order), so a machine
  whose speed drifts slows every side alike; before each round the parent pauses
  (--settle) so that the previous process's idle BLAS/OpenMP threads stop
  spinning; a GPU is synchronised before each clock read;
- a row reports the median seconds per step with the min–max over rounds, and its
  ratio against each reference is the median of the per-round ratios;
- the GEMM ceiling (a large square NumPy matmul) is measured in the same run, and
  the load average is printed before timing, with a warning when it is high.
"""

from .cli import main, parse_args
from .plan import FULL, QUICK, SECTIONS, Case, mlp_flops, plan
from .report import TABLE_HEAD, format_row
from .runner import BenchError, WorkerProcess, measure, spread, summarize, worker_env

__all__ = ["FULL", "QUICK", "SECTIONS", "TABLE_HEAD", "BenchError", "Case", "WorkerProcess",
           "format_row", "main",
           "measure", "mlp_flops", "parse_args", "plan", "spread", "summarize", "worker_env"]
