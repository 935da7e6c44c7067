"""What PyRPL gets for ``qtpy.QtCore``: QObject, Signal, QTimer, an inert app.

Only PyRPL's modules see this (see :mod:`rpl_noqt.runtime.importer`); the rest of the
process keeps the real QtCore. Names PyRPL's non-GUI code does not use are
absent on purpose: an unexpected one raises an ``AttributeError`` that says so.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from rpl_noqt.runtime import loop as _loop
from rpl_noqt.runtime.signals import ConnectionType, Signal, SignalInstance

__all__ = (
    "QCoreApplication",
    "QEventLoop",
    "QObject",
    "QTimer",
    "Qt",
    "Signal",
    "SignalInstance",
    "Slot",
    "pyqtBoundSignal",
    "pyqtSignal",
    "pyqtSlot",
)

logger = logging.getLogger(__name__)
_monotonic = time.monotonic

# Qt-compatible aliases used by qtpy-based code
pyqtSignal = Signal
pyqtBoundSignal = SignalInstance

#: ``QtCore.Qt``: the connection types (what non-GUI code passes to connect).
Qt = SimpleNamespace(
    AutoConnection=ConnectionType.AutoConnection,
    DirectConnection=ConnectionType.DirectConnection,
    QueuedConnection=ConnectionType.QueuedConnection,
    BlockingQueuedConnection=ConnectionType.BlockingQueuedConnection,
    UniqueConnection=ConnectionType.UniqueConnection,
    ConnectionType=ConnectionType,
)


def Slot(*_types: object, **_kwargs: object) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # noqa: N802
    """``@QtCore.Slot(...)``: a no-op marker, as slots need no registration here."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        return func

    return mark


pyqtSlot = Slot


class QObject:
    """A plain object with Qt's signal-blocking and parent surface.

    No thread affinity, no event queue: its signals are
    :class:`rpl_noqt.runtime.signals.SignalInstance` objects.
    """

    _rpl_signals_blocked = False

    def __init__(self, parent: QObject | None = None, *args: Any, **kwargs: Any) -> None:
        self._rpl_parent = parent
        self._rpl_object_name = ""

    def blockSignals(self, block: bool) -> bool:  # noqa: N802
        """Block (or unblock) every signal of this object; returns the old state."""
        previous = self._rpl_signals_blocked
        self._rpl_signals_blocked = bool(block)
        for value in list(vars(self).values()):
            if isinstance(value, SignalInstance):
                value.blockSignals(block)
        return previous

    def signalsBlocked(self) -> bool:  # noqa: N802
        return self._rpl_signals_blocked

    def parent(self) -> QObject | None:
        return self._rpl_parent

    def setParent(self, parent: QObject | None) -> None:  # noqa: N802
        self._rpl_parent = parent

    def objectName(self) -> str:  # noqa: N802
        return self._rpl_object_name

    def setObjectName(self, name: str) -> None:  # noqa: N802
        self._rpl_object_name = str(name)

    def moveToThread(self, _thread: object) -> None:  # noqa: N802
        """No thread affinity here: accepted and ignored."""

    def deleteLater(self) -> None:  # noqa: N802
        """Disconnect every signal of this object (what deletion means for a slot owner)."""
        for value in list(vars(self).values()):
            if isinstance(value, SignalInstance) and value.receivers():
                value.disconnect()


class QTimer(QObject):
    """A timer running on the background loop, startable from any thread.

    ``interval`` is in milliseconds and may be a float (PyQt requires an int,
    which broke PyRPL on Python 3.13). The loop holds the timer weakly, so a
    timer nobody references stops, as a parentless QTimer does when deleted.
    ``timeout`` slots run on the loop thread.

    Starting, restarting and stopping are cheap from any thread: the timer
    keeps its deadline itself and the loop checks it when the timer's entry in
    :func:`rpl_noqt.runtime.loop.schedule` comes due. A restart that moves the deadline
    later (what a config save or a watchdog does on every change) leaves that
    entry in place, and the loop moves it on to the new deadline when it comes
    up; only a deadline earlier than the loop's next wake-up costs a cross-thread call.
    """

    timeout = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._interval_ms: float = 0
        self._single_shot = False
        self._active = False
        self._deadline: float | None = None  # time.monotonic() of the next timeout while active
        self._queued_at: float | None = None  # an entry for this timer is due on the loop then
        self._ref = weakref.ref(self)

    # -- configuration ----------------------------------------------------------
    def setInterval(self, msec: float) -> None:  # noqa: N802
        """Set the period; an active timer restarts with it, as in Qt."""
        self._interval_ms = _check_interval(msec)
        if self._active:
            self.start()

    def interval(self) -> float:
        return self._interval_ms

    def setSingleShot(self, single: bool) -> None:  # noqa: N802
        self._single_shot = bool(single)

    def isSingleShot(self) -> bool:  # noqa: N802
        return self._single_shot

    def isActive(self) -> bool:  # noqa: N802
        return self._active

    def remainingTime(self) -> int:  # noqa: N802
        """Milliseconds until the next timeout, -1 if inactive."""
        deadline = self._deadline
        if not self._active or deadline is None:
            return -1
        return max(0, int((deadline - _monotonic()) * 1000))

    # -- control ------------------------------------------------------------------
    def start(self, msec: float | None = None) -> None:
        """(Re)start the timer, optionally with a new interval in ms."""
        if msec is not None:
            self._interval_ms = _check_interval(msec)
        deadline = _monotonic() + self._interval_ms / 1000.0
        with self._lock:
            self._active = True
            self._deadline = deadline
            queued = self._queued_at
            if queued is not None and queued <= deadline:
                return  # the loop looks at this timer by then and moves it on to the new deadline
            self._queued_at = deadline
        _loop.schedule(deadline, _due, self._ref, deadline)

    def stop(self) -> None:
        """Stop; an entry still queued on the loop finds the timer inactive and does nothing."""
        with self._lock:
            self._active = False
            self._deadline = None

    @staticmethod
    def singleShot(msec: float, callback: Callable[[], object]) -> None:  # noqa: N802
        """Call ``callback`` once after ``msec`` ms, on the loop thread."""
        delay = _check_interval(msec) / 1000.0
        if not callable(callback):
            raise TypeError(f"QTimer.singleShot needs a callable, got {callback!r}")
        _loop.schedule(_monotonic() + delay, _run_guarded, callback)

    # -- loop side ------------------------------------------------------------
    def _due(self, queued_at: float) -> None:
        """On the loop: an entry of this timer came due; fire if its deadline has come."""
        with self._lock:
            if self._queued_at == queued_at:
                self._queued_at = None
            deadline = self._deadline
            if not self._active or deadline is None:
                return
            now = _monotonic()
            fire = deadline <= now
            if fire:
                if self._single_shot:
                    self._active = False
                    self._deadline = None
                    deadline = None
                else:  # drift-free; a slow slot skips missed ticks, as Qt does
                    period = self._interval_ms / 1000.0
                    deadline += period
                    if deadline < now:
                        deadline = now + period
                    self._deadline = deadline
            # else: restarted since this entry was queued; wait for the new deadline
            requeue = deadline is not None and (self._queued_at is None or self._queued_at > deadline)
            if requeue:
                self._queued_at = deadline
        if requeue:
            _loop.schedule(deadline, _due, self._ref, deadline)
        if fire:
            self.timeout.emit()


def _due(timer_ref: weakref.ref[QTimer], queued_at: float) -> None:
    timer = timer_ref()
    if timer is not None:
        timer._due(queued_at)


def _run_guarded(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("QTimer.singleShot callback %r raised", callback)


def _check_interval(msec: object) -> float:
    if isinstance(msec, bool) or not isinstance(msec, (int, float)):
        raise TypeError(f"timer interval must be a number of milliseconds, got {msec!r}")
    if not msec >= 0:  # also rejects NaN
        raise ValueError(f"timer interval must be >= 0 ms, got {msec!r}")
    return msec


class QEventLoop(QObject):
    """A blocking wait until :meth:`quit` (the background loop does the real work)."""

    AllEvents = 0
    ExcludeUserInputEvents = 1

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._done = threading.Event()
        self._code = 0

    def exec_(self, *_flags: object) -> int:
        self._done.wait()
        self._done.clear()
        return self._code

    exec = exec_

    def quit(self) -> None:
        self.exit(0)

    def exit(self, code: int = 0) -> None:
        self._code = code
        self._done.set()

    def processEvents(self, *_args: object) -> None:  # noqa: N802
        """Nothing to process: timers and tasks run on the background loop."""


class QCoreApplication(QObject):
    """An inert application object: PyRPL asks for one, nothing needs it to run."""

    _instance: QCoreApplication | None = None

    def __init__(self, argv: list[str] | None = None) -> None:
        super().__init__()
        self._argv = list(argv or [])
        type(self)._register(self)

    @classmethod
    def _register(cls, app: QCoreApplication) -> None:
        QCoreApplication._instance = app

    @staticmethod
    def instance() -> QCoreApplication | None:
        return QCoreApplication._instance

    @staticmethod
    def processEvents(*_args: object) -> None:  # noqa: N802
        """No-op: the background loop never needs pumping."""

    def exec_(self) -> int:
        """Block until interrupted: a headless process has no GUI to run."""
        threading.Event().wait()
        return 0

    exec = exec_

    def quit(self) -> None:
        """Nothing to stop."""

    def arguments(self) -> list[str]:
        return list(self._argv)


def __getattr__(name: str) -> Any:
    raise AttributeError(
        f"rpl_noqt's QtCore stand-in has no {name!r}: PyRPL's non-GUI code is not "
        "known to use it. If a PyRPL release needs it, please report it."
    )
