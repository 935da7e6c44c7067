"""The plugins' hardware layer (no PyMoDAQ control modules): sharing, validation, scaling, lock-in."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from pymodaq_plugins_rplnoqt.hardware import options, simulator
from pymodaq_plugins_rplnoqt.hardware.asg import AsgDriver
from pymodaq_plugins_rplnoqt.hardware.board import Board, BoardSettings
from pymodaq_plugins_rplnoqt.hardware.iq import IqDriver, polar
from pymodaq_plugins_rplnoqt.hardware.options import SettingError
from pymodaq_plugins_rplnoqt.hardware.pid import PidDriver
from pymodaq_plugins_rplnoqt.hardware.sampler import SamplerDriver
from pymodaq_plugins_rplnoqt.hardware.scope import ScopeDriver
from rpl_noqt.analysis import fit_sine


def _sim_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("rpl-sim") and t.is_alive()]


@pytest.fixture
def board():
    """A Board on the on-demand simulator (demo signals on), released after the test."""
    b = Board.open(BoardSettings())
    try:
        yield b
    finally:
        while b.users:
            b.release()
    assert simulator.users() == 0


def test_option_lists_match_pyrpl(board: Board) -> None:
    from pyrpl.hardware_modules.dsp import DSP_INPUTS

    rp = board.rp
    assert options.DSP_SIGNALS == tuple(DSP_INPUTS)
    assert set(options.DSP_SIGNALS) <= set(rp.scope.inputs)
    assert options.SCOPE_TRIGGER_SOURCES == tuple(s for s in rp.scope.trigger_sources if s != "off")
    assert options.SCOPE_DECIMATIONS == tuple(rp.scope.decimations)
    assert np.allclose(options.SCOPE_DURATIONS, rp.scope.durations, rtol=1e-12)
    assert options.ASG_WAVEFORMS == tuple(rp.asg0.waveforms)
    assert options.OUTPUT_DIRECTS == tuple(rp.asg0.output_directs)
    assert rp.scope.data_length == options.SCOPE_SAMPLES


def test_plugins_on_one_board_share_one_board_and_session() -> None:
    first = Board.open(BoardSettings())
    second = Board.open(BoardSettings(in1_range="HV"))  # an open board keeps its ranges
    try:
        assert second is first
        assert first.users == 2 and first.session.users == 2
        assert first.attach() is first  # a PyMoDAQ slave joins its master's controller
        assert first.session.users == 3 and simulator.users() == 3
        assert first.input_range("in1") == "LV"
        session = first.session
        first.release()
        first.release()
        assert not session.closed and first.rp.asg0.frequency > 0  # the last user still works
    finally:
        first.release()
    assert session.closed and first.users == 0
    assert simulator.users() == 0 and _sim_threads() == []  # the simulator stopped with its last user
    first.release()  # one release too many: ignored, not a crash


def test_a_new_board_gets_a_new_simulator() -> None:
    board = Board.open(BoardSettings())
    port = board.session.port
    board.release()
    again = Board.open(BoardSettings())
    try:
        assert again is not board and again.session.port != port or not again.session.closed
        assert again.rp.asg0.output_direct == "out1"  # demo signals on the fresh simulator
    finally:
        again.release()


def test_explicit_host_shares_the_session_and_refuses_other_settings(sim) -> None:
    import rpl_noqt
    from rpl_noqt.session import SessionConfigError

    settings = BoardSettings(host=sim.host, port=sim.port, ssh=False)
    board = Board.open(settings)
    try:
        assert Board.open(settings) is board and board.users == 2
        assert not board.on_demand and simulator.users() == 0
        with pytest.raises(SessionConfigError, match="ssh=False .open. vs ssh=True .asked."):
            Board.open(BoardSettings(host=sim.host, port=sim.port, ssh=True))
        assert board.users == 2 and board.session.users == 2  # the refused open left nothing behind
        with rpl_noqt.connect(sim.host, sim.port, ssh=False) as session:
            assert session is board.session  # plain rpl_noqt users share it too
    finally:
        board.release()
        board.release()
    assert board.session.closed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"host": ""}, "host = '' is not allowed"),
    ({"port": 0}, "port = 0 is not allowed; allowed: an integer from 1 to 65535"),
    ({"in1_range": "MV"}, "in1_range = 'MV' is not allowed; allowed values: 'LV', 'HV'"),
    ({"ssh": "yes"}, "ssh = 'yes' is not allowed; allowed values: True, False"),
])
def test_bad_board_settings_name_value_and_allowed_values(kwargs, message) -> None:
    with pytest.raises(SettingError, match=message):
        BoardSettings(**kwargs)
    assert simulator.users() == 0


def test_bad_settings_are_refused_before_anything_reaches_the_board(board: Board) -> None:
    rp = board.rp
    scope, pid, asg = ScopeDriver(board), PidDriver(board, "pid0"), AsgDriver(board, "asg0")
    before = (rp.scope.decimation, rp.scope.input1, rp.pid0.p, rp.asg0.frequency, rp.asg0.waveform)

    with pytest.raises(SettingError, match=r"decimation = 3 is not allowed; allowed values: 1, 2, 4, .*65536"):
        scope.configure(decimation=3)
    with pytest.raises(SettingError, match=r"input1 = 'in3' is not allowed; allowed values: 'in1', 'in2'"):
        scope.configure(input1="in3", decimation=8)  # nothing of a refused change is applied
    with pytest.raises(SettingError, match=r"duration = 0.5 is not allowed; allowed values: 0.000131072, "):
        scope.configure(duration=0.5)
    with pytest.raises(SettingError, match=r"trigger_source = 'off' is not allowed"):
        scope.configure(trigger_source="off")
    with pytest.raises(SettingError, match=r"p = 5000 is out of range; allowed: -2048 to 2048"):
        pid.configure(p=5000)
    with pytest.raises(SettingError, match=r"frequency = 1000000000.0 Hz is out of range; allowed: 0 to 6.25e\+07 Hz"):
        asg.set_frequency(1e9)
    with pytest.raises(SettingError, match=r"waveform = 'triangle' is not allowed; allowed values: 'sin'"):
        asg.configure(waveform="triangle")
    with pytest.raises(SettingError, match=r"sampler signal = 'out3' is not allowed"):
        SamplerDriver(board).read(["in1", "out3"])
    with pytest.raises(SettingError, match=r"unknown scope setting\(s\) \['gain'\]"):
        scope.configure(gain=2)

    assert (rp.scope.decimation, rp.scope.input1, rp.pid0.p, rp.asg0.frequency, rp.asg0.waveform) == before


def test_scope_acquisitions_are_fresh_and_have_a_time_axis(board: Board) -> None:
    scope, asg = ScopeDriver(board), AsgDriver(board, "asg0")
    settings = scope.configure(decimation=64, trigger_source="immediately", input1="in1", input2="asg0")
    assert settings["duration"] == pytest.approx(2**14 * 8e-9 * 64)
    for frequency in (1500.0, 3100.0):
        reached = asg.set_frequency(frequency)
        trace = scope.acquire(timeout=2.0)  # the next grab already shows the new frequency
        assert isinstance(trace.ch1, np.ndarray) and trace.ch1.shape == (options.SCOPE_SAMPLES,)
        assert trace.times[1] - trace.times[0] == pytest.approx(64 * 8e-9)
        fit = fit_sine(trace.times, trace.ch1)
        assert fit.frequency == pytest.approx(reached, rel=1e-3)
        assert fit.amplitude == pytest.approx(0.5, rel=0.02)


def test_scope_edge_trigger_and_timeout(board: Board) -> None:
    scope = ScopeDriver(board)
    scope.configure(input1="in1", trigger_source="ch1_positive_edge", threshold=0.2, hysteresis=0.01,
                    decimation=64)
    trace = scope.acquire(timeout=2.0)
    centre = np.argmin(np.abs(trace.times))
    assert trace.times[0] < 0 < trace.times[-1]
    assert trace.ch1[centre] == pytest.approx(0.2, abs=0.03)  # the curve crosses the level at t=0
    assert trace.ch1[centre + 20] > trace.ch1[centre - 20]  # rising
    scope.configure(threshold=0.9)  # above the 0.5 V sine: never triggers
    with pytest.raises(TimeoutError, match=r"did not trigger within .* \(trigger source 'ch1_positive_edge'\)"):
        scope.acquire(timeout=0.2)


def test_hv_range_reports_volts_at_the_connector(board: Board) -> None:
    scope, pid, sampler = ScopeDriver(board), PidDriver(board, "pid1"), SamplerDriver(board)
    scope.configure(input1="in1", input2="asg0", trigger_source="immediately", decimation=64)
    board.set_input_range("in1", "HV")
    assert board.scale("in1") == 20.0 and board.scale("in2") == 1.0 and board.scale("asg0") == 1.0
    trace = scope.acquire(timeout=2.0)
    assert fit_sine(trace.times, trace.ch1).amplitude == pytest.approx(10.0, rel=0.02)  # 0.5 V at the ADC
    assert fit_sine(trace.times, trace.ch2).amplitude == pytest.approx(0.5, rel=0.02)  # the ASG itself
    assert abs(sampler.read(["in1"])["in1"]) <= 10.5
    pid.configure(input="in1", output_direct="off", p=0.0, i=0.0)
    assert pid.set_setpoint(4.0) == pytest.approx(4.0, abs=0.003)
    assert board.rp.pid1.setpoint == pytest.approx(0.2, abs=2e-4)  # the register holds 1/20
    with pytest.raises(SettingError, match=r"setpoint = 25 V is out of range; allowed: -20 to 19.99"):
        pid.set_setpoint(25)
    settings = scope.configure(trigger_source="ch1_positive_edge", threshold=5.0, hysteresis=0.2)
    assert settings["threshold"] == pytest.approx(5.0, abs=0.003) and board.rp.scope.threshold == pytest.approx(0.25)
    with pytest.raises(SettingError, match=r"threshold = 1.5 V is out of range for the trigger input; allowed: -1 to 1"):
        scope.configure(input2="in2", trigger_source="ch2_positive_edge", threshold=1.5)
    assert board.rp.scope.trigger_source == "ch1_positive_edge"  # the refused change was not applied
    with pytest.raises(SettingError, match=r"in2_range = 'X' is not allowed"):
        board.set_input_range("in2", "X")


def test_iq_lock_in_measures_amplitude_and_phase_of_a_tone(board: Board) -> None:
    model = simulator.simulator().model
    model.set_loopback(2, gain=0.0)
    iq = IqDriver(board, "iq1")
    settings = iq.configure(input="in2", frequency=20e3, bandwidth=500.0, amplitude=0.0, output_direct="off")
    assert settings["bandwidth"] == pytest.approx(607.1, rel=0.01)  # the FPGA's nearest filter, read back
    model.inject_tone(2, settings["frequency"], 0.2, phase_deg=40.0, reference="iq1")
    amplitude, phase = polar(iq.measure(0.01))
    pipeline = 360 * settings["frequency"] * 3 * 8e-9
    assert amplitude == pytest.approx(0.2, rel=0.01)
    assert phase == pytest.approx(40.0 - pipeline, abs=0.5)
    board.set_input_range("in2", "HV")
    assert abs(iq.measure(0.005)) == pytest.approx(4.0, rel=0.01)


def test_pid_lock_is_followed_by_the_sampler(board: Board) -> None:
    pid, sampler = PidDriver(board, "pid0"), SamplerDriver(board)
    pid.configure(input="in2", output_direct="out2", p=0.0, i=-1000.0)
    pid.reset_integrator()
    for setpoint in (0.3, -0.2):
        reached = pid.set_setpoint(setpoint)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and abs(sampler.read(["in2"])["in2"] - reached) > 0.005:
            time.sleep(0.01)
        assert sampler.read(["in2"])["in2"] == pytest.approx(reached, abs=0.005)
    settings = pid.read_settings()
    assert settings["i"] == pytest.approx(-1000.0, rel=1e-3) and settings["input"] == "in2"
    assert not math.isnan(settings["ival"])


@pytest.mark.parametrize(("module", "name", "declared_max"), [("asg0", "offset", 1.0), ("asg1", "offset", 1.0),
                                                              ("pid1", "ival", 4.0)])
def test_a_value_the_plugin_accepts_is_never_clamped_on_the_board(board: Board, module: str, name: str,
                                                                   declared_max: float) -> None:
    """The plugins' limits are what the register holds, not a declared maximum it cannot hold
    (upstream declares asg offset <= 1 V and pid ival <= 4 V; the registers stop one code short)."""
    from pymodaq_plugins_rplnoqt.hardware.limits import check_register, register_limits

    rp_module = getattr(board.rp, module)
    low, high = register_limits(rp_module, name)
    assert float(getattr(type(rp_module), name).max) == declared_max and low < high < declared_max
    with pytest.raises(SettingError, match=f"{name} = {declared_max} is out of range"):
        check_register(name, declared_max, rp_module, name)
    for value in (high, low):
        setattr(rp_module, name, check_register(name, value, rp_module, name))
        assert getattr(rp_module, name) == pytest.approx(value, abs=1e-9)  # taken as is: not clamped, not wrapped


def test_scope_grab_takes_the_next_run_when_settings_change_under_it(board: Board) -> None:
    """Another program changes the scope while a grab waits: PyRPL restarts the run (asyncio's
    CancelledError, a BaseException); the grab takes the restarted run instead of escaping."""
    scope = ScopeDriver(board)
    scope.configure(input1="in1", trigger_source="ch1_positive_edge", threshold=0.9, decimation=64)  # never
    elsewhere = board.session.rp.scope

    def change() -> None:
        time.sleep(0.3)
        elsewhere.trigger_source = "immediately"  # a settings change restarts the waiting run

    changer = threading.Thread(target=change)
    changer.start()
    t0 = time.monotonic()
    trace = scope.acquire(timeout=10.0)
    changer.join(10)
    assert time.monotonic() - t0 < 5.0
    assert trace.ch1.shape == trace.times.shape and trace.ch1.size > 0
