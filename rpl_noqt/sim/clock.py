"""Model time.

All behaviour is computed lazily from elapsed time: a block stores the time of
the last register write that changed it and derives its state at the time of a
read.  The clock is injectable so unit tests can step time by hand.
"""

from __future__ import annotations

import threading
import time

from .signals import FPGA_CLOCK_HZ


class Clock:
    """Wall clock: seconds since the model was created (monotonic)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic_ns()

    def now(self) -> float:
        """Model time in seconds."""
        return (time.monotonic_ns() - self._t0) * 1e-9

    def cycles(self, t: float | None = None) -> int:
        """The 64-bit FPGA cycle counter at time ``t`` (default: now)."""
        return int((self.now() if t is None else t) * FPGA_CLOCK_HZ) & (2**64 - 1)


class ManualClock(Clock):
    """A clock that only moves when told to (for deterministic unit tests)."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards by {seconds!r} s")
        with self._lock:
            self._now += seconds
