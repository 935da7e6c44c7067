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


def timed(action: Callable[[], Any]) -> float:
    """Seconds ``action()`` took (wall clock: what a user waits for)."""
    import time

    start = time.monotonic()
    action()
    return time.monotonic() - start


def free_port() -> int:
    """A loopback port nothing listens on (a closed port)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UnreachablePort:
    """A loopback port whose connects never complete: a listener with a full accept queue.

    Emulates an unreachable host without sending anything off the machine:
    the kernel queues ``backlog + 1`` handshakes, then drops further SYNs, so
    a connect waits until its own timeout as it would for a host that is gone.
    """

    def __init__(self) -> None:
        import socket

        self._socket = socket
        self._listener = socket.socket()
        self._fillers: list[Any] = []
        self.port = 0

    def __enter__(self) -> int:
        import contextlib

        socket = self._socket
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", self.port))
        except (TimeoutError, socket.timeout):
            return self.port
        else:
            self.__exit__(None, None, None)
            raise RuntimeError("the accept queue did not fill up: cannot emulate an unreachable host here")
        finally:
            probe.close()

    def __exit__(self, *exc: Any) -> None:
        for filler in self._fillers:
            filler.close()
        self._fillers.clear()
        self._listener.close()
