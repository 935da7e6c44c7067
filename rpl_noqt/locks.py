"""One reentrant, fair lock per board, and a watchdog for long holders.

Every register access, PyRPL attribute get/set and public module method takes
its board's :class:`DeviceLock` (installed by :mod:`rpl_noqt.threadsafe`), so
read-modify-write registers shared between modules (the DSP sync word, the
ASG control word of both channels) never interleave. Users hold it for a
transaction with ``with session.lock:``.

The lock is FIFO-fair: when it is contended, a release hands it to the
longest waiter, so no thread starves under load. A thread blocking in
``pyrpl.async_utils.wait``/``sleep`` gives it up for the duration
(:mod:`rpl_noqt.blocking`), so an acquisition running on the event loop can
use the board meanwhile.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
import traceback
import weakref
from types import TracebackType
from typing import Any

from . import blocking

__all__ = ("DeviceLock", "set_watchdog", "watchdog_threshold")

logger = logging.getLogger(__name__)


class DeviceLock:
    """Reentrant FIFO lock for one board. Not picklable; one per board."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = threading.Lock()  # guards the fields below, held briefly
        self._owner: int | None = None
        self._count = 0
        self._since = 0.0
        self._reported = False
        self._waiters: collections.deque[tuple[int, threading.Lock]] = collections.deque()
        _ALL_LOCKS.add(self)

    # -- acquire / release -------------------------------------------------------------
    def acquire(self, blocking_: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        with self._state:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None and not self._waiters:
                self._take(me, 1)
                return True
            if not blocking_:
                return False
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append((me, gate))
        if not gate.acquire(timeout=timeout if timeout >= 0 else -1):
            with self._state:
                if (me, gate) in self._waiters:
                    self._waiters.remove((me, gate))
                    return False
            # handed over just as we timed out: we own it
        blocking.note_acquired(self)  # the releaser made us owner before opening the gate
        return True

    def release(self) -> None:
        me = threading.get_ident()
        with self._state:
            if self._owner != me:
                raise RuntimeError(f"board lock {self.name!r} released by a thread that does not hold it")
            self._count -= 1
            if self._count:
                return
            self._hand_over()

    def _take(self, ident: int, count: int) -> None:
        self._owner, self._count = ident, count
        self._since, self._reported = time.monotonic(), False
        blocking.note_acquired(self)

    def _hand_over(self) -> None:
        """With _state held: give the lock to the next waiter, or free it."""
        blocking.note_released(self)
        if self._waiters:
            ident, gate = self._waiters.popleft()
            self._owner, self._count = ident, 1
            self._since, self._reported = time.monotonic(), False
            gate.release()
        else:
            self._owner = None
            self._count = 0

    def __enter__(self) -> DeviceLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    # -- used by rpl_noqt.blocking while a thread waits ---------------------------------
    def _release_all(self) -> int:
        with self._state:
            count = self._count
            self._count = 1
        self.release()
        return count

    def _restore(self, count: int) -> None:
        self.acquire()
        with self._state:
            self._count = count

    # -- queries -----------------------------------------------------------------------------
    def locked(self) -> bool:
        return self._owner is not None

    def held_by_me(self) -> bool:
        return self._owner == threading.get_ident()

    def holder(self) -> threading.Thread | None:
        owner = self._owner
        if owner is None:
            return None
        return next((t for t in threading.enumerate() if t.ident == owner), None)

    def held_for(self) -> float:
        """Seconds the current holder has held it (0 when free)."""
        return time.monotonic() - self._since if self._owner is not None else 0.0

    def __repr__(self) -> str:
        holder = self.holder()
        state = f"held by {holder.name if holder else self._owner} x{self._count}" if self._owner else "free"
        return f"<DeviceLock {self.name} {state}, {len(self._waiters)} waiting>"


# -- watchdog ----------------------------------------------------------------------------------
_ALL_LOCKS: weakref.WeakSet[DeviceLock] = weakref.WeakSet()
_watchdog: dict[str, Any] = {"threshold": None, "thread": None, "stop": threading.Event()}


def watchdog_threshold() -> float | None:
    """Seconds after which a held board lock is reported, or None (off)."""
    return _watchdog["threshold"]


def set_watchdog(seconds: float | None) -> None:
    """Log (warning, with the holder's stack) any board lock held > ``seconds``.

    ``None`` switches it off. The check runs in a daemon thread
    ``rpl-noqt-watchdog`` every ``seconds / 4`` (at most every 0.5 s).
    """
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0):
        raise ValueError(f"watchdog threshold must be a positive number of seconds or None, got {seconds!r}")
    old = _watchdog["thread"]
    if old is not None:
        _watchdog["stop"].set()
        old.join(5)
        _watchdog["thread"] = None
    _watchdog["threshold"] = seconds
    if seconds is None:
        return
    stop = _watchdog["stop"] = threading.Event()
    thread = threading.Thread(target=_watch, args=(float(seconds), stop), name="rpl-noqt-watchdog", daemon=True)
    _watchdog["thread"] = thread
    thread.start()


def _watch(threshold: float, stop: threading.Event) -> None:
    period = min(0.5, threshold / 4)
    while not stop.wait(period):
        for lock in list(_ALL_LOCKS):
            owner = lock._owner
            if owner is None or lock._reported or lock.held_for() <= threshold:
                continue
            lock._reported = True
            frame = sys._current_frames().get(owner)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(stack unavailable)\n"
            holder = lock.holder()
            logger.warning(
                "board lock %s held for %.2f s (> %.2f s) by thread %s; its stack:\n%s",
                lock.name, lock.held_for(), threshold, holder.name if holder else owner, stack,
            )
