"""Data parallelism over MPI: the pieces in one process, the whole under ``mpiexec -n 2``.

The MPI tests start tests/distributed_worker.py (or the command line) with the
mpiexec of this environment's MPI (the mpich wheel of ``nnkernel[mpi]``, part of
the test extra) and are skipped, with the reason, when mpi4py or mpiexec is
missing. Each launch takes about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import nnkernel as nk
from nnkernel.cli import main
from nnkernel.cli.run_policy import SaveEachEpoch
from nnkernel.distributed import DataParallel, comm, parallel, shard_bounds
from nnkernel.distributed.watchdog import Watchdog

WORKER = Path(__file__).with_name("distributed_worker.py")


def _mpiexec():
    if importlib.util.find_spec("mpi4py") is None:
        return None, 'mpi4py not installed (pip install "nnkernel[mpi]")'
    here = Path(sys.executable).with_name("mpiexec")
    found = str(here) if here.exists() else shutil.which("mpiexec")
    return (found, None) if found else (None, "no mpiexec (pip install mpich)")


MPIEXEC, WHY_NOT = _mpiexec()
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason=WHY_NOT or "")


# One BLAS thread per rank: two ranks on a 2-core machine, and the same numbers every run
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def launch(*command, n=2, timeout=120, cwd=None):
    """Run ``mpiexec -n n command``; (CompletedProcess, seconds). A hang fails, not stalls."""
    argv = [MPIEXEC, "-n", str(n), *command] if command[0] != ":" else [MPIEXEC, *command[1:]]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=cwd)
    return proc, time.monotonic() - start


def worker(case, *args, **kw):
    proc, seconds = launch(sys.executable, str(WORKER), case, *args, **kw)
    return proc, seconds


def last_json(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the rules, in one process ------------------------------------------------------------------
@pytest.mark.parametrize("rows, ranks", [(64, 2), (29, 2), (29, 4), (7, 3), (5, 5)])
def test_shards_are_contiguous_and_differ_by_at_most_one_row(rows, ranks):
    parts = [shard_bounds(10, 10 + rows, r, ranks) for r in range(ranks)]
    assert parts[0][0] == 10 and parts[-1][1] == 10 + rows
    assert all(parts[i][1] == parts[i + 1][0] for i in range(ranks - 1))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == rows


def fake_parallel(rank=0, size=2):
    dp = DataParallel.__new__(DataParallel)
    dp.rank, dp.size, dp.is_root = rank, size, rank == 0
    return dp


def test_plan_joins_a_last_batch_too_small_to_shard_and_refuses_tiny_batches():
    dp = fake_parallel(size=4)
    bounds = nk.train.data.plan_batches(131, 64, False)  # last batch: 3 rows < 4 ranks
    assert dp.plan(bounds, batchnorm=False) == [(0, 64), (64, 131)]
    bounds = nk.train.data.plan_batches(135, 64, False)  # 7 rows: enough without BatchNorm
    assert dp.plan(bounds, batchnorm=False) == bounds
    assert dp.plan(bounds, batchnorm=True) == [(0, 64), (64, 135)]  # 2 rows per rank
    with pytest.raises(nk.ConfigError, match="global batch and must be at least 8"):
        dp.plan(nk.train.data.plan_batches(100, 6, True), batchnorm=True)


def test_only_rank_0_runs_callbacks_that_write_files(tmp_path):
    writers = [nk.train.callbacks.CSVLogger(tmp_path / "a.csv"),
               nk.train.callbacks.ModelCheckpoint(tmp_path / "m.npz"),
               SaveEachEpoch(tmp_path, {})]
    early = nk.EarlyStopping(patience=2)
    custom = nk.Callback()
    custom.root_only = True
    everyone = [*writers, early, custom]
    assert fake_parallel(rank=0).callbacks(everyone) == everyone
    assert fake_parallel(rank=1).callbacks(everyone) == [early]


@pytest.mark.parametrize("rank", [0, 1])
def test_an_error_every_rank_raises_ends_the_job_normally_with_rank_0s_line(rank, capsys):
    # MPI_Abort can drop the line in transit; an error no rank waits out needs no abort
    from nnkernel.cli import distributed as cli_distributed

    dp = fake_parallel(rank=rank)
    dp.world = SimpleNamespace(abort=lambda code: pytest.fail(f"aborted with {code}"))
    with pytest.raises(SystemExit) as ended:
        with cli_distributed.one_rank_fails_all(dp):
            raise comm.RanksDisagreeError("the ranks disagree: rank(s) 1 have ...")
    assert ended.value.code == 2
    printed = capsys.readouterr().err
    assert printed == ("nnkernel: error: the ranks disagree: rank(s) 1 have ...\n"
                       if rank == 0 else "")


def test_an_error_on_one_rank_aborts_every_rank_naming_it(capsys):
    from nnkernel.cli import distributed as cli_distributed

    dp, aborted = fake_parallel(rank=0), []
    dp.world = SimpleNamespace(abort=aborted.append)
    with cli_distributed.one_rank_fails_all(dp):
        raise OSError(28, "No space left on device", "runs/a/model.npz")
    assert aborted == [1]
    assert capsys.readouterr().err == ("nnkernel: error: (rank 0 of 2) runs/a/model.npz: "
                                       "No space left on device\n")


def test_data_fingerprint_sees_a_different_split_or_label():
    X = np.arange(600.0).reshape(300, 2)
    y = np.arange(300) % 3
    same = parallel.data_fingerprint((X.copy(), y.copy(), None))
    assert parallel.data_fingerprint((X, y, None)) == same
    y2 = y.copy()
    y2[5] = 1 - y2[5] % 2
    assert parallel.data_fingerprint((X, y2, None)) != same
    assert parallel.data_fingerprint((X[1:], y[1:], None)) != same


def test_watchdog_names_the_rank_the_collective_and_the_seconds_waited():
    aborted = []
    dog = Watchdog(0.2, lambda: ("rank 0 of 2", "rank 1"), aborted.append, poll=0.02)
    dog.arm(lambda: "the gradient allreduce (epoch 2, step 1)")
    deadline = time.monotonic() + 5
    while not aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert aborted, "the watchdog did not fire"
    assert "rank 0 of 2 waited 0.2 s for the gradient allreduce (epoch 2, step 1)" in aborted[0]
    assert "rank 1 did not join" in aborted[0]


def test_watchdog_is_quiet_while_collectives_finish_and_watches_device_events():
    fired = []
    dog = Watchdog(0.15, lambda: ("rank 1 of 2", "rank 0"), fired.append, poll=0.02)
    for _ in range(20):  # collectives that finish in time
        dog.arm("allreduce")
        time.sleep(0.01)
        dog.disarm()
    event = SimpleNamespace(done=False)
    dog.track("the NCCL allreduce", event)
    assert dog.overdue(time.monotonic()) is None and not fired
    event.done = True  # the device finished: the event leaves the queue
    assert dog.overdue(time.monotonic() + 10) is None
    dog.track("the NCCL allreduce", SimpleNamespace(done=False))
    what, waited = dog.overdue(time.monotonic() + 1)
    assert what == "the NCCL allreduce" and waited > 0.9
    dog.close()


# -- the command line's errors, in one process --------------------------------------------------
def test_distributed_outside_a_launcher_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(comm, "_WORLD", None)
    for name in comm.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert main(["train", "--distributed", "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs the processes started by an MPI launcher" in err


def test_distributed_without_mpi4py_says_how_to_install(capsys, monkeypatch):
    monkeypatch.setattr(comm, "_WORLD", None)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    assert main(["train", "--distributed", "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "nnkernel[mpi]"' in err


def test_mpi_timeout_without_distributed_is_refused(capsys):
    assert main(["train", "--mpi-timeout", "5", "--epochs", "1"]) == 2
    assert "--mpi-timeout needs --distributed" in capsys.readouterr().err


# -- under mpiexec -n 2 -------------------------------------------------------------------------
@needs_mpi
def test_two_ranks_train_the_same_weights_as_one_process():
    proc, _ = worker("equivalence")
    out = last_json(proc)
    assert out["ranks"] == 2
    # the public pieces: rank 0's weights everywhere, the mean of the halves' gradients
    assert out["broadcast_gap"] == 0.0 and out["allreduce_gap"] <= 1e-15
    assert out["metrics"] == {"rank": 1.0, "pair": [2.0, 1.0]}
    assert out["weights_gap"] <= 1e-10  # float64, 3 epochs of Adam, uneven last batch 15/14
    assert out["history_gap"] <= 1e-12  # loss, accuracy, val_loss, val_accuracy
    assert out["allreduces"] == out["steps"]  # ONE gradient allreduce per step
    assert out["ensemble_gap"] <= 1e-10 and out["strict_gap"] <= 1e-10  # (E, P); rebinding
    # BatchNorm: local statistics per rank, exactly the one-process "ghost batch" run,
    # and measurably not the whole-batch run; the running averages agree too
    assert out["batchnorm_gap"] <= 1e-10 and out["batchnorm_state_gap"] <= 1e-10
    assert out["batchnorm_vs_whole_batch"] > 1e-4


@needs_mpi
def test_a_signal_on_one_rank_stops_both_and_the_resumed_run_equals_the_whole(tmp_path):
    proc, _ = worker("resume", str(tmp_path))
    out = last_json(proc)
    assert out["stopped"] == [[1, 7], [1, 7]]  # SIGTERM reached rank 1 only
    assert out["nan"][0] == out["nan"][1]  # a NaN loss on rank 1 only stops both, together
    assert "loss became NaN/Inf at epoch 1, step 5" in out["nan"][0]
    assert out["writes"][1] == []  # rank 1 never writes
    assert sorted(Path(p).name for p in out["writes"][0]) == sorted(
        ["model.npz", "config.json", "metrics.json"] * 2)  # end of epoch 1, the interruption
    assert out["weights_gap"] == 0.0
    assert out["loss_gap"] <= 1e-12 and out["accuracy_gap"] == 0.0


@needs_mpi
def test_a_hung_rank_makes_the_other_abort_with_a_message():
    proc, seconds = worker("hang", timeout=60)  # rank 1 stops itself (SIGSTOP) after epoch 1
    assert proc.returncode == comm.EXIT_TIMEOUT, proc.stderr[-2000:]
    assert "rank 0 of 2 waited 2." in proc.stderr
    assert "for the gradient allreduce (epoch 2, step 1) (timeout 2 s): rank 1 did not join" \
        in proc.stderr
    assert "finished" not in proc.stdout
    assert seconds < 30


@needs_mpi
def test_a_killed_rank_ends_the_job_within_seconds():
    proc, seconds = worker("kill", timeout=60)  # SIGKILL: the launcher notices at once
    assert proc.returncode != 0
    assert "Killed" in proc.stdout + proc.stderr
    assert "finished" not in proc.stdout
    assert seconds < 30


@needs_mpi
def test_ranks_with_different_models_are_refused():
    base = [sys.executable, "-m", "nnkernel", "train", "--distributed", "--epochs", "1"]
    proc, seconds = launch(":", "-n", "1", *base, "--hidden", "32", ":", "-n", "1", *base,
                           "--hidden", "64", timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the ranks disagree: rank(s) 1 have a different model config from rank 0" \
        in proc.stderr
    assert seconds < 30


@needs_mpi
def test_command_line_rank_0_writes_once_and_a_resumed_run_equals_the_whole(tmp_path):
    base = [sys.executable, "-m", "nnkernel", "train", "--distributed", "--epochs", "30",
            "--hidden", "64"]
    whole, _ = launch(*base, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert whole.stdout.count("test accuracy") == 1  # one report, from rank 0
    assert whole.stderr.count("epoch 30/30") == 1
    # The same run, stopped by SIGTERM to mpiexec once its first checkpoint is written
    argv = [MPIEXEC, "-n", "2", *base, "--out", str(tmp_path / "cut"), "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.monotonic() + 60
    while not (tmp_path / "cut" / "model.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    cut = nk.run_dir.load(tmp_path / "cut")
    assert cut.epoch < 30
    again, _ = launch(*base[:-4], "--resume", str(tmp_path / "cut"), "--quiet")
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = nk.run_dir.load(tmp_path / "whole"), nk.run_dir.load(tmp_path / "cut")
    assert b.epoch == 30
    for key, value in a.model_arrays.items():
        assert np.array_equal(value, b.model_arrays[key]), key
    assert a.history["loss"] == pytest.approx(b.history["loss"], rel=1e-6)


@needs_mpi
def test_a_foreign_launcher_is_named_instead_of_running_every_process_as_rank_0():
    env = {**ENV, "OMPI_COMM_WORLD_SIZE": "2"}  # Open MPI's mpirun, mpi4py on the mpich wheel
    proc = subprocess.run([sys.executable, "-m", "nnkernel", "train", "--distributed",
                           "--epochs", "1"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "the launcher started 2 processes but MPI sees one" in proc.stderr
