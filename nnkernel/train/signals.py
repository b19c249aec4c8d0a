"""Ctrl-C, SIGTERM and SIGHUP during training: finish the step, then stop cleanly.

Schedulers and ``docker stop`` send SIGTERM, a closed terminal or ssh session
SIGHUP; each sets a flag that the loop checks after each step, so the run ends
at a step boundary with its checkpoint written. A second signal of any of them
stops at once. SIGHUP is taken over only when its handler is the default one:
under ``nohup`` (SIGHUP ignored) a hang-up still does not stop training.
"""

from __future__ import annotations

import signal

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))
_ONLY_IF_DEFAULT = {getattr(signal, "SIGHUP", None)}


class InterruptFlag:
    def __init__(self):
        self.raised = False
        self.signal = None
        self._old: dict = {}

    def __enter__(self):
        for sig in SIGNALS:
            try:
                if sig in _ONLY_IF_DEFAULT and signal.getsignal(sig) is not signal.SIG_DFL:
                    continue  # nohup ignores hang-ups: so do we
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
