"""`nnkernel bench`: throughput against PyTorch and the machine's GEMM ceiling.

A harness apart from the library: nnkernel's core never imports it (the command
line does, only for ``nnkernel bench``), and it measures only — the project's
speed targets live in its notes and bench/goals.py, not here. plan.py says what is
measured, runner.py runs the worker processes, report.py prints the table, cli.py
is the command; workers/ holds each implementation's step of every case.

    nnkernel bench [--quick] [--only SECTIONS] [--device cpu|gpu] [--dtype float32|float64]
                   [--repeats N] [--json FILE] [--plot FILE.png] [--unset-openblas-env] ...

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

Adding a case (say a new model) takes one small function per side and a FLOP count:

1. plan.py: a ``@section("name")`` function returning ``Case(section, label, spec,
   impls, refs, items, unit, flops)`` objects, where ``spec["kind"]`` names the
   workload, ``impls`` the implementations to time (e.g. ("nnkernel", "torch")),
   ``refs`` those every row is compared with, and ``flops`` the step's matrix-product
   FLOPs from a counting function beside it (``gpt_flops``, ``lstm_flops``): it gives
   the row's GF/s and % of the GEMM ceiling. SECTIONS, --only and the plan pick it up.
2. workers/<module>.py: per implementation, ``@step(kind, impl)`` on a function
   ``build(case) -> Step(run, sync)`` that sets the model up and returns one training
   step; it imports its library inside the function (each worker process loads only
   its own). A side that cannot run here raises ``Unavailable(reason)``: the table
   prints "not available: reason" and nothing is timed (the recurrent section's
   nnkernel side does so until ``nk.LSTM`` exists). A new module goes into
   ``workers.STEP_MODULES``.
3. a test that each side builds and runs a small case and that the FLOP count is the
   real one (tests/test_bench_sections.py checks the torch sides with torch's own
   FlopCounterMode).
"""

from .cli import main, parse_args
from .plan import (
                   FULL,
                   QUICK,
                   SECTIONS,
                   Case,
                   conv_flops,
                   gpt_flops,
                   lstm_flops,
                   mlp_flops,
                   plan,
                   section,
)
from .report import TABLE_HEAD, format_row
from .runner import BenchError, WorkerProcess, measure, spread, summarize, worker_env
from .workers.common import Unavailable, step

__all__ = ["FULL", "QUICK", "SECTIONS", "TABLE_HEAD", "BenchError", "Case", "Unavailable",
           "WorkerProcess", "conv_flops", "format_row", "gpt_flops", "lstm_flops", "main",
           "measure", "mlp_flops", "parse_args", "plan", "section", "spread", "step", "summarize",
           "worker_env"]
