"""Failure paths through PyMoDAQ's own control modules, each plugin in its worker QThread (issue 12).

* Quit while grabbing (the Dashboard's quit: ``quit_fun()`` with the grab
  still running) ends within 2 s, for each viewer alone, for a slave whose
  master is closed under it, and for that master; nothing is logged as an
  error and no thread is terminated.
* An out-of-range move posts the limit in the status bar and ends with
  ``move_done`` at the value the board holds; a refused setting says why and
  the tree shows the board's value, whatever was typed.
* A failed initialisation (unreachable host, closed port: emulated on
  loopback) posts its reason, without terminal colour codes, within the
  connect timeout, for actuators and viewers alike.
* A board that goes away stops a grab with its reason (once), ends a move
  with ``move_done``, and does not slow down closing.

Set ``RPLNOQT_CLOSE_TIMES=<file>`` to append each measured time-to-close to
that file (one JSON object a line), for the issue's before/after table.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pmd_helpers import UnreachablePort, free_port, move_abs, timed

from pymodaq_plugins_rplnoqt.hardware import simulator

pytestmark = [pytest.mark.qt, pytest.mark.timeout(90)]

CLOSE_WITHIN_S = 2.0
VIEWERS = {"RplScope": "DAQ1D", "RplIq": "DAQ0D", "RplSampler": "DAQ0D"}


class WarningLog(logging.Handler):
    """Warnings and errors logged while a test runs (a terminated thread is only a warning)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]


@pytest.fixture
def warnings_log() -> Iterator[WarningLog]:
    handler = WarningLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _record(scenario: str, seconds: float) -> None:
    path = os.environ.get("RPLNOQT_CLOSE_TIMES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"scenario": scenario, "seconds": round(seconds, 3)}) + "\n")


def _grab_continuously(qtbot: Any, viewer: Any, frames: int = 3) -> list[Any]:
    """Start a continuous grab and return the live list of frames once ``frames`` arrived."""
    received: list[Any] = []
    viewer.grab_done_signal.connect(received.append)
    with qtbot.waitSignal(viewer.grab_status, timeout=10_000, check_params_cb=lambda on: on):
        viewer.grab_data(True)
    qtbot.waitUntil(lambda: len(received) >= frames, timeout=10_000)
    return received


def _worker(module: Any) -> Any:
    return module.controller_and_thread.thread.thread


def _clean(log: WarningLog) -> list[str]:
    """What must not happen around a close: errors, a terminated thread, a grab after close."""
    return [m for m in log.messages()
            if m.startswith("ERROR") or m.startswith("CRITICAL") or "terminated" in m or "initialisation" in m]


# -- 1. quit while grabbing -------------------------------------------------------------------


@pytest.mark.parametrize("plugin", list(VIEWERS))
def test_quit_while_grabbing_ends_within_2_s(qtbot, modules, warnings_log, plugin) -> None:
    viewer = modules.viewer(plugin, VIEWERS[plugin], "viewer")
    board = viewer.controller_and_thread.controller
    thread = _worker(viewer)
    frames = _grab_continuously(qtbot, viewer)

    took = timed(lambda: modules.close(viewer))  # the Dashboard's quit: no stop_grab first
    _record(f"{plugin} alone: quit while grabbing", took)

    assert took < CLOSE_WITHIN_S, f"quit took {took:.2f} s"
    assert not thread.isRunning()
    assert board.users == 0 and board.session.closed and simulator.users() == 0
    count = len(frames)
    qtbot.wait(200)
    assert len(frames) == count
    assert not _clean(warnings_log), _clean(warnings_log)


#: (master, slave): each viewer is once a master closed under its grabbing slave, once that slave
PAIRS = [("RplScope", "RplIq"), ("RplIq", "RplSampler"), ("RplSampler", "RplScope")]


@pytest.mark.parametrize(("master_plugin", "slave_plugin"), PAIRS)
def test_master_closed_while_its_slave_grabs(qtbot, modules, warnings_log, statuses, master_plugin,
                                             slave_plugin) -> None:
    master = modules.viewer(master_plugin, VIEWERS[master_plugin], "master")
    slave = modules.viewer(slave_plugin, VIEWERS[slave_plugin], "slave", master=master)
    board = master.controller_and_thread.controller
    thread = _worker(master)
    assert _worker(slave) is thread and board.users == 2
    slave_status = statuses(slave)
    frames = _grab_continuously(qtbot, slave)

    took_master = timed(lambda: modules.close(master))
    _record(f"{master_plugin} master closed while its {slave_plugin} slave grabs", took_master)
    assert took_master < CLOSE_WITHIN_S, f"closing the master took {took_master:.2f} s"
    assert not thread.isRunning()
    assert board.users == 0 and board.session.closed  # the slave was closed with its master's thread

    # what the README says the slave does: its grab has stopped, it shows it is no longer initialised
    count = len(frames)
    qtbot.wait(300)
    assert len(frames) == count, "the slave kept grabbing after its master closed"
    qtbot.waitUntil(lambda: not slave.initialized_state, timeout=2000)
    assert any("closed with its master" in m for m in slave_status), slave_status

    took_slave = timed(lambda: modules.close(slave))
    _record(f"{slave_plugin} slave closed after its master", took_slave)
    assert took_slave < CLOSE_WITHIN_S, f"closing the slave took {took_slave:.2f} s"
    assert simulator.users() == 0
    assert not _clean(warnings_log), _clean(warnings_log)


# -- 2. out-of-range moves and settings -----------------------------------------------------------

#: (plugin, axis, target, text naming the limit); the board's value must not change
REFUSED_MOVES = [
    ("RplAsg", "asg0", -1000.0, "allowed: 0 to 6.25e+07 Hz"),
    ("RplAsg", "asg0", 70e6, "allowed: 0 to 6.25e+07 Hz"),
    ("RplAsg", "asg1", float("inf"), "not a finite number"),
    ("RplPid", "pid0", 1.5, "allowed: -1 to 0.999878 V"),
    ("RplPid", "pid1", -7.0, "allowed: -1 to 0.999878 V"),
]


def _board_axis(board: Any, axis: str) -> float:
    module = getattr(board.rp, axis)
    return float(module.frequency if axis.startswith("asg") else module.setpoint)


@pytest.mark.parametrize(("plugin", "axis", "target", "limit"), REFUSED_MOVES)
def test_out_of_range_move_names_the_limit_and_ends_at_the_board_value(qtbot, modules, statuses, error_log,
                                                                       plugin, axis, target, limit) -> None:
    move = modules.move(plugin, "move", axis=axis)
    board = move.controller_and_thread.controller
    valid = 1234.5 if plugin == "RplAsg" else 0.25
    before = move_abs(qtbot, move, valid)
    messages = statuses(move)

    start = time.monotonic()
    reached = move_abs(qtbot, move, target, timeout=5000)  # move_done comes: nothing waits for good
    assert time.monotonic() - start < 2.0
    assert reached == pytest.approx(before) == pytest.approx(_board_axis(board, axis), rel=1e-9, abs=1e-9)
    refusals = [m for m in messages if "out of range" in m or "not a finite number" in m]
    assert refusals and limit in refusals[-1] and f"{axis} stays at" in refusals[-1], messages
    assert move_abs(qtbot, move, valid * 2) == pytest.approx(valid * 2, abs=0.12)  # and it still moves
    assert not error_log.messages(), error_log.messages()


#: (plugin, daq type, setting, typed value, text of the refusal): settings whose spin box has no
#: limits, so the value reaches the plugin as typed and the board refuses it
REFUSED_SETTINGS = [
    ("RplPid", "DAQ_Move", "p", 5000.0, "p = 5000.0 is out of range; allowed: -2048 to 2048"),
    ("RplPid", "DAQ_Move", "i", -1e6, "i = -1000000.0 Hz is out of range; allowed: -38856.2 to 38856.2 Hz"),
    ("RplIq", "DAQ0D", "amplitude", 2.0, "amplitude = 2.0 V is out of range; allowed: -1 to 0.999992 V"),
    ("RplScope", "DAQ1D", "threshold", 5.0, "threshold = 5.0 V is out of range for the trigger input"),
    ("RplScope", "DAQ1D", "trigger_delay", 100.0, "trigger_delay = 100.0 s is out of range; allowed: -10 to 10 s"),
]

#: (plugin, daq type, setting, typed value, the board's value as read back): typed beyond the spin
#: box's limits, which clip it in the UI while the change travels to the plugin
CLIPPED_SETTINGS = [
    ("RplIq", "DAQ0D", "bandwidth", 1e9, lambda rp: float(rp.iq0.bandwidth[0])),
    ("RplIq", "DAQ0D", "frequency", 70e6, lambda rp: float(rp.iq0.frequency)),
    ("RplAsg", "DAQ_Move", "offset", 2.0, lambda rp: float(rp.asg0.offset)),
    ("RplAsg", "DAQ_Move", "amplitude", -0.5, lambda rp: float(rp.asg0.amplitude)),
]


def _module(modules: Any, plugin: str, daq_type: str) -> tuple[Any, str]:
    if daq_type == "DAQ_Move":
        return modules.move(plugin, "move"), "actuator_settings"
    return modules.viewer(plugin, daq_type, "viewer"), "detector_settings"


@pytest.mark.parametrize(("plugin", "daq_type", "name", "typed", "refusal"), REFUSED_SETTINGS)
def test_refused_setting_says_why_and_the_tree_shows_the_board(qtbot, modules, statuses, error_log, plugin,
                                                               daq_type, name, typed, refusal) -> None:
    module, group = _module(modules, plugin, daq_type)
    messages = statuses(module)
    param = module.settings.child(group, name)
    shown = param.value()
    param.setValue(typed)
    assert param.value() == typed  # the UI holds what was typed ...
    qtbot.waitUntil(lambda: any(refusal in m for m in messages), timeout=5000)  # ... the status bar says why ...
    qtbot.waitUntil(lambda: param.value() == pytest.approx(shown), timeout=5000)  # ... and the board's value is back
    qtbot.wait(200)
    assert param.value() == pytest.approx(shown)
    assert not error_log.messages(), error_log.messages()


@pytest.mark.parametrize(("plugin", "daq_type", "name", "typed", "board_value"), CLIPPED_SETTINGS)
def test_a_value_beyond_the_spin_box_ends_as_the_board_took_it(qtbot, modules, error_log, plugin, daq_type, name,
                                                               typed, board_value) -> None:
    module, group = _module(modules, plugin, daq_type)
    board = module.controller_and_thread.controller
    param = module.settings.child(group, name)
    param.setValue(typed)
    # the spin box clips what was typed, and the plugin may get the typed or the clipped value
    # (PyMoDAQ hands it the live parameter): either way the tree must end at the board's value
    qtbot.wait(100)
    qtbot.waitUntil(lambda: param.value() == board_value(board.rp), timeout=5000)
    qtbot.wait(300)  # nothing queued undoes it
    assert param.value() == board_value(board.rp) != typed
    assert not error_log.messages(), error_log.messages()


#: (plugin, daq type, setting, typed, board's value as read back)
ROUNDED_SETTINGS = [
    ("RplIq", "DAQ0D", "bandwidth", 1234.0, lambda rp: float(rp.iq0.bandwidth[0])),
    ("RplIq", "DAQ0D", "frequency", 1234.5678, lambda rp: float(rp.iq0.frequency)),
    ("RplAsg", "DAQ_Move", "offset", 0.123456, lambda rp: float(rp.asg0.offset)),
]


@pytest.mark.parametrize(("plugin", "daq_type", "name", "typed", "board_value"), ROUNDED_SETTINGS)
def test_the_tree_ends_at_the_value_the_board_took(qtbot, modules, plugin, daq_type, name, typed,
                                                   board_value) -> None:
    module, group = _module(modules, plugin, daq_type)
    board = module.controller_and_thread.controller
    param = module.settings.child(group, name)
    param.setValue(typed)
    qtbot.waitUntil(lambda: param.value() != typed, timeout=5000)
    assert param.value() == board_value(board.rp) != typed


@pytest.mark.parametrize(("name", "values"), [("bandwidth", (1e9, 500.0, 2e9)), ("frequency", (70e6, 2e3, -5.0)),
                                              ("bandwidth", (300.0, 1e9))])
def test_quick_edits_end_with_the_tree_showing_the_board(qtbot, modules, name, values) -> None:
    iq = modules.viewer("RplIq", "DAQ0D", "iq")
    board = iq.controller_and_thread.controller
    param = iq.settings.child("detector_settings", name)
    for value in values:  # typed faster than the plugin's thread applies them
        param.setValue(value)
    read = (lambda: float(board.rp.iq0.bandwidth[0])) if name == "bandwidth" else (lambda: board.rp.iq0.frequency)
    qtbot.waitUntil(lambda: param.value() == read(), timeout=5000)
    qtbot.wait(300)  # nothing queued undoes it
    assert param.value() == read()


# -- 3. failed initialisation ----------------------------------------------------------------------

PLUGINS = [("RplAsg", "DAQ_Move"), ("RplPid", "DAQ_Move"), ("RplScope", "DAQ1D"), ("RplIq", "DAQ0D"),
           ("RplSampler", "DAQ0D")]
CONNECT_TIMEOUT_S = 1.0


def _init_and_time(qtbot: Any, modules: Any, plugin: str, daq_type: str, port: int) -> tuple[Any, list[str], float]:
    board = {("board", "host"): "127.0.0.1", ("board", "port"): port, ("board", "ssh"): False,
             ("board", "connect_timeout"): CONNECT_TIMEOUT_S}
    if daq_type == "DAQ_Move":
        module = modules.move(plugin, "move", init=False, settings=board)
    else:
        module = modules.viewer(plugin, daq_type, "viewer", init=False, settings=board)
    messages: list[str] = []
    module.status_sig.connect(messages.append)
    start = time.monotonic()
    with qtbot.waitSignal(module.init_signal, timeout=10_000) as blocker:
        module.init_hardware(True)
    took = time.monotonic() - start
    assert blocker.args == [False]
    qtbot.waitUntil(lambda: bool(messages) and messages[-1].startswith("not initialised"), timeout=2000)
    return module, messages, took


@pytest.mark.parametrize(("plugin", "daq_type"), PLUGINS)
def test_unreachable_host_fails_init_within_the_connect_timeout_with_the_reason(qtbot, modules, plugin,
                                                                                daq_type) -> None:
    with UnreachablePort() as port:
        module, messages, took = _init_and_time(qtbot, modules, plugin, daq_type, port)
    assert CONNECT_TIMEOUT_S * 0.9 <= took < CONNECT_TIMEOUT_S + 1.0
    reason = messages[-1]  # the status bar's last line
    assert f"127.0.0.1:{port}" in reason and "timed out" in reason, messages
    assert "\x1b" not in "".join(messages)
    assert not module.initialized_state and simulator.users() == 0


@pytest.mark.parametrize(("plugin", "daq_type"), PLUGINS)
def test_closed_port_fails_init_at_once_with_the_reason(qtbot, modules, plugin, daq_type) -> None:
    port = free_port()
    module, messages, took = _init_and_time(qtbot, modules, plugin, daq_type, port)
    assert took < CONNECT_TIMEOUT_S + 1.0
    assert f"127.0.0.1:{port}" in messages[-1] and "refused" in messages[-1].lower(), messages


def test_a_failure_with_colour_codes_reaches_the_status_bar_as_plain_text(qtbot, modules, monkeypatch) -> None:
    from pymodaq_plugins_rplnoqt.hardware import board as board_module

    def refuse(settings: Any) -> Any:  # what PyRPL's SSH errors look like (coloured by its logger)
        raise ConnectionError("\x1b[31mAuthentication failed\x1b[0m for \x1b[1mroot@127.0.0.1\x1b[0m")

    monkeypatch.setattr(board_module.Board, "open", staticmethod(refuse))
    module = modules.viewer("RplSampler", "DAQ0D", "viewer", init=False)
    messages: list[str] = []
    module.status_sig.connect(messages.append)
    with qtbot.waitSignal(module.init_signal, timeout=10_000) as blocker:
        module.init_hardware(True)
    assert blocker.args == [False]
    qtbot.waitUntil(lambda: bool(messages) and messages[-1].startswith("not initialised"), timeout=2000)
    assert messages[-1] == "not initialised: Authentication failed for root@127.0.0.1"
    assert "\x1b" not in "".join(messages)


def test_a_plugin_initialises_after_a_failed_init(qtbot, modules) -> None:
    """Nothing is left behind by a failure: the same module initialises once the host is right."""
    module, _, _ = _init_and_time(qtbot, modules, "RplSampler", "DAQ0D", free_port())
    failed_thread = _worker(module)
    qtbot.waitUntil(lambda: not failed_thread.isRunning(), timeout=2000)  # no worker left to answer the next init
    module.settings.child("detector_settings", "board", "host").setValue("simulator")
    modules.init(module)
    board = module.controller_and_thread.controller
    assert module.initialized_state and board.users == 1


# -- a board that goes away while in use -------------------------------------------------------------


@pytest.fixture
def own_board() -> Iterator[Any]:
    """A simulator of the test's own (not the shared on-demand one), so the test can stop it."""
    from rpl_noqt.sim import Simulator

    sim = Simulator()
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def _on(sim: Any) -> dict[tuple[str, ...], Any]:
    return {("board", "host"): sim.host, ("board", "port"): sim.port, ("board", "ssh"): False,
            ("board", "io_timeout"): 1.0}


def test_board_gone_during_a_grab_stops_it_with_the_reason_and_close_is_quick(qtbot, modules, own_board,
                                                                             statuses, error_log) -> None:
    viewer = modules.viewer("RplSampler", "DAQ0D", "viewer", settings=_on(own_board))
    messages = statuses(viewer)
    _grab_continuously(qtbot, viewer)
    with qtbot.waitSignal(viewer.grab_status, timeout=5000, check_params_cb=lambda on: not on):
        own_board.stop()
    failures = [m for m in messages if m.startswith("grab failed:")]
    assert len(failures) == 1 and f"{own_board.host}:{own_board.port}" in failures[0], messages
    took = timed(lambda: modules.close(viewer))
    _record("RplSampler alone: close after its board went away", took)
    assert took < CLOSE_WITHIN_S
    assert not [m for m in error_log.messages() if "rplnoqt" in m or "daq_viewer" in m], error_log.messages()


def test_board_gone_during_a_move_ends_it_with_the_reason(qtbot, modules, own_board, statuses) -> None:
    move = modules.move("RplAsg", "move", axis="asg0", settings=_on(own_board))
    before = move_abs(qtbot, move, 1500.0)
    messages = statuses(move)
    own_board.stop()
    reached = move_abs(qtbot, move, 2500.0, timeout=5000)
    assert reached == pytest.approx(before)  # the last value read: the board never took 2500
    assert any("move to 2500 Hz failed" in m and f"{own_board.host}:{own_board.port}" in m for m in messages), \
        messages
    assert timed(lambda: modules.close(move)) < CLOSE_WITHIN_S
