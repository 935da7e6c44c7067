"""Fixtures for the PyMoDAQ plugin tests: real DAQ_Move / DAQ_Viewer control modules, offscreen.

Skipped as a whole when PyMoDAQ or the plugin package is not installed (CI
installs both: ``pip install -e "plugins/[test]"``). Every control module a
test creates is closed with ``quit_fun()`` whatever happens (a QThread left
running aborts the process), and every wait has a timeout, because PyMoDAQ's
workers swallow plugin exceptions: a failure shows as a missing signal.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

with warnings.catch_warnings():  # PyMoDAQ's own deprecations are not ours to fail on
    warnings.simplefilter("ignore")
    if os.environ.get("CI"):  # CI installs them: a missing one must fail, not skip
        import pymodaq  # noqa: F401
        import pymodaq_plugins_rplnoqt  # noqa: F401
        import pytestqt  # noqa: F401
    pytest.importorskip("pymodaq", reason="PyMoDAQ is not installed: pip install -e 'plugins/[test]'")
    pytest.importorskip("pytestqt", reason="pytest-qt is not installed: pip install -e 'plugins/[test]'")
    pytest.importorskip("pymodaq_plugins_rplnoqt", reason="the plugins are not installed: pip install -e plugins/")
    from pymodaq.control_modules.daq_move import DAQ_Move
    from pymodaq.control_modules.daq_viewer import DAQ_Viewer

from pymodaq_plugins_rplnoqt.hardware import simulator  # noqa: E402

from pmd_helpers import INIT_TIMEOUT_MS, MOVE_TIMEOUT_MS, GRAB_TIMEOUT_MS  # noqa: E402,F401


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            # PyMoDAQ and pyqtgraph deprecate their own internals while we drive them
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"))


class ErrorLog(logging.Handler):
    """Collects log records that mean something went wrong (errors anywhere, desync warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        desync = "Wrong control sequence" in record.getMessage() or "not answer" in record.getMessage()
        if record.levelno >= logging.ERROR or desync:
            self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records]


@pytest.fixture
def error_log() -> Iterator[ErrorLog]:
    """Errors logged during the test (PyMoDAQ's loggers propagate to the root logger)."""
    handler = ErrorLog()
    loggers = [logging.getLogger()]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        yield handler
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


class Modules:
    """Creates, initialises and (always) closes PyMoDAQ control modules for one test."""

    def __init__(self, qtbot: Any) -> None:
        self.qtbot = qtbot
        self.created: list[Any] = []

    def viewer(self, plugin: str, daq_type: str, title: str, *, init: bool = True,
               settings: dict[tuple[str, ...], Any] | None = None, master: Any = None) -> Any:
        module = DAQ_Viewer(None, title=title, daq_type=daq_type)
        self.created.append(module)
        module.detector = plugin
        return self._prepare(module, "detector_settings", init, settings, master)

    def move(self, plugin: str, title: str, *, axis: str | None = None, init: bool = True,
             settings: dict[tuple[str, ...], Any] | None = None, master: Any = None) -> Any:
        module = DAQ_Move(None, title=title)
        self.created.append(module)
        module.actuator = plugin
        if axis is not None:
            module.axis_name = axis
        return self._prepare(module, "actuator_settings", init, settings, master)

    def _prepare(self, module: Any, group: str, init: bool, settings: dict[tuple[str, ...], Any] | None,
                 master: Any) -> Any:
        # before init these only change the tree the plugin is created from
        for path, value in (settings or {}).items():
            module.settings.child(group, *path).setValue(value)
        if master is not None:  # what PyMoDAQ's ModulesManager / preset loader do for a slave
            module.master = False
            module.id = master.settings[group, "controller", "controller_ID"]
            module.controller_and_thread.controller = master.controller_and_thread.controller
            module.controller_and_thread.thread = master.controller_and_thread.thread
        if init:
            self.init(module)
        return module

    def init(self, module: Any) -> None:
        with self.qtbot.waitSignal(module.init_signal, timeout=INIT_TIMEOUT_MS) as blocker:
            module.init_hardware(True)
        assert blocker.args == [True], f"{module.title} did not initialise (see the log)"

    def close(self, module: Any) -> None:
        if module in self.created:
            self.created.remove(module)
        module.quit_fun()

    def close_all(self) -> None:
        errors = []
        for module in reversed(self.created):  # slaves (created after their master) first
            try:
                module.quit_fun()
            except Exception as exc:  # keep closing the others
                errors.append(f"{module.title}: {exc!r}")
        self.created.clear()
        assert not errors, errors


@pytest.fixture
def modules(qtbot: Any) -> Iterator[Modules]:
    """Factory of control modules, all closed (quit_fun) after the test, even on failure."""
    factory = Modules(qtbot)
    try:
        yield factory
    finally:
        factory.close_all()
        assert simulator.users() == 0, "a plugin kept the on-demand simulator"


@pytest.fixture
def statuses(qtbot: Any) -> Callable[[Any], list[str]]:
    """``statuses(module)`` starts collecting a module's status messages; returns the live list."""
    collected: dict[int, list[str]] = {}

    def watch(module: Any) -> list[str]:
        messages = collected.setdefault(id(module), [])
        module.status_sig.connect(messages.append)
        return messages

    return watch
