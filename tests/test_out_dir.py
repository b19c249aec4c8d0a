"""The --out directory: one writer at a time, stale temporaries removed, writability up front.

Defects reproduced: two `train --out X` at once both exited 0 with their files
mixed; a kill -9 during a save left ``.model.npz.*.tmp`` forever; a read-only
--out failed only after the first epoch; a dangling --out symlink said "File
exists".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nnkernel.errors import CheckpointError, ConfigError
from nnkernel.io.out_dir import LOCK_FILE, RunLock, check_writable, clean_stale_temporaries

pytestmark = pytest.mark.skipif(os.name != "posix", reason="flock, signals and modes: POSIX")


def wait_for(predicate, seconds=20.0, child=None):
    deadline = time.monotonic() + seconds
    while not predicate():
        if child is not None and child.poll() is not None:
            pytest.fail(f"child exited early: {child.stderr.read().decode()}")
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.01)


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from nnkernel.io.out_dir import RunLock

    with RunLock(sys.argv[1]):
        Path(sys.argv[2]).write_text("locked")
        sys.stdin.read()  # hold the lock until the parent closes our stdin
""")


def hold_lock(directory: Path, marker: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), str(marker)],
                             stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(marker.exists, child=child)
    return child


# ------------------------------------------------------------------ 4. RunLock

def test_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    child = hold_lock(tmp_path, tmp_path / "marker")
    try:
        with pytest.raises(CheckpointError, match=rf"{tmp_path} is in use by another nnkernel "
                           rf"process \(pid {child.pid}\)"):
            RunLock(tmp_path).acquire()
        # a third process is refused as well
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from nnkernel.io.out_dir import RunLock\n"
             "try:\n    RunLock(sys.argv[1]).acquire()\nexcept Exception as e:\n"
             "    print(e); sys.exit(3)", str(tmp_path)], capture_output=True, text=True)
        assert probe.returncode == 3 and f"pid {child.pid}" in probe.stdout
    finally:
        child.stdin.close()
        child.wait(timeout=20)
    with RunLock(tmp_path) as lock:  # released when the holder exits
        assert lock.held
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_killed_holder_never_leaves_the_directory_locked(tmp_path):
    child = hold_lock(tmp_path, tmp_path / "marker")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=20)
    with RunLock(tmp_path):
        pass
    assert (tmp_path / LOCK_FILE).exists()  # the file may stay; the lock does not


def test_lock_is_released_on_an_exception_and_refused_twice_in_one_process(tmp_path):
    with pytest.raises(RuntimeError), RunLock(tmp_path):
        with pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
        raise RuntimeError("training failed")
    lock = RunLock(tmp_path).acquire()
    lock.release()
    lock.release()  # idempotent
    assert not lock.held


def test_lock_file_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / LOCK_FILE).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match="cannot lock"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / "elsewhere").exists()


# ------------------------------------------------------------------ 5. stale temporaries

KILLED_MID_SAVE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from pathlib import Path
    from nnkernel.io import checkpoint

    def hang(fd):
        Path(sys.argv[2]).write_text("writing")
        time.sleep(60)

    checkpoint.os.fsync = hang
    checkpoint.save_arrays(Path(sys.argv[1]) / "model.npz", {"a": np.zeros(3)})
""")


def test_kill_9_mid_save_leaves_a_temporary_that_the_cleaner_removes(tmp_path):
    marker = tmp_path.parent / f"{tmp_path.name}.marker"
    child = subprocess.Popen([sys.executable, "-c", KILLED_MID_SAVE, str(tmp_path), str(marker)],
                             stderr=subprocess.PIPE)
    wait_for(marker.exists, child=child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=20)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".model.npz.") and left[0].endswith(".tmp")
    assert clean_stale_temporaries(tmp_path) == left
    assert list(tmp_path.iterdir()) == []


def test_cleaner_removes_only_temporaries_of_run_files(tmp_path):
    stale = [".model.npz.k2j_x9a1.tmp", ".config.json.abc12345.tmp", ".metrics.json.q.tmp",
             ".curves.png.zz9.tmp"]
    kept = ["model.npz", ".model.npz.tmp", ".other.npz.abc.tmp", ".model.npz.a b.tmp",
            "model.npz.abc.tmp", ".model.npz.abc.tmp.bak", LOCK_FILE, "notes.txt"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    (tmp_path / ".config.json.dir1.tmp").mkdir()  # a directory is never removed
    (tmp_path / ".model.npz.link1.tmp").symlink_to(tmp_path / "notes.txt")
    removed = clean_stale_temporaries(tmp_path)
    assert removed == sorted(stale + [".model.npz.link1.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [".config.json.dir1.tmp"])
    assert (tmp_path / "notes.txt").read_text() == "x"  # the link, not its target
    assert clean_stale_temporaries(tmp_path / "missing") == []


# ------------------------------------------------------------------ 8. writability

def test_creates_a_missing_directory_and_leaves_no_probe(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    assert check_writable(out) == out
    assert out.is_dir() and list(out.iterdir()) == []


def test_dangling_symlink_is_named_with_its_target(tmp_path):
    out = tmp_path / "run"
    out.symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match=rf"--out {out} is a symlink to a missing path "
                       rf"{tmp_path / 'gone'}"):
        check_writable(out)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=rf"{link} is a symlink to a missing path"):
        check_writable(link / "run")


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        check_writable(tmp_path / "file")
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'file'} in its path is not a "
                       "directory"):
        check_writable(tmp_path / "file" / "run")


def _without_dac_override():
    """A preexec_fn that takes CAP_DAC_OVERRIDE out of the child's bounding set, so that a
    root child obeys file modes (root otherwise writes into a 0555 directory)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1

    def drop():
        if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


PROBE = textwrap.dedent("""
    import sys
    from nnkernel.io.out_dir import check_writable
    try:
        check_writable(sys.argv[1])
    except Exception as e:
        print(type(e).__name__, e)
        sys.exit(3)
""")


@pytest.mark.parametrize("where", ["existing", "missing"])
def test_read_only_out_fails_up_front(tmp_path, where):
    parent = tmp_path / "ro"
    parent.mkdir()
    out = parent / "run" if where == "missing" else parent
    parent.chmod(0o555)
    try:
        if os.geteuid() != 0:
            with pytest.raises(CheckpointError, match="Permission denied"):
                check_writable(out)
            return
        if not sys.platform.startswith("linux"):
            pytest.skip("root ignores file modes, and dropping that needs Linux's prctl")
        try:
            result = subprocess.run([sys.executable, "-c", PROBE, str(out)],
                                    capture_output=True, text=True,
                                    preexec_fn=_without_dac_override())
        except subprocess.SubprocessError as e:
            pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here: {e}")
        assert result.returncode == 3, result.stderr
        assert result.stdout.startswith("CheckpointError") and "Permission denied" in \
            result.stdout
        assert f"{out}" in result.stdout
    finally:
        parent.chmod(0o755)


def test_a_file_system_that_cannot_lock_is_written_unprotected(tmp_path, monkeypatch):
    import errno

    from nnkernel.io import out_dir

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(out_dir.fcntl, "flock", no_locks)
    with RunLock(tmp_path) as lock:
        assert lock.held and not lock.locked
