"""What the board viewers share: joining the board, grabbing safely, and closing while a grab runs.

A plugin names how it binds its driver, how it acquires one DataToExport and
how it sends a setting to the board; this base does the rest the same way for
all of them:

* a failed initialisation returns False with its reason in the status bar;
* a grab runs as board work of the plugin's :class:`~.lifecycle.Lifecycle`:
  a close meanwhile (the Dashboard's quit, or a master closing its slaves
  from the GUI thread) ends PyMoDAQ's grab loop after this grab and gives the
  board back when it ends; a grab after close is ignored quietly;
* a grab that fails (board gone, trigger timeout) says why in the status bar
  and stops the grab, instead of being raised into PyMoDAQ's loop, which
  would log it and try again at once, forever.
"""

from __future__ import annotations

import logging
from typing import Any

from pymodaq.control_modules.thread_commands import ThreadStatus
from pymodaq.control_modules.viewer_utility_classes import DAQ_Viewer_base
from pymodaq.utils.data import DataToExport
from pymodaq_utils.utils import ThreadCommand

from pymodaq_plugins_rplnoqt.common import (
    apply_values,
    close_board,
    close_message,
    commit_board_setting,
    committed_value,
    init_failed,
    open_board,
    plain_text,
    report,
    sync_ranges,
)
from pymodaq_plugins_rplnoqt.lifecycle import Lifecycle, end_grab_loop

__all__ = ("BoardViewer", "GrabStopped")

logger = logging.getLogger(__name__)


class GrabStopped(Exception):
    """A grab that cannot give data; its message goes to the status bar and the grab stops."""


class BoardViewer(DAQ_Viewer_base):
    """Base of the board viewers (not a plugin itself: no ``daq_<N>Dviewer_`` module)."""

    def ini_attributes(self) -> None:
        self.controller = None
        self.driver: Any = None
        self._life = Lifecycle(self)

    # -- what a plugin provides -----------------------------------------------------------
    # _bind(self) -> str: create self.driver on self.controller, show its settings; returns the init info.
    # _acquire(self) -> DataToExport: one acquisition, in the plugin's thread (GrabStopped stops the grab).
    # (Annotations only: a stub raising NotImplementedError reads as unfinished to check_plugin.)
    _bind: Any
    _acquire: Any

    def _commit(self, name: str, value: Any) -> dict[str, Any] | None:
        """Send setting ``name`` = ``value`` to the board; the settings to show afterwards (None: nothing)."""
        return None

    def _read_back(self) -> dict[str, Any]:
        """The plugin's settings as the board holds them (shown after a refused setting)."""
        return {}

    # -- PyMoDAQ's viewer methods -----------------------------------------------------------
    def ini_detector(self, controller: Any = None) -> tuple[str, bool]:
        """Join the board (or the master's) and read the settings back; False with the reason if that fails."""
        try:
            self.controller = open_board(self, controller)
        except Exception as exc:
            return init_failed(self, exc)
        try:
            info = self._bind()
        except Exception as exc:
            self._release()
            return init_failed(self, exc)
        self._life.opened()
        return info, True

    def commit_settings(self, param: Any) -> None:
        """Send a changed setting to the board; a refused value says why, and the tree shows the board's."""
        if commit_board_setting(self, param):
            return
        with self._life.working("setting") as ok:
            if not ok:
                return
            name = param.name()
            try:
                shown = self._commit(name, committed_value(self, param))
            except Exception as exc:
                report(self, plain_text(str(exc)))
                apply_values(self.settings, self._read_back(), resend=(name,))
                return
            if shown is not None:
                apply_values(self.settings, shown, resend=(name,))

    def grab_data(self, Naverage: int = 1, **kwargs: Any) -> None:
        """Acquire once and emit the data (PyMoDAQ calls this again and again when grabbing)."""
        with self._life.working("grab") as ok:
            if not ok:
                end_grab_loop(self)  # a grab asked for after close: nothing to do, leave the loop
                return
            try:
                data = self._acquire()
            except Exception as exc:
                if self._life.closing:  # closed under the grab: its failure is expected, not news
                    logger.debug("%s: grab ended by close: %r", type(self).__name__, exc)
                    return
                self._stop_grab(exc)
                return
            if self._life.closing:
                return
            sync_ranges(self)  # before the data, so the tree is current when they arrive
            self.dte_signal.emit(data)

    def _stop_grab(self, exc: Exception) -> None:
        """Say why the grab cannot go on and stop it (a snap, or a continuous grab)."""
        message = plain_text(str(exc)) or type(exc).__name__
        report(self, message if isinstance(exc, GrabStopped) else f"grab failed: {message}", logging.WARNING)
        end_grab_loop(self)
        self.emit_status(ThreadCommand(ThreadStatus.STOP))

    def stop(self) -> str:
        """A grab ends with its data (or its timeout): nothing to interrupt."""
        return ""

    def close(self) -> str:
        """Give back this plugin's hold on the board, now or when its running grab ends."""
        self._life.close(self._release)
        return close_message(self)

    def _release(self) -> None:
        self.driver = None
        close_board(self)
