"""Fault injection for tests: latency, dropped connections, garbled headers.

A :class:`Faults` object is shared between the test thread and the server
thread; every setter validates its value (``ValueError`` naming the value and
the allowed range) and takes a lock, so faults can be changed while a client is
connected.  ``drop_after`` and ``garble`` are one-shot: they disarm once they
have fired.  A server restart is :meth:`rpl_noqt.sim.Simulator.restart`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class FaultAction:
    """What the server must do with one request."""

    delay: float = 0.0
    drop: bool = False
    garble: bool = False


class Faults:
    """Thread-safe fault switches consulted by the server for every request."""

    def __init__(self, latency: float = 0.0, drop_after: int | None = None, garble: int = 0) -> None:
        self._lock = threading.Lock()
        self._latency = 0.0
        self._drop_after: int | None = None
        self._garble = 0
        self._count = 0
        #: any fault switched on; read without the lock on every request (the server skips
        #: :meth:`next_action` while it is False)
        self.active = False
        self.latency = latency
        self.drop_after = drop_after
        self.garble = garble

    @property
    def latency(self) -> float:
        """Extra delay (s) before every reply."""
        return self._latency

    @latency.setter
    def latency(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 60:
            raise ValueError(f"latency must be a number of seconds in [0, 60], got {value!r}")
        with self._lock:
            self._latency = float(value)
            self._update_active()

    @property
    def drop_after(self) -> int | None:
        """Drop the connection instead of answering the N-th request from now (1 = the next)."""
        return self._drop_after

    @drop_after.setter
    def drop_after(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"drop_after must be None or an integer >= 1, got {value!r}")
        with self._lock:
            self._drop_after = value
            self._count = 0
            self._update_active()

    @property
    def garble(self) -> int:
        """Number of upcoming replies whose echoed header is corrupted."""
        return self._garble

    @garble.setter
    def garble(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"garble must be an integer >= 0 (number of replies), got {value!r}")
        with self._lock:
            self._garble = value
            self._update_active()

    def clear(self) -> None:
        """Switch every fault off."""
        with self._lock:
            self._latency = 0.0
            self._drop_after = None
            self._garble = 0
            self._count = 0
            self._update_active()

    def _update_active(self) -> None:
        self.active = bool(self._latency or self._drop_after is not None or self._garble)

    def next_action(self) -> FaultAction:
        """Consume the faults that apply to the request being served."""
        with self._lock:
            drop = False
            if self._drop_after is not None:
                self._count += 1
                if self._count >= self._drop_after:
                    drop = True
                    self._drop_after = None
                    self._count = 0
            garble = False
            if not drop and self._garble > 0:
                self._garble -= 1
                garble = True
            self._update_active()
            return FaultAction(self._latency, drop, garble)

    def __repr__(self) -> str:
        return f"Faults(latency={self._latency!r}, drop_after={self._drop_after!r}, garble={self._garble!r})"
