"""Fuzzing nnkernel's file readers: seeded mutations of a seed corpus, run under a memory cap.

Each target is one public reader (`READERS`) and a folder of tests/fuzz_corpus/.
A worker process (``--worker``) caps its address space (RLIMIT_AS: what it had
after importing nnkernel, plus `HEADROOM`), then for a number of cases or seconds
mutates a corpus file (`mutations.mutate`: bit flips, truncation, header and
size fields set huge, edits inside the zip members, JSON records, .npy headers,
gzip streams) and calls the reader on it, each call under a per-case alarm. A
reader may return or raise an nnkernel error of its own kinds (`READERS`: a
CheckpointError for a model file, a DatasetError for data); anything else,
including MemoryError (more memory than the file justifies) and a case over
the alarm (a hang), is a finding: its bytes are saved under the output folder.
The first cases are fixed: every corpus file as it is, a FIFO, /dev/zero, a
directory.

    python tests/fuzz_readers.py --minutes 5                 # every reader, round robin
    python tests/fuzz_readers.py --minutes 2 --reader idx --out /tmp/fuzz

tests/test_fuzz_readers.py runs each target for a few seconds in CI
($NNKERNEL_FUZZ_SECONDS, $NNKERNEL_FUZZ_SEED change that).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "fuzz_corpus"
HEADROOM = 384 << 20  # corpus files are a few KB: no honest read of one needs this much
CASE_SECONDS = float(os.environ.get("NNKERNEL_FUZZ_CASE_SECONDS", "5"))

# name: (corpus folder, the call as "module:function" of nnkernel, the errors it may raise:
# the file's fault is the file's error, CheckpointError for a model, DatasetError for data)
DATA_ERRORS = ("DatasetError", "NonFiniteError")
READERS = {
    "load": ("model", "nnkernel.io.saving:load", ("CheckpointError",)),
    "npz_metadata": ("npz_metadata", "nnkernel.io.saving:read_metadata", ("CheckpointError",)),
    "safetensors": ("safetensors", "nnkernel.io.saving:load", ("CheckpointError",)),
    "idx": ("idx", "nnkernel.io.idx:load_idx", ("DatasetError",)),
    "csv": ("csv", "nnkernel.io.tabular:load_csv", DATA_ERRORS),
    # features of the wrong shape for prediction are a ShapeError, as for arrays
    "csv_features": ("csv", "nnkernel.io.datasets:load_features", (*DATA_ERRORS, "ShapeError")),
    "npy": ("npy", "nnkernel.io.datasets:load_features", (*DATA_ERRORS, "ShapeError")),
    "npz_dataset": ("npz_dataset", "nnkernel.io.datasets:load_npz", DATA_ERRORS),
}
# "name=folder:module:function,...": a target replaced, to test this harness itself
for _item in filter(None, os.environ.get("NNKERNEL_FUZZ_READERS", "").split(",")):
    _name, _, _spec = _item.partition("=")
    _folder, _, _call = _spec.partition(":")
    READERS[_name] = (_folder, _call, ("NnkernelError",))


# ------------------------------------------------------------------------------- worker

def _reader(name: str):
    import importlib

    module, function = READERS[name][1].split(":")
    return getattr(importlib.import_module(module), function)


def _cap_memory() -> int:
    import resource

    with open("/proc/self/status") as f:
        size = int(next(line for line in f if line.startswith("VmSize:")).split()[1]) * 1024
    limit = size + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit


class _Timeout(BaseException):  # not an Exception: a reader's `except Exception` cannot eat it
    pass


def _alarm(signum, frame):
    raise _Timeout


def _fixed_cases(work: Path):
    """(description, path) of the cases that need no mutation."""
    fifo = work / "fifo.bin"
    os.mkfifo(fifo)
    yield "a FIFO", fifo
    if Path("/dev/zero").exists():
        zero = work / "zero.bin"
        zero.symlink_to("/dev/zero")
        yield "a symlink to /dev/zero", zero
    (work / "folder").mkdir()
    yield "a directory", work / "folder"


def worker(reader: str, seed: int, seconds: float, cases: int, out: Path) -> int:
    """Run one target; one JSON line per finding on stdout, a summary line last."""
    import numpy as np  # noqa: F401 - imported before the cap, as the reader will need it
    from mutations import mutate

    import nnkernel  # noqa: F401
    from nnkernel.errors import NnkernelError

    call = _reader(reader)
    folder = CORPUS / READERS[reader][0]
    sources = sorted(p for p in folder.iterdir() if p.is_file())
    seeds = [(p, p.read_bytes()) for p in sources]
    limit = _cap_memory()
    signal.signal(signal.SIGALRM, _alarm)
    warnings.simplefilter("ignore")
    rng = random.Random(seed)
    counts = {"ok": 0, "nnkernel error": 0, "finding": 0}
    with tempfile.TemporaryDirectory(prefix="nnkernel-fuzz-") as tmp:
        work = Path(tmp)
        fixed = [(f"corpus file {p.name}", p) for p in sources] + list(_fixed_cases(work))
        start, i = time.monotonic(), 0
        while i < len(fixed) or (i < len(fixed) + cases and time.monotonic() - start < seconds):
            if i < len(fixed):
                what, path, data = *fixed[i], None
            else:
                source, blob = seeds[rng.randrange(len(seeds))]
                data, how = mutate(blob, source.suffix, rng)
                what = f"{source.name}: {how}"
                path = work / f"case{source.suffix}"
                path.write_bytes(data)
            print(json.dumps({"start": i, "case": what}), flush=True)
            outcome = _run(call, path, NnkernelError, READERS[reader][2])
            counts["finding" if outcome[0] == "finding" else outcome[0]] += 1
            if outcome[0] == "finding":
                saved = _save(out, reader, what, data if data is not None else b"", path,
                              outcome)
                print(json.dumps({"finding": i, "case": what, "error": outcome[1],
                                  "saved": str(saved)}), flush=True)
            i += 1
    print(json.dumps({"done": i, "counts": counts, "memory_limit": limit}), flush=True)
    return 0


def _run(call, path: Path, nnkernel_error, allowed: tuple) -> tuple[str, str]:
    """("ok" | "nnkernel error" | "finding", what happened): an nnkernel error of a class
    not in ``allowed`` (names) is a finding too."""
    signal.setitimer(signal.ITIMER_REAL, CASE_SECONDS)
    try:
        call(path)
        return "ok", ""
    except nnkernel_error as e:
        text = f"{type(e).__name__}: {str(e)[:200]}"
        if not {c.__name__ for c in type(e).__mro__} & set(allowed):
            return "finding", f"{text} (expected {' or '.join(allowed)})"
        return "nnkernel error", text
    except _Timeout:
        return "finding", f"no answer within {CASE_SECONDS} s (a hang)"
    except BaseException as e:  # noqa: BLE001 - every other exception is the finding
        return "finding", f"{type(e).__module__}.{type(e).__name__}: {str(e)[:300]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _save(out: Path, reader: str, what: str, data: bytes, path: Path, outcome) -> Path:
    folder = out / reader
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data or what.encode()).hexdigest()[:12]
    target = folder / f"{digest}{path.suffix}"
    target.write_bytes(data)
    target.with_suffix(target.suffix + ".txt").write_text(f"{what}\n{outcome[1]}\n")
    return target


# ------------------------------------------------------------------------------- parent

def run_target(reader: str, seed: int, seconds: float, cases: int, out: Path,
               timeout: float) -> dict:
    """Run a worker for ``reader``; {"findings": [...], "summary": {...} or None,
    "died": why or None}. A worker that dies or overruns ``timeout`` is a finding
    on the case it had started."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--reader", reader,
           "--seed", str(seed), "--seconds", str(seconds), "--cases", str(cases),
           "--out", str(out)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        lines, died = proc.stdout.splitlines(), None
        if proc.returncode:
            died = f"exit status {proc.returncode}: {proc.stderr.strip()[-500:]}"
    except subprocess.TimeoutExpired as e:
        text = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines, died = text.splitlines(), f"no answer within {timeout} s"
    records = [json.loads(line) for line in lines if line.startswith("{")]
    findings = [r for r in records if "finding" in r]
    summary = next((r for r in records if "done" in r), None)
    if died:
        last = next((r for r in reversed(records) if "start" in r), None)
        findings.append({"finding": None, "case": last and last["case"], "error": died})
    return {"findings": findings, "summary": summary, "died": died}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", choices=list(READERS), action="append")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=60.0, help="per worker")
    parser.add_argument("--cases", type=int, default=10**9)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) /
                        "nnkernel-fuzz")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.reader[0], args.seed or 0, args.seconds, args.cases, args.out)
    readers = args.reader or list(READERS)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    end, total = time.monotonic() + 60 * args.minutes, 0
    while time.monotonic() < end:
        for reader in readers:
            seconds = min(args.seconds, max(1.0, end - time.monotonic()))
            result = run_target(reader, seed, seconds, args.cases, args.out,
                                timeout=seconds + 120)
            done = (result["summary"] or {}).get("done", "?")
            print(f"{reader} seed {seed}: {done} cases, {len(result['findings'])} findings",
                  flush=True)
            for f in result["findings"]:
                print(f"  FINDING {f['case']}: {f['error']}", flush=True)
            total += len(result["findings"])
            seed += 1
            if time.monotonic() >= end:
                break
    print(f"{total} findings; saved under {args.out}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
