"""Every file reader fuzzed for a bounded time on tests/fuzz_corpus/ (issue 22).

Each target runs in a worker process under a memory cap and a per-case alarm
(tests/fuzz_readers.py): the corpus files as they are (seeds, and one file per
finding of issue 22 and of the fuzzing since), a FIFO, /dev/zero, a directory,
then seeded mutations. The only outcomes allowed are a result or an nnkernel
error. $NNKERNEL_FUZZ_CASES, $NNKERNEL_FUZZ_SECONDS and $NNKERNEL_FUZZ_SEED
change the run; ``python tests/fuzz_readers.py --minutes 5`` is the long form.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from fuzz_corpus_make import FINDINGS
from fuzz_readers import CORPUS, READERS, run_target

CASES = int(os.environ.get("NNKERNEL_FUZZ_CASES", "300"))
SECONDS = float(os.environ.get("NNKERNEL_FUZZ_SECONDS", "2.5"))  # per target, a cap
SEED = int(os.environ.get("NNKERNEL_FUZZ_SEED", "0"))

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "mkfifo"),
    reason="the fuzz worker caps memory with RLIMIT_AS and reads /proc/self/status (Linux)")


@pytest.mark.parametrize("reader", list(READERS))
def test_reader_gives_only_nnkernel_errors_under_fuzzing(reader, tmp_path):
    result = run_target(reader, SEED, SECONDS, CASES, tmp_path, timeout=SECONDS + 90)
    shown = "\n".join(f"{f['case']}: {f['error']}" for f in result["findings"][:10])
    assert not result["findings"], f"{len(result['findings'])} findings:\n{shown}"
    corpus = [p for p in (CORPUS / READERS[reader][0]).iterdir() if p.is_file()]
    assert result["summary"]["done"] >= len(corpus) + 3 + min(CASES, 50)  # + FIFO, zero, dir


def test_the_corpus_holds_seeds_and_every_finding():
    for folder, *_ in READERS.values():
        assert any(p.name.startswith("seed_") for p in (CORPUS / folder).iterdir()), folder
    for name in FINDINGS:
        path = CORPUS / name
        assert path.is_file() and path.stat().st_size < 8 << 10, name
    assert sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file()) < 256 << 10


def test_a_finding_is_reported_with_its_case(tmp_path, monkeypatch):
    """The harness itself: a reader that lets a TypeError out, or blocks on a FIFO (the
    built-in open), is a finding named by its case, and its bytes are saved."""
    monkeypatch.setenv("NNKERNEL_FUZZ_READERS", "load=npy:json:loads,npy=npy:builtins:open")
    monkeypatch.setenv("NNKERNEL_FUZZ_CASE_SECONDS", "1")
    result = run_target("load", 0, 1.0, 5, tmp_path, timeout=60)
    assert result["findings"] and "TypeError" in result["findings"][0]["error"]
    assert all(Path(f["saved"]).exists() for f in result["findings"])
    result = run_target("npy", 0, 1.0, 0, tmp_path, timeout=60)
    errors = {f["case"]: f["error"] for f in result["findings"]}
    assert "a hang" in errors["a FIFO"] and "IsADirectoryError" in errors["a directory"]
