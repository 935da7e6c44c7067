"""One reentrant, fair lock per board, and a watchdog for long holders.

Every register access, PyRPL attribute get/set and public module method takes
its board's :class:`DeviceLock` (installed by :mod:`rpl_noqt.runtime.threadsafe`), so
read-modify-write registers shared between modules (the DSP sync word, the
ASG control word of both channels) never interleave. Users hold it for a
transaction with ``with session.lock:``.

The lock is starvation-free: a free lock may be taken by any thread, but a
waiter that has waited more than a couple of milliseconds is handed the lock
directly, in arrival order, so no thread starves under load. A thread blocking in
``pyrpl.async_utils.wait``/``sleep`` gives it up for the duration
(:mod:`rpl_noqt.runtime.blocking`), so an acquisition running on the event loop can
use the board meanwhile.
"""

from __future__ import annotations

import collections
import itertools
import logging
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import blocking

__all__ = ("FAIR_AFTER_S", "DeviceLock", "FifoLock", "set_watchdog", "watchdog_threshold")

logger = logging.getLogger(__name__)


_get_ident = threading.get_ident
_STAMPS = itertools.count(1)  # next() is atomic: orders outermost acquisitions across locks
_monotonic = time.monotonic

#: A waiter that has waited this long is handed the lock directly on the next
#: release (no barging past it): bounds every wait to about this plus one hold.
FAIR_AFTER_S = 0.002


class _Waiter:
    __slots__ = ("ident", "gate", "since", "signalled")

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.gate = threading.Lock()
        self.gate.acquire()
        self.since = time.monotonic()
        self.signalled = False

    def signal(self) -> None:
        if not self.signalled:
            self.signalled = True
            self.gate.release()


class DeviceLock:
    """Reentrant lock for one board, starvation-free. Not picklable; one per board.

    A free lock may be taken by any thread (barging keeps throughput when many
    threads do short register operations), but a waiter that has waited more
    than :data:`FAIR_AFTER_S` gets the lock handed over directly on the next
    release, in arrival order: nobody waits much longer than the holders ahead.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._state = threading.Lock()  # guards the fields below, held briefly
        self._owner: int | None = None
        self._count = 0
        self._since = 0.0
        self._reported = False
        self._stamp = 0
        self._waiters: collections.deque[_Waiter] = collections.deque()
        _ALL_LOCKS.add(self)
        blocking.register(self)

    # -- acquire / release -------------------------------------------------------------
    def acquire(self, blocking_: bool = True, timeout: float = -1) -> bool:
        me = _get_ident()
        if self._owner == me:  # re-entry: only this thread can change these now
            self._count += 1
            return True
        state = self._state
        state.acquire()
        if self._owner is None:  # free: the common case, kept short (no helper calls)
            self._owner, self._count = me, 1
            self._since, self._reported, self._stamp = _monotonic(), False, next(_STAMPS)
            state.release()
            return True
        try:
            if not blocking_:
                return False
            waiter = _Waiter(me)
            self._waiters.append(waiter)
        finally:
            state.release()
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            remaining = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            woken = waiter.gate.acquire(timeout=remaining)
            with self._state:
                if self._owner == me:  # handed over by the releaser (who stamped it)
                    return True
                if self._owner is None:  # free: take it, leave the queue
                    self._waiters.remove(waiter)
                    self._take(me)
                    return True
                if not woken and deadline is not None and time.monotonic() >= deadline:
                    self._waiters.remove(waiter)
                    return False
                # somebody barged in: wait again, keeping our place in line
                waiter.signalled = False

    def release(self) -> None:
        if self._owner != _get_ident():
            raise RuntimeError(f"board lock {self.name!r} released by a thread that does not hold it")
        if self._count > 1:  # inner release: only the owner touches the count
            self._count -= 1
            return
        with self._state:
            self._count = 0
            if not self._waiters:
                self._owner = None
                return
            head = self._waiters[0]
            if time.monotonic() - head.since > FAIR_AFTER_S:
                self._waiters.popleft()  # waited long enough: hand over, no barging
                self._take(head.ident)
            else:
                self._owner = None
            head.signal()

    def _take(self, ident: int) -> None:
        self._owner, self._count = ident, 1
        self._since, self._reported, self._stamp = _monotonic(), False, next(_STAMPS)

    def __enter__(self) -> DeviceLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    # -- used by rpl_noqt.runtime.blocking while a thread waits ---------------------------------
    def _held_stamp(self, ident: int) -> int | None:
        """Acquisition order stamp if ``ident`` holds the lock, else None."""
        return self._stamp if self._owner == ident else None

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


class FifoLock:
    """A plain (non-reentrant) lock handed over in arrival order.

    ``threading.Lock`` lets a thread that releases and at once acquires
    again win over threads already waiting: a stream's acquisition loop did
    that to the ``single()`` calls queued on the same module, which then
    waited for tens of seconds. Here a release hands the lock to the oldest
    waiter directly. ``acquire(cancelled=...)`` waits in place (it does not
    lose its turn) and gives up when ``cancelled()`` turns true, looking
    every ``poll`` seconds.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locked = False
        self._waiters: collections.deque[threading.Event] = collections.deque()

    def acquire(self, blocking: bool = True, timeout: float = -1, *,
                cancelled: Callable[[], bool] | None = None, poll: float = 0.02) -> bool:
        with self._mutex:
            if not self._locked and not self._waiters:
                self._locked = True
                return True
            if not blocking:
                return False
            gate = threading.Event()
            self._waiters.append(gate)
        deadline = None if timeout is None or timeout < 0 else _monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - _monotonic()
            step = remaining if cancelled is None else (poll if remaining is None else min(poll, remaining))
            if gate.wait(None if step is None else max(0.0, step)):
                return True
            if (cancelled is not None and cancelled()) or (deadline is not None and _monotonic() >= deadline):
                with self._mutex:
                    if gate.is_set():  # handed over meanwhile: ours now
                        return True
                    self._waiters.remove(gate)
                    return False

    def release(self) -> None:
        with self._mutex:
            if not self._locked:
                raise RuntimeError("release of an unlocked FifoLock")
            if self._waiters:
                self._waiters.popleft().set()  # stays locked: ownership passes to the oldest waiter
            else:
                self._locked = False

    def locked(self) -> bool:
        return self._locked

    def __enter__(self) -> FifoLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
