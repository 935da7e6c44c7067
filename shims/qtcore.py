"""What PyRPL gets for ``qtpy.QtCore``: QObject, Signal, QTimer, an inert app.

Only PyRPL's modules see this (see :mod:`rpl_noqt.importer`); the rest of the
process keeps the real QtCore. Names PyRPL's non-GUI code does not use are
absent on purpose: an unexpected one raises an ``AttributeError`` that says so.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from rpl_noqt import loop as _loop
from rpl_noqt.signals import ConnectionType, Signal, SignalInstance

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
    :class:`rpl_noqt.signals.SignalInstance` objects.
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
    """

    timeout = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lock = threading.Lock()
        self._interval_ms: float = 0
        self._single_shot = False
        self._active = False
        self._generation = 0
        self._deadline: float | None = None
        self._handle: Any = None

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
        if not self._active:
            return -1
        deadline = self._deadline
        if deadline is None:
            return int(self._interval_ms)
        return max(0, int((deadline - _loop.get_loop().time()) * 1000))

    # -- control ------------------------------------------------------------------
    def start(self, msec: float | None = None) -> None:
        """(Re)start the timer, optionally with a new interval in ms."""
        if msec is not None:
            self._interval_ms = _check_interval(msec)
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._active = True
            self._deadline = None
            old_handle, self._handle = self._handle, None
        _loop.call_soon_threadsafe(_arm, weakref.ref(self), generation, old_handle)

    def stop(self) -> None:
        with self._lock:
            if not self._active:
                return
            self._generation += 1
            self._active = False
            self._deadline = None
            handle, self._handle = self._handle, None
        if handle is not None:
            _loop.call_soon_threadsafe(handle.cancel)

    @staticmethod
    def singleShot(msec: float, callback: Callable[[], object]) -> None:  # noqa: N802
        """Call ``callback`` once after ``msec`` ms, on the loop thread."""
        delay = _check_interval(msec) / 1000.0
        if not callable(callback):
            raise TypeError(f"QTimer.singleShot needs a callable, got {callback!r}")
        _loop.call_soon_threadsafe(_call_later, delay, callback)

    # -- loop side ------------------------------------------------------------
    def _schedule(self, generation: int) -> None:
        """On the loop: arm the next timeout (drift-free for periodic timers)."""
        loop = _loop.get_loop()
        now = loop.time()
        period = self._interval_ms / 1000.0
        with self._lock:
            if generation != self._generation or not self._active:
                return
            deadline = (self._deadline + period) if self._deadline is not None else now + period
            if deadline < now:  # fell behind (slow slot): skip missed ticks, as Qt does
                deadline = now + period
            self._deadline = deadline
            self._handle = loop.call_at(deadline, _fire, weakref.ref(self), generation)

    def _fire(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or not self._active:
                return
            if self._single_shot:
                self._active = False
                self._deadline = None
                self._handle = None
        if not self._single_shot:
            self._schedule(generation)
        self.timeout.emit()


def _arm(timer_ref: weakref.ref[QTimer], generation: int, old_handle: Any) -> None:
    if old_handle is not None:
        old_handle.cancel()
    timer = timer_ref()
    if timer is not None:
        timer._schedule(generation)


def _fire(timer_ref: weakref.ref[QTimer], generation: int) -> None:
    timer = timer_ref()
    if timer is not None:
        timer._fire(generation)


def _call_later(delay: float, callback: Callable[[], object]) -> None:
    _loop.get_loop().call_later(delay, _run_guarded, callback)


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
