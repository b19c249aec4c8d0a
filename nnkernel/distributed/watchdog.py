"""A deadline on every collective, so that a dead or hung rank does not hang the others.

MPI collectives block until every rank has joined. A rank that was killed is
usually noticed by the launcher (MPICH's hydra tears the job down within a
second), but a rank that hangs (stopped, deadlocked, swapping, stuck on a
file system) or a lost node is not, and the others would wait forever.

The mechanism: one daemon thread per process. Before each collective the main
thread *arms* it with (start time, what it waits for); after the collective it
disarms it. Both are single attribute writes (a tuple assigned atomically), so
a collective costs ~0.2 µs more. The thread wakes every ``poll`` seconds (never
per collective: a wake-up per step would cost a context switch) and, when the
armed collective has been waiting longer than ``timeout``, prints one line
naming this rank, what it waited for and the seconds waited, then aborts the
job (MPI_Abort, which the launcher turns into the end of every rank). This
works because mpi4py releases the GIL inside blocking MPI calls, so the thread
runs while the main thread waits in C (checked: tests/test_distributed.py).

GPU collectives enqueued on a stream (NCCL) do not block the host; for those
the main thread hands over a CUDA event with `track`, and the thread checks
that the oldest pending event completes within the deadline.
"""

from __future__ import annotations

import collections
import sys
import threading
import time


class Watchdog:
    def __init__(self, timeout: float, describe, abort, poll: float | None = None):
        """``describe()`` names this rank and its peers; ``abort(message)`` ends the job."""
        self.set_timeout(timeout, poll)
        self._describe, self._abort = describe, abort
        self._armed: tuple | None = None  # (start, what) of the collective in progress
        self._events: collections.deque = collections.deque()  # (start, what, event)
        self._stop = threading.Event()
        self.fired: str | None = None
        self._thread = threading.Thread(target=self._run, name="nnkernel-watchdog",
                                        daemon=True)
        self._thread.start()

    def set_timeout(self, timeout: float, poll: float | None = None) -> None:
        self.timeout = float(timeout)
        self.poll = poll if poll is not None else min(1.0, max(self.timeout / 8.0, 0.01))

    # -- the main thread's side: two attribute writes per collective ---------------------------
    def arm(self, what) -> None:
        """``what``: a name, or a function making it (called only if the deadline passes)."""
        self._armed = (time.monotonic(), what)

    def disarm(self) -> None:
        self._armed = None

    def track(self, what: str, event) -> None:
        """A device collective in flight: ``event.done`` must become True within the deadline."""
        self._events.append((time.monotonic(), what, event))

    def close(self) -> None:
        self._stop.set()

    # -- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            late = self.overdue(time.monotonic())
            if late is not None:
                self._fire(*late)
                return

    def overdue(self, now: float):
        """(what, seconds waited) of a collective past its deadline, or None."""
        armed = self._armed  # one read: the main thread may re-arm at any moment
        if armed is not None and now - armed[0] > self.timeout:
            return armed[1], now - armed[0]
        while self._events:  # stream order: once the oldest is done, look at the next
            start, what, event = self._events[0]
            if event.done:
                self._events.popleft()
                continue
            if now - start > self.timeout:
                return what, now - start
            break
        return None

    def _fire(self, what, waited: float) -> None:
        me, others = self._describe()
        what = what() if callable(what) else what
        self.fired = (f"nnkernel: {me} waited {waited:.1f} s for {what} (timeout "
                      f"{self.timeout:g} s): {others} did not join; a rank died or hangs. "
                      f"Aborting every rank.")
        print(self.fired, file=sys.stderr, flush=True)
        self._abort(self.fired)
