"""Running `nnkernel bench`: one worker process per library, interleaved timed rounds."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .plan import Case
from .workers import SIDES

OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


class BenchError(RuntimeError):
    """A worker failed or the requested benchmark cannot run here."""


class WorkerProcess:
    """A long-lived child process answering JSON-line commands (see nnkernel.bench.workers)."""

    def __init__(self, name: str, argv: list[str], env: dict):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, env=env)

    def call(self, **cmd) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BenchError(self._died()) from None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(self._died())
        answer = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.name} worker: {answer['error']}\n{answer['traceback']}")
        return answer

    def _died(self) -> str:
        code = self.proc.wait(timeout=10)
        return f"the {self.name} worker exited with code {code} (its stderr is above)"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def worker_env(unset_openblas: bool) -> dict:
    """The environment for worker processes: this one, nnkernel importable, optionally without
    the OPENBLAS_* tuning variables."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if unset_openblas:
        for name in OPENBLAS_VARS:
            env.pop(name, None)
    return env


def start_workers(sides, env, torch_threads: int) -> dict[str, WorkerProcess]:
    return {side: WorkerProcess(side, [sys.executable, "-m", "nnkernel.bench.workers", side,
                                       str(torch_threads)], env)
            for side in sides}


@dataclass
class Result:
    case: Case
    seconds: dict = field(default_factory=dict)   # impl -> seconds per step, one per round
    steps: dict = field(default_factory=dict)     # impl -> steps per round
    unavailable: dict = field(default_factory=dict)  # impl -> why it cannot run here


def measure(case: Case, workers: dict, repeats: int, warmup_s: float, round_s: float,
            settle_s: float = 0.0) -> Result:
    """Set the case up in each implementation's process, then time interleaved rounds.

    Before each round the parent waits ``settle_s``: after a round, OpenBLAS's and
    OpenMP's idle threads keep spinning for a while (OpenBLAS ~0.1 s), which would
    steal the cores from the next process's round.
    """
    res = Result(case)
    for impl in case.impls:
        w = workers[SIDES[impl]]
        answer = w.call(cmd="setup", id=impl, case={**case.spec, "impl": impl},
                        warmup_s=warmup_s, round_s=round_s)
        if "unavailable" in answer:
            res.unavailable[impl] = answer["unavailable"]
            continue
        res.steps[impl] = answer["steps"]
        res.seconds[impl] = []
    timed = tuple(res.seconds)
    for r in range(repeats):
        order = timed if r % 2 == 0 else timed[::-1]  # alternate who goes first
        for impl in order:
            if settle_s:
                time.sleep(settle_s)
            res.seconds[impl].append(workers[SIDES[impl]].call(cmd="round", id=impl)["seconds"])
    for side in {SIDES[i] for i in case.impls}:
        workers[side].call(cmd="drop")
    return res


def spread(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(res: Result, ceiling: float | None) -> list[dict]:
    """One JSON-ready row per implementation."""
    case, rows = res.case, []
    for impl, secs in res.seconds.items():
        s = spread(secs)
        row = {"section": case.section, "case": case.label, "impl": impl, "x": case.x,
               "spec": case.spec, "seconds": secs, "steps_per_round": res.steps[impl],
               "median_s": s["median"], "min_s": s["min"], "max_s": s["max"],
               "unit": case.unit, "throughput": case.items / s["median"],
               "throughput_min": case.items / s["max"], "throughput_max": case.items / s["min"],
               "gflops": None, "pct_ceiling": None, "refs": list(case.refs), "vs": {}}
        if case.flops:
            row["gflops"] = case.flops / s["median"] / 1e9
            if ceiling:
                row["pct_ceiling"] = 100.0 * row["gflops"] / ceiling
        for ref in case.refs:
            if ref != impl and ref in res.seconds:
                # speed relative to ref, round by round: > 1 means faster than ref
                pairs = zip(res.seconds[ref], secs, strict=True)
                row["vs"][ref] = spread([t_ref / t for t_ref, t in pairs])
        rows.append(row)
    return rows
