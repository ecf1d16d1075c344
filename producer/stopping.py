"""SIGTERM and SIGHUP stop a command as Ctrl-C does: what it started is stopped on the way out.

An `Interrupted` is a KeyboardInterrupt, so every clean-up that already handles Ctrl-C (local
workers given their grace period, connections rolled back) handles a `kill` or a closed
terminal the same way.
"""

from __future__ import annotations

import signal
from types import FrameType

#: The signals that stop a command; the default action of the last two would skip clean-up.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when one of STOP_SIGNALS arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once only: a second signal (Ctrl-C pressed again, a supervisor repeating its SIGTERM)
    # must not cut short the grace the local workers get; the stop is bounded anyway.
    for other in STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)
