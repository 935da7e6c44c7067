"""What every plugin of this package does the same way: the board settings and the shared controller.

* :func:`board_params` is the ``board`` settings group (host, port, ssh, input
  ranges), with defaults from the package config (``config_rplnoqt.toml``).
* :func:`open_board` gives a plugin its controller: a master opens (or joins)
  the :class:`~.hardware.board.Board` of its host; a slave joins the master's
  Board that PyMoDAQ passes as ``controller``. Either way it is one user of the
  board's single rpl_noqt session, given back by :func:`close_board`.
* :func:`apply_values` writes values read back from the board into a plugin's
  settings tree (PyMoDAQ forwards them to the UI); :func:`committed_value` is
  the value a setting change carries.
* :func:`init_failed` turns a failed initialisation into a status message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from qtpy import QtCore
from pymodaq.control_modules.thread_commands import ThreadStatus
from pymodaq_utils.utils import ThreadCommand

from . import config
from .hardware.board import Board, BoardSettings
from .hardware.options import INPUT_RANGES, SettingError

__all__ = ("BOARD_PARAMS", "apply_values", "board_params", "board_settings", "close_board", "commit_board_setting",
           "close_message", "committed_value", "init_failed", "open_board", "plain_text", "report", "sync_ranges")

logger = logging.getLogger(__name__)

#: Names of the settings of the ``board`` group.
BOARD_PARAMS = ("host", "port", "ssh", "in1_range", "in2_range", "connect_timeout", "io_timeout")
_CONNECTION_PARAMS = ("host", "port", "ssh", "connect_timeout", "io_timeout")

try:
    from rpl_noqt.runtime.threadsafe import plain_text
except ImportError:  # an rpl_noqt without it: the same cleaning, for status bars
    import re

    _ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

    def plain_text(text: str) -> str:
        """``text`` without terminal colour codes, its white space folded."""
        return " ".join(_ANSI.sub("", text).split())


def _default(section: str, key: str, fallback: Any) -> Any:
    """A value of the package config, or ``fallback`` if the user's file lacks it or has the wrong type."""
    try:
        value = config(section, key)
    except Exception:  # ConfigError: an older user file without this key
        return fallback
    return value if isinstance(value, type(fallback)) else fallback


def board_params() -> list[dict[str, Any]]:
    """The ``board`` settings group every plugin of this package shows."""
    return [{"title": "Board:", "name": "board", "type": "group", "children": [
        {"title": "Host:", "name": "host", "type": "str", "value": _default("board", "host", "simulator"),
         "tip": "the Red Pitaya's hostname or IP, or 'simulator' for a simulated board started on demand"},
        {"title": "Port:", "name": "port", "type": "int", "value": _default("board", "port", 2222),
         "min": 1, "max": 65535, "tip": "port of the board's monitor server"},
        {"title": "Start over SSH:", "name": "ssh", "type": "bool", "value": _default("board", "ssh", True),
         "tip": "log in, upload the FPGA image and start the server (PyRPL's way); off: the server already runs"},
        {"title": "in1 range:", "name": "in1_range", "type": "list", "limits": list(INPUT_RANGES),
         "value": _default("board", "in1_range", "LV"), "tip": "jumper of input 1: LV +-1 V, HV +-20 V"},
        {"title": "in2 range:", "name": "in2_range", "type": "list", "limits": list(INPUT_RANGES),
         "value": _default("board", "in2_range", "LV"), "tip": "jumper of input 2: LV +-1 V, HV +-20 V"},
        {"title": "Connect timeout (s):", "name": "connect_timeout", "type": "float",
         "value": _default("board", "connect_timeout", 3.0), "min": 0.1, "max": 120.0,
         "tip": "an unreachable board fails the initialisation after this long (plus SSH's own login timeout)"},
        {"title": "I/O timeout (s):", "name": "io_timeout", "type": "float",
         "value": _default("board", "io_timeout", 2.0), "min": 0.1, "max": 120.0,
         "tip": "a board that stops answering raises an error after this long (reconnects included)"},
    ]}]


def board_settings(settings: Any) -> BoardSettings:
    """The plugin's ``board`` group as :class:`BoardSettings` (validated)."""
    group = settings.child("board")
    return BoardSettings(
        host=str(group["host"]), port=int(group["port"]), ssh=bool(group["ssh"]),
        in1_range=group["in1_range"], in2_range=group["in2_range"],
        demo_signals=_default("simulator", "demo_signals", True),
        simulator_noise=float(_default("simulator", "noise", 0.0005)),
        connect_timeout=float(group["connect_timeout"]), io_timeout=float(group["io_timeout"]),
    )


def open_board(plugin: Any, controller: Board | None) -> Board:
    """The plugin's controller: a new user of its board (master) or of the master's Board (slave).

    The input ranges shown by the plugin are then read back from the Board
    (the first plugin on a board sets them, later ones show them). The hold is
    given back by :func:`close_board`, or, if PyMoDAQ never delivers the
    plugin's close, when the plugin's thread ends (see :class:`_Hold`).
    """
    if plugin.is_master:
        board = Board.open(board_settings(plugin.settings))
    else:
        if not isinstance(controller, Board):
            raise SettingError(f"this plugin is a slave but its master's controller is {controller!r}, not a Board "
                               "of this package: make a plugin of pymodaq_plugins_rplnoqt its master")
        board = controller.attach()
    hold = _Hold(board)
    try:
        apply_values(plugin.settings.child("board"),
                     {"in1_range": board.input_range("in1"), "in2_range": board.input_range("in2")})
    except BaseException:
        hold.release()
        raise
    plugin._rplnoqt_hold = hold
    return board


def close_board(plugin: Any) -> None:
    """Give back the plugin's hold on its board (once); the last plugin disconnects it."""
    hold = getattr(plugin, "_rplnoqt_hold", None)
    plugin.controller = None
    if hold is not None:
        hold.release()


class _Hold:
    """One plugin's use of a Board, released exactly once: by the plugin's close or by its thread's end.

    PyMoDAQ 5.3.8 closes a module by queueing CLOSE to the worker thread and
    then quitting that thread; when the quit wins the race, the plugin's
    close() never runs. The thread's ``finished`` signal (emitted in that
    thread, before ``QThread.wait()`` returns) releases the hold then.
    """

    def __init__(self, board: Board) -> None:
        self.board = board
        self._lock = threading.Lock()
        self._released = False
        app = QtCore.QCoreApplication.instance()
        thread = QtCore.QThread.currentThread()
        self._thread = thread if app is not None and thread != app.thread() else None
        if self._thread is not None:  # a worker thread (not the GUI thread, which only ends with the app)
            self._thread.finished.connect(self.release, QtCore.Qt.ConnectionType.DirectConnection)

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        if self._thread is not None:
            try:
                self._thread.finished.disconnect(self.release)
            except (TypeError, RuntimeError):  # already disconnected, or the thread object is gone
                pass
        self.board.release()


def commit_board_setting(plugin: Any, param: Any) -> bool:
    """Handle a change in the ``board`` group; False if ``param`` is not one of it.

    Input ranges apply at once to the shared Board (every plugin on the board
    uses them); host, port and ssh take effect at the next initialisation.
    """
    if param.name() not in BOARD_PARAMS or param.parent() is None or param.parent().name() != "board":
        return False
    board = plugin.controller
    if param.name() in ("in1_range", "in2_range") and isinstance(board, Board):
        board.set_input_range(param.name()[:3], param.value())
    elif param.name() in _CONNECTION_PARAMS:
        report(plugin, f"{param.name()} = {param.value()!r} takes effect when the plugin is initialised again")
    return True


def sync_ranges(plugin: Any) -> None:
    """Show the Board's current input ranges (another plugin may have changed them)."""
    board = plugin.controller
    if isinstance(board, Board):
        apply_values(plugin.settings.child("board"),
                     {"in1_range": board.input_range("in1"), "in2_range": board.input_range("in2")})


def apply_values(group: Any, values: Mapping[str, Any], resend: Iterable[str] = ()) -> None:
    """Write ``values`` into the children of ``group`` that have those names.

    A value that differs is set, and PyMoDAQ forwards it to the UI. The
    names in ``resend`` are forwarded even when the plugin's tree already
    holds the value: after a setting change the UI may show something else
    (what was typed, a value clipped by its spin box, a later edit read from
    the live parameter), and only the board's value must stay there.
    """
    resend = set(resend)
    for name, value in values.items():
        try:
            param = group.child(name)
        except KeyError:  # pyqtgraph: no such child
            continue
        if param.value() != value:
            param.setValue(value)
        elif name in resend:
            _resend(param, value)


def _resend(param: Any, value: Any) -> None:
    """Forward ``param``'s value to the UI as if it had just changed (PyMoDAQ's tree-change route)."""
    root = param
    while root.parent() is not None:
        root = root.parent()
    root.sigTreeStateChanged.emit(root, [(param, "value", value)])


def committed_value(plugin: Any, param: Any) -> Any:
    """The value a setting change carries: the plugin's copy, set when the change reached its thread.

    PyMoDAQ 5.3.8 hands ``commit_settings`` the UI's live Parameter; reading
    that later may give a value typed since, one this change never meant.
    """
    path = [param.name()]
    parent = param.parent()
    while parent is not None and parent.name() not in ("detector_settings", "actuator_settings"):
        path.insert(0, parent.name())
        parent = parent.parent()
    try:
        return plugin.settings.child(*path).value()
    except Exception:  # not a plugin setting (KeyError from pyqtgraph): the value as handed over
        return param.value()


def close_message(plugin: Any) -> str:
    """What a plugin's close returns, shown by PyMoDAQ in its status bar.

    A slave is closed from outside its thread only when its master closes
    (PyMoDAQ then closes every plugin of the master's thread): say so, and
    how to get it back.
    """
    worker = getattr(plugin, "parent", None)
    by_master = (not plugin.is_master and worker is not None
                 and QtCore.QThread.currentThread() is not worker.thread())
    if by_master:
        return "closed with its master: initialise the master again, then this plugin"
    return "closed"


def report(plugin: Any, message: str, level: int = logging.INFO) -> None:
    """Show ``message`` in the plugin's status bar and log it."""
    logger.log(level, "%s: %s", type(plugin).__name__, message)
    plugin.emit_status(ThreadCommand(ThreadStatus.UPDATE_STATUS, message))


def init_failed(plugin: Any, exc: BaseException) -> tuple[str, bool]:
    """What a plugin's ini returns when it could not join its board; the reason goes to the status bar.

    PyMoDAQ's viewer shows only "Viewer initialized: False" after a failed
    init, so the reason is posted from the worker's event loop, right after
    that line, and stays the last message in the status bar. A master then
    ends its worker thread: PyMoDAQ 5.3.8 leaves it running after a failed
    init, and the next init (a new thread) would reach this worker too, which
    would initialise a second plugin that nothing ever closes.
    """
    reason = plain_text(str(exc)) or type(exc).__name__
    message = f"not initialised: {reason}"
    logger.warning("%s: %s", type(plugin).__name__, message)
    status = ThreadCommand(ThreadStatus.UPDATE_STATUS, message)
    app = QtCore.QCoreApplication.instance()
    thread = QtCore.QThread.currentThread()
    if app is None or getattr(plugin, "parent", None) is None:
        plugin.emit_status(status)
        return message, False
    own_thread = plugin.is_master and thread is not app.thread()

    def after_init() -> None:
        plugin.emit_status(status)
        if own_thread:
            thread.quit()

    QtCore.QTimer.singleShot(0, after_init)
    return message, False
