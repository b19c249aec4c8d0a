"""Ctrl-C and SIGTERM during training: finish the step, then stop cleanly.

Schedulers and ``docker stop`` send SIGTERM; both signals set a flag that the
loop checks after each step, so the run ends at a step boundary with its
checkpoint written. A second signal of either kind stops at once.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptFlag:
    def __init__(self):
        self.raised = False
        self.signal = None
        self._old: dict = {}

    def __enter__(self):
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.raised:  # a second signal: the user really wants out
            raise KeyboardInterrupt
        self.raised, self.signal = True, signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        return False
