"""Helpers for the PyMoDAQ plugin tests (a module of its own: several test
folders have a ``conftest``, so importing from "conftest" is ambiguous)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pymodaq.control_modules.daq_move import DAQ_Move

INIT_TIMEOUT_MS = 20_000
MOVE_TIMEOUT_MS = 10_000
GRAB_TIMEOUT_MS = 10_000


def snap(qtbot: Any, viewer: Any, timeout: int = GRAB_TIMEOUT_MS) -> Any:
    """One grab through PyMoDAQ; returns the DataToExport."""
    with qtbot.waitSignal(viewer.grab_done_signal, timeout=timeout) as blocker:
        viewer.snap()
    return blocker.args[0]


def move_abs(qtbot: Any, move: Any, value: float, timeout: int = MOVE_TIMEOUT_MS) -> float:
    """Move through PyMoDAQ and wait for move_done; returns the value reached."""
    with qtbot.waitSignal(move.move_done_signal, timeout=timeout) as blocker:
        move.move_abs(value)
    return float(blocker.args[0].value())


def set_setting(qtbot: Any, module: Any, path: tuple[str, ...], value: Any, until: Callable[[], bool],
                timeout: int = MOVE_TIMEOUT_MS) -> None:
    """Change a plugin setting from the UI side; return once ``until()`` (an effect of it) holds.

    A change travels to the plugin's thread on its own queued path, and
    PyMoDAQ 5.3.8 may run a command sent right after it (a move, a grab)
    first; so we wait for the change's effect rather than for a command.
    """
    group = "actuator_settings" if isinstance(module, DAQ_Move) else "detector_settings"
    module.settings.child(group, *path).setValue(value)
    qtbot.waitUntil(until, timeout=timeout)
