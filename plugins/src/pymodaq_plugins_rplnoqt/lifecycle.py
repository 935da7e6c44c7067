"""When a plugin may use its board, and how its close ends work that is still running.

PyMoDAQ 5.3.8 closes a plugin in ways that meet a running acquisition:

* The Dashboard's quit sends CLOSE to the worker thread while the viewer
  grabs. The worker's grab loop (``DetectorWorker.grab_data``) handles it
  from its ``processEvents()`` between two grabs, then keeps calling the
  plugin's ``grab_data`` until its ``grab_state`` is False; nothing else ends
  that loop, so PyMoDAQ terminates the thread after 5 s (a hang or a
  segfault when the thread runs Python).
* Closing a master calls each slave's ``close_hardware()`` directly in the
  GUI thread, while that slave may be grabbing in the shared worker thread.

:class:`Lifecycle` makes both safe. Board work (a grab, a move, a setting)
runs between :meth:`~Lifecycle.begin` and :meth:`~Lifecycle.end`; a close
that arrives meanwhile (from any thread) only marks the plugin closing, ends
the worker's grab loop, and lets the last piece of work give the board back
when it ends. Work asked for after close is refused quietly (debug log).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ("Lifecycle", "end_grab_loop")

logger = logging.getLogger(__name__)


def end_grab_loop(plugin: Any) -> None:
    """Make PyMoDAQ's worker leave its grab loop after the current grab.

    The loop tests the worker's ``grab_state`` after each grab (PyMoDAQ
    5.3.8); a STOP status would have to travel through the GUI thread, which
    is blocked in ``QThread.wait()`` while it closes the module, so the flag
    is the only way out in time. A plugin without such a worker (an actuator,
    or a plugin driven without PyMoDAQ) is left alone.
    """
    worker = getattr(plugin, "parent", None)
    if worker is not None and hasattr(worker, "grab_state"):
        worker.grab_state = False


class Lifecycle:
    """Open/closing state of one plugin and the board work it has running (thread-safe)."""

    def __init__(self, plugin: Any) -> None:
        self._plugin = plugin
        self._lock = threading.Lock()
        self._open = False
        self._closing = False
        self._busy = 0
        self._release: Callable[[], None] | None = None

    @property
    def closing(self) -> bool:
        """True once close was asked for (the plugin does no new board work)."""
        return self._closing

    def opened(self) -> None:
        """The plugin holds its board now (after a successful initialisation)."""
        with self._lock:
            self._open, self._closing = True, False

    def begin(self, what: str) -> bool:
        """Start a piece of board work; False (and a debug line) if the plugin is not open."""
        with self._lock:
            if self._open and not self._closing:
                self._busy += 1
                return True
        logger.debug("%s: %s after close ignored", type(self._plugin).__name__, what)
        return False

    def end(self) -> None:
        """End a piece of board work; the last one after a close gives the board back."""
        with self._lock:
            self._busy -= 1
            release = self._release if self._closing and self._busy == 0 else None
            if release is not None:
                self._release = None
        if release is not None:
            release()

    @contextmanager
    def working(self, what: str) -> Iterator[bool]:
        """``with life.working("grab") as ok:`` board work if ``ok`` (False: closed, do nothing)."""
        ok = self.begin(what)
        try:
            yield ok
        finally:
            if ok:
                self.end()

    def close(self, release: Callable[[], None]) -> None:
        """Stop new work and give the board back with ``release()``: now, or when running work ends."""
        end_grab_loop(self._plugin)
        with self._lock:
            self._closing = True
            self._open = False
            if self._busy:
                self._release = release
                logger.debug("%s: close during board work; the board is given back when it ends",
                             type(self._plugin).__name__)
                return
        release()
