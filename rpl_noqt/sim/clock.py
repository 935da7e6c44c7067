"""Model time.

All behaviour is computed lazily from elapsed time: a block stores the time of
the last register write that changed it and derives its state at the time of a
read.  The clock is injectable so unit tests can step time by hand.

One bus access happens at one instant: :meth:`Clock.held` keeps ``now()`` at
the time it had on entry (for the calling thread) while the model computes,
however long that takes on a busy machine.
"""

from __future__ import annotations

import threading
import time

from .signals import FPGA_CLOCK_HZ


class Clock:
    """Wall clock: seconds since the model was created (monotonic)."""

    def __init__(self) -> None:
        self._t0 = time.monotonic_ns()
        self._held = threading.local()

    def now(self) -> float:
        """Model time in seconds (the held instant inside :meth:`held`)."""
        held: float | None = getattr(self._held, "t", None)
        return self._read() if held is None else held

    def _read(self) -> float:
        """The running time, ignoring :meth:`held` (subclasses override this)."""
        return (time.monotonic_ns() - self._t0) * 1e-9

    def held(self) -> _Held:
        """Stop time for the calling thread until the block ends; ``with`` yields the instant.

        The model holds the clock for each bus access, so the samples it
        freezes before a write and the write itself share one instant: the
        model's own computing time is not model time. Nested uses keep the
        outer instant; other threads see the running time.  (A small class,
        not a generator: it is entered on every bus access.)
        """
        return _Held(self)

    def cycles(self, t: float | None = None) -> int:
        """The 64-bit FPGA cycle counter at time ``t`` (default: now)."""
        return int((self.now() if t is None else t) * FPGA_CLOCK_HZ) & (2**64 - 1)


class ManualClock(Clock):
    """A clock that only moves when told to (for deterministic unit tests)."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = float(start)
        self._lock = threading.Lock()

    def _read(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must be >= 0)."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards by {seconds!r} s")
        with self._lock:
            self._now += seconds


class _Held:
    """The context manager of :meth:`Clock.held`."""

    __slots__ = ("clock", "outer")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.outer: float | None = None

    def __enter__(self) -> float:
        local = self.clock._held
        outer: float | None = getattr(local, "t", None)
        self.outer = outer
        if outer is not None:
            return outer
        t = local.t = self.clock._read()
        return t

    def __exit__(self, *exc: object) -> None:
        if self.outer is None:
            self.clock._held.t = None
