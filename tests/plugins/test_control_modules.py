"""The plugins driven by PyMoDAQ's own DAQ_Move / DAQ_Viewer control modules, each in its worker QThread.

All run against the on-demand simulator (the default host), which starts with
a 1 kHz, 0.5 V sine from asg0 on out1, looped back to in1.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from pmd_helpers import move_abs, set_setting, snap

from pymodaq_plugins_rplnoqt.hardware import simulator
from pymodaq_plugins_rplnoqt.hardware.board import Board
from rpl_noqt.analysis import fit_sine

pytestmark = pytest.mark.qt


def _scope_curves(dte):
    """(times, [curves]) of the scope's DataToExport, checking its PyMoDAQ 5 structure."""
    assert len(dte) == 1
    data = dte[0]
    assert data.dim.name == "Data1D" and data.units == "V"
    times = data.axes[0].get_data()
    assert data.axes[0].units == "s" and isinstance(times, np.ndarray) and times.shape == (2**14,)
    assert all(isinstance(c, np.ndarray) and c.shape == (2**14,) for c in data.data)
    return times, data.data


def _same(a, b) -> bool:
    return a == b if isinstance(b, str) else abs(a - b) <= 1e-3 * max(1.0, abs(b))


def _worker_thread(module):
    return module.controller_and_thread.thread.thread


def test_every_plugin_initialises_in_its_thread_and_reads_the_board_back(qtbot, modules) -> None:
    scope = modules.viewer("RplScope", "DAQ1D", "scope")
    iq = modules.viewer("RplIq", "DAQ0D", "iq")
    sampler = modules.viewer("RplSampler", "DAQ0D", "sampler")
    asg = modules.move("RplAsg", "asg")
    pid = modules.move("RplPid", "pid", axis="pid1")

    boards = {id(m.controller_and_thread.controller) for m in (scope, iq, sampler, asg, pid)}
    assert len(boards) == 1, "all plugins on one board share one controller (Board)"
    board = scope.controller_and_thread.controller
    assert isinstance(board, Board) and board.users == 5 and board.session.users == 5
    assert len({_worker_thread(m) for m in (scope, iq, sampler, asg, pid)}) == 5  # one QThread each

    # read back from the board: the demo state of the fresh simulator, not the plugins' defaults
    assert scope.settings["detector_settings", "input2"] == "asg0"
    assert scope.settings["detector_settings", "decimation"] == 64
    assert asg.settings["actuator_settings", "output_direct"] == "out1"
    assert pid.settings["actuator_settings", "input"] == "in1"  # FPGA reset routing
    assert iq.settings["detector_settings", "frequency"] == 0.0

    times, (ch1, ch2) = _scope_curves(snap(qtbot, scope))
    assert fit_sine(times, ch2).frequency == pytest.approx(1000.0, rel=1e-3)

    dte = snap(qtbot, sampler)
    assert dte[0].labels == ["in1", "in2"] and dte[0].dim.name == "Data0D"


def test_asg_move_shows_in_the_next_scope_grab(qtbot, modules, error_log) -> None:
    scope = modules.viewer("RplScope", "DAQ1D", "scope")
    asg = modules.move("RplAsg", "asg")
    for target in (2345.6, 7000.0, 1234.5):
        reached = move_abs(qtbot, asg, target)
        assert reached == pytest.approx(target, abs=0.12)  # the generator's resolution
        times, (ch1, _) = _scope_curves(snap(qtbot, scope))
        assert fit_sine(times, ch1).frequency == pytest.approx(reached, rel=1e-3)
    assert not error_log.messages()


def test_asg_settings_reach_the_board_and_bad_values_are_refused(qtbot, modules, statuses) -> None:
    scope = modules.viewer("RplScope", "DAQ1D", "scope")
    asg = modules.move("RplAsg", "asg")
    board = asg.controller_and_thread.controller
    set_setting(qtbot, asg, ("amplitude",), 0.3, until=lambda: abs(board.rp.asg0.amplitude - 0.3) < 1e-3)
    times, (ch1, _) = _scope_curves(snap(qtbot, scope))
    assert fit_sine(times, ch1).amplitude == pytest.approx(0.3, rel=0.02)

    set_setting(qtbot, asg, ("waveform",), "square", until=lambda: board.rp.asg0.waveform == "square")

    pid = modules.move("RplPid", "pid", axis="pid1")
    messages = statuses(pid)
    refused = "p = 5000.0 is out of range; allowed: -2048 to 2048"
    set_setting(qtbot, pid, ("p",), 5000.0,  # PyRPL would silently clip it to 2048
                until=lambda: any(refused in m for m in messages))
    assert board.rp.pid1.p == 0.0
    qtbot.waitUntil(lambda: pid.settings["actuator_settings", "p"] == 0.0)  # the tree shows the board again

    # (a refused scope setting is tested in test_hardware.py: PyMoDAQ 5.3.8 hands the plugin the UI's
    # Parameter object and the plugin reads its value later, so a quickly reverted value can arrive changed)


def test_pid_setpoint_move_is_followed_by_the_sampler(qtbot, modules) -> None:
    settings = {("input",): "in2", ("output_direct",): "out2", ("p",): 0.0, ("i",): -1000.0}
    pid = modules.move("RplPid", "pid", axis="pid0")
    sampler = modules.viewer("RplSampler", "DAQ0D", "sampler")
    board = pid.controller_and_thread.controller
    for path, value in settings.items():
        set_setting(qtbot, pid, path, value,
                    until=lambda name=path[0], v=value: _same(getattr(board.rp.pid0, name), v))
    board.rp.pid0.ival = 0.5
    set_setting(qtbot, pid, ("reset_integrator",), True, until=lambda: abs(board.rp.pid0.ival) < 0.05)
    for target in (0.3, -0.25):
        reached = move_abs(qtbot, pid, target)
        assert reached == pytest.approx(target, abs=2e-4)
        value = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            dte = snap(qtbot, sampler)
            value = float(dte[0].data[1][0])  # in2
            if abs(value - reached) < 0.005:
                break
        assert value == pytest.approx(reached, abs=0.005)


def test_iq_lock_in_reads_the_generator(qtbot, modules) -> None:
    iq = modules.viewer("RplIq", "DAQ0D", "iq")
    board = iq.controller_and_thread.controller
    for path, value in {("integration_time",): 0.05, ("quantities",): "R/phase", ("input",): "in1",
                        ("bandwidth",): 100.0}.items():
        iq.settings.child("detector_settings", *path).setValue(value)
    # settings reach the plugin in order: once the last one is on the board, all are applied
    set_setting(qtbot, iq, ("frequency",), 1000.0, until=lambda: abs(board.rp.iq0.frequency - 1000) < 0.1)
    dte = snap(qtbot, iq)
    r = dte.get_data_from_name("RplIq_R")
    phase = dte.get_data_from_name("RplIq_phase")
    assert r.units == "V" and phase.units == "deg"
    assert float(r.data[0][0]) == pytest.approx(0.5, rel=0.02)  # the 0.5 V demo sine looped back to in1
    assert -180 <= float(phase.data[0][0]) <= 180
    assert iq.settings["detector_settings", "bandwidth"] == pytest.approx(75.89, rel=0.01)  # FPGA's, read back
    iq.settings.child("detector_settings", "quantities").setValue("X/Y")
    for _ in range(20):  # the setting reaches the plugin's thread on its own path: bounded retries
        xy = snap(qtbot, iq)[0]
        if xy.labels == ["X", "Y"]:
            break
    assert xy.labels == ["X", "Y"]
    assert np.hypot(xy.data[0][0], xy.data[1][0]) == pytest.approx(0.5, rel=0.02)


def test_input_range_is_shared_by_the_plugins_of_a_board(qtbot, modules) -> None:
    scope = modules.viewer("RplScope", "DAQ1D", "scope")
    sampler = modules.viewer("RplSampler", "DAQ0D", "sampler")
    board = scope.controller_and_thread.controller
    set_setting(qtbot, scope, ("board", "in1_range"), "HV", until=lambda: board.input_range("in1") == "HV")
    times, (ch1, ch2) = _scope_curves(snap(qtbot, scope))
    assert fit_sine(times, ch1).amplitude == pytest.approx(10.0, rel=0.02)  # 0.5 V at the ADC, x20
    assert fit_sine(times, ch2).amplitude == pytest.approx(0.5, rel=0.02)  # asg0: no jumper
    snap(qtbot, sampler)  # each grab shows the board's ranges
    qtbot.waitUntil(lambda: sampler.settings["detector_settings", "board", "in1_range"] == "HV")
    later = modules.viewer("RplIq", "DAQ0D", "iq", settings={("board", "in1_range"): "LV"})
    assert later.settings["detector_settings", "board", "in1_range"] == "HV"  # read back from the board


def test_closing_one_plugin_leaves_the_others_working(qtbot, modules) -> None:
    scope = modules.viewer("RplScope", "DAQ1D", "scope")
    asg = modules.move("RplAsg", "asg")
    sampler = modules.viewer("RplSampler", "DAQ0D", "sampler")
    board = scope.controller_and_thread.controller
    assert board.users == 3
    modules.close(sampler)
    assert board.users == 2 and not board.session.closed
    reached = move_abs(qtbot, asg, 4321.0)
    modules.close(asg)
    assert board.users == 1
    times, (ch1, _) = _scope_curves(snap(qtbot, scope))
    assert fit_sine(times, ch1).frequency == pytest.approx(reached, rel=1e-3)
    session = board.session
    modules.close(scope)
    assert session.closed and simulator.users() == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("rpl-sim") and t.is_alive()]


def test_master_slave_share_the_controller_and_the_thread(qtbot, modules, error_log) -> None:
    asg0 = modules.move("RplAsg", "asg0", axis="asg0")
    asg1 = modules.move("RplAsg", "asg1", axis="asg1", master=asg0)
    pid = modules.move("RplPid", "pid", axis="pid2", master=asg0)  # any plugin of the package can be a slave
    scope = modules.viewer("RplScope", "DAQ1D", "scope")
    sampler = modules.viewer("RplSampler", "DAQ0D", "sampler", master=scope)

    board = asg0.controller_and_thread.controller
    assert asg1.controller_and_thread.controller is board and pid.controller_and_thread.controller is board
    assert sampler.controller_and_thread.controller is scope.controller_and_thread.controller is board
    assert _worker_thread(asg1) is _worker_thread(asg0) is _worker_thread(pid)
    assert _worker_thread(sampler) is _worker_thread(scope) is not _worker_thread(asg0)
    assert board.users == 5 and board.session.users == 5

    move_abs(qtbot, asg0, 1500.0)
    reached = move_abs(qtbot, asg1, 2500.0)
    assert board.rp.asg1.frequency == pytest.approx(reached) and board.rp.asg0.frequency == pytest.approx(1500, abs=0.12)

    modules.close(asg1)  # closing a slave leaves its master working
    qtbot.waitUntil(lambda: board.users == 4, timeout=5000)  # the slave's close runs in the shared thread
    assert move_abs(qtbot, asg0, 1800.0) == pytest.approx(1800.0, abs=0.12)
    modules.close(sampler)
    _scope_curves(snap(qtbot, scope))
    modules.close(pid)
    modules.close(asg0)  # a master's quit joins its thread: its hold and its slaves' are given back by then
    assert board.users == 1
    modules.close(scope)
    assert board.session.closed
    assert not error_log.messages()


def test_slave_without_a_package_master_is_refused(qtbot, modules) -> None:
    mock = modules.viewer("Mock", "DAQ0D", "mock")
    slave = modules.viewer("RplSampler", "DAQ0D", "sampler", master=mock, init=False)
    with qtbot.waitSignal(slave.init_signal, timeout=10_000) as blocker:
        slave.init_hardware(True)
    assert blocker.args == [False]
    assert simulator.users() == 0


def test_continuous_grab_and_stop(qtbot, modules) -> None:
    scope = modules.viewer("RplScope", "DAQ1D", "scope")
    frames = []
    scope.grab_done_signal.connect(frames.append)
    with qtbot.waitSignal(scope.grab_status, timeout=5000, check_params_cb=lambda on: on):
        scope.grab_data(True)
    qtbot.waitUntil(lambda: len(frames) >= 10, timeout=10_000)
    with qtbot.waitSignal(scope.grab_status, timeout=10_000, check_params_cb=lambda on: not on):
        scope.stop_grab()
    qtbot.wait(300)
    count = len(frames)
    qtbot.wait(300)
    assert len(frames) == count, "frames kept coming after stop"
    heads = {float(f[0].data[1][100]) for f in frames}
    assert len(heads) > 1, "every grab must be a fresh acquisition"
    _scope_curves(snap(qtbot, scope))  # a snap after a stop works


def test_trigger_timeout_stops_the_grab_with_a_clear_message(qtbot, modules, statuses) -> None:
    scope = modules.viewer("RplScope", "DAQ1D", "scope", settings={("trigger_timeout",): 0.3})
    messages = statuses(scope)
    # queued to the plugin's thread ahead of the grab: the 0.5 V sine never reaches 0.9 V
    board = scope.controller_and_thread.controller
    scope.settings.child("detector_settings", "trigger_source").setValue("ch1_positive_edge")
    set_setting(qtbot, scope, ("threshold",), 0.9, until=lambda: abs(board.rp.scope.threshold - 0.9) < 1e-3)
    with qtbot.waitSignal(scope.grab_status, timeout=10_000, check_params_cb=lambda on: not on):
        scope.grab_data(True)
    assert any("did not trigger within" in m for m in messages), messages
