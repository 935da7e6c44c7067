"""Physics through unmodified PyRPL: its hardware modules drive the simulator
over a real MonitorClient, exactly as they would drive a board."""

from __future__ import annotations

import time

import numpy as np
import pytest


def fit_sine(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Least-squares fit ``A sin(2 pi f t + phi) + c``; returns (f, A, phi, c)."""
    t = np.asarray(t, float)
    y = np.asarray(y, float)
    dt = t[1] - t[0]
    spec = np.abs(np.fft.rfft((y - y.mean()) * np.hanning(len(y))))
    k = int(np.argmax(spec[1:])) + 1
    if 1 <= k < len(spec) - 1:  # parabolic interpolation of the peak
        a, b, c = np.log(spec[k - 1 : k + 2] + 1e-30)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    f = k / (len(y) * dt)
    w = 2 * np.pi * f * t
    basis = np.column_stack([np.sin(w), np.cos(w), np.ones_like(t)])
    (a, b, c), *_ = np.linalg.lstsq(basis, y, rcond=None)
    for _ in range(30):  # joint Gauss-Newton on (a, b, c, f)
        w = 2 * np.pi * f * t
        s, co = np.sin(w), np.cos(w)
        resid = y - (a * s + b * co + c)
        jac = np.column_stack([s, co, np.ones_like(t), 2 * np.pi * t * (a * co - b * s)])
        (da, db, dc, df), *_ = np.linalg.lstsq(jac, resid, rcond=None)
        a, b, c, f = a + da, b + db, c + dc, f + df
        if abs(df) < 1e-12 * abs(f):
            break
    w = 2 * np.pi * f * t
    basis = np.column_stack([np.sin(w), np.cos(w), np.ones_like(t)])
    (a, b, c), *_ = np.linalg.lstsq(basis, y, rcond=None)
    return f, float(np.hypot(a, b)), float(np.arctan2(b, a)), float(c)


def test_fit_sine_helper_recovers_known_values():
    t = np.arange(4000) * 1e-5
    f, a, phi, c = fit_sine(t, 0.3 * np.sin(2 * np.pi * 123.4 * t + 0.5) - 0.1)
    assert f == pytest.approx(123.4, rel=1e-6)
    assert (a, phi, c) == pytest.approx((0.3, 0.5, -0.1), abs=1e-6)


def test_1khz_sine_looped_back_on_the_scope(p, sim):
    rp = p.rp
    sim.model.set_loopback(1, gain=1.0, noise=2e-3)
    rp.asg0.setup(waveform="sin", frequency=1e3, amplitude=0.5, offset=0.0,
                  trigger_source="immediately", output_direct="out1")
    s = rp.scope
    s.setup(input1="in1", input2="asg0", duration=0.03, trigger_source="immediately",
            average=True, rolling_mode=False)
    ch1, ch2 = s.single()
    times = s.times
    f, amplitude, _, offset = fit_sine(times, ch1)
    assert f == pytest.approx(1e3, rel=1e-3)
    assert amplitude == pytest.approx(0.5, rel=0.02)
    assert abs(offset) < 5e-3
    f2, amplitude2, *_ = fit_sine(times, ch2)  # the generator itself, no noise
    assert f2 == pytest.approx(1e3, rel=1e-3)
    assert amplitude2 == pytest.approx(0.5, rel=0.01)


def test_loopback_gain_offset_and_delay_are_seen_on_the_scope(p, sim):
    rp = p.rp
    sim.model.set_loopback(1, gain=0.5, offset=0.1, delay=50e-6)
    rp.asg0.setup(waveform="sin", frequency=2e3, amplitude=0.8, trigger_source="immediately", output_direct="out1")
    s = rp.scope
    s.setup(input1="in1", input2="asg0", duration=0.004, trigger_source="immediately", average=False, rolling_mode=False)
    ch1, ch2 = s.single()
    f1, a1, phi1, c1 = fit_sine(s.times, ch1)
    f2, a2, phi2, c2 = fit_sine(s.times, ch2)
    assert a1 / a2 == pytest.approx(0.5, rel=0.01)
    assert c1 == pytest.approx(0.1, abs=2e-3)
    lag = ((phi2 - phi1) % (2 * np.pi)) / (2 * np.pi * 2e3)
    assert lag == pytest.approx(50e-6, abs=2e-6)


def test_scope_edge_trigger_with_threshold_and_hysteresis(p, sim):
    rp = p.rp
    rp.asg0.setup(waveform="sin", frequency=1e3, amplitude=0.5, trigger_source="immediately", output_direct="out1")
    s = rp.scope
    for source, sign in (("ch1_positive_edge", 1), ("ch1_negative_edge", -1)):
        s.setup(input1="in1", input2="asg0", duration=0.004, trigger_source=source, threshold=0.2,
                hysteresis=0.02, trigger_delay=0.0, average=False, rolling_mode=False)
        ch1, _ = s.single()
        i0 = int(np.argmin(np.abs(s.times)))
        assert ch1[i0] == pytest.approx(0.2, abs=0.01)
        assert sign * (ch1[i0 + 5] - ch1[i0 - 5]) > 0
        assert s.trigger_timestamp <= s.current_timestamp


def test_scope_pretrigger_and_trigger_delay(p, sim):
    rp = p.rp
    rp.asg0.setup(waveform="sin", frequency=500.0, amplitude=0.5, trigger_source="immediately", output_direct="out1")
    s = rp.scope
    s.setup(input1="in1", duration=0.008, trigger_source="ch1_positive_edge", threshold=0.0, hysteresis=0.01,
            trigger_delay=0.002, average=False, rolling_mode=False)
    ch1, _ = s.single()
    times = s.times
    assert times[0] < 0 < times[-1]  # pre-trigger data is part of the trace
    i0 = int(np.argmin(np.abs(times)))
    assert ch1[i0] == pytest.approx(0.0, abs=0.01)
    assert ch1[i0 + 10] > ch1[i0 - 10]


def test_pid_through_the_loopback_settles_to_its_setpoint(p, sim):
    rp = p.rp
    sim.model.set_loopback(1, gain=1.0, offset=0.1, noise=1e-3)
    pid = rp.pid0
    pid.setup(input="in1", output_direct="out1", setpoint=0.3, p=0.1, i=-1000.0, ival=0.0,
              inputfilter=[0, 0, 0, 0], min_voltage=-1.0, max_voltage=1.0)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and abs(rp.sampler.in1 - 0.3) > 0.02:
        time.sleep(0.01)
    time.sleep(0.05)
    mean, std, _, _ = rp.sampler.stats("in1", t=0.05)
    assert mean == pytest.approx(0.3, abs=3e-3)
    assert std == pytest.approx(1e-3, rel=0.5)
    assert pid.ival == pytest.approx(0.2, abs=5e-3)  # the cable adds the other 0.1 V


def test_pid_integrator_winds_up_without_feedback(p, sim):
    rp = p.rp
    sim.model.set_loopback(1, gain=0.0, offset=0.2)  # cable unplugged: constant input
    pid = rp.pid1
    t0 = sim.model.clock.now()  # model time; the integrator starts from 0 after this
    pid.setup(input="in1", output_direct="off", setpoint=0.0, p=0.0, i=100.0, ival=0.0)
    time.sleep(0.1)
    ival = pid.ival
    elapsed = sim.model.clock.now() - t0  # at least the time it integrated, however slow the machine
    # d ival / dt = 2 pi * 100 Hz * 0.2 V (error = input - setpoint, positive gain -> growing)
    assert 0 < ival <= 2 * np.pi * 100 * 0.2 * elapsed
    time.sleep(0.5)
    assert pid.ival == pytest.approx(4.0, abs=0.01)  # saturates at the 16-bit integrator limit
    assert rp.sampler.pid1 == pytest.approx(1.0, abs=1e-3)  # output saturates at 1 V


def test_iq_reports_injected_tone_amplitude_and_phase(p, sim):
    rp = p.rp
    iq = rp.iq0
    f = 100e3
    iq.setup(frequency=f, bandwidth=[2000, 2000], gain=0.0, phase=0, acbandwidth=0, amplitude=0,
             input="in1", output_direct="off", output_signal="quadrature", quadrature_factor=1.0)
    sim.model.set_loopback(1, gain=0.0)
    sim.model.inject_tone(1, f, 0.3, phase_deg=40.0, reference="iq0")
    iq._na_averages = 125000  # 1 ms
    iq._na_sleepcycles = 125000
    iq.frequency = f  # starts the accumulation, keeps the oscillator phase
    time.sleep(0.003)
    z = iq._nadata * 4 / 2**24
    pipeline = 360 * iq.frequency * 3 * 8e-9  # 3-cycle pipeline, as in NetworkAnalyzer._delay
    assert abs(z) == pytest.approx(0.3, rel=0.01)
    assert np.degrees(np.angle(z)) == pytest.approx(40.0 - pipeline, abs=0.5)
    # the phase register rotates the demodulation
    iq.phase = 30
    iq.frequency = f
    time.sleep(0.003)
    z = iq._nadata * 4 / 2**24
    assert np.degrees(np.angle(z)) == pytest.approx(70.0 - pipeline, abs=0.5)


def test_iq_bandwidth_attenuates_an_offset_tone(p, sim):
    rp = p.rp
    iq = rp.iq0
    f = 50e3
    iq.setup(frequency=f, bandwidth=[1000, 0], gain=0.0, phase=0, acbandwidth=0, amplitude=0,
             input="in1", output_direct="off", output_signal="quadrature", quadrature_factor=100.0)
    bw = iq.bandwidth[0]
    sim.model.set_loopback(1, gain=0.0)
    amplitude = 0.01
    sim.model.inject_tone(1, f + bw, amplitude)
    s = rp.scope
    s.setup(input1="iq0", duration=0.008, trigger_source="immediately", average=True, rolling_mode=False)
    ch1, _ = s.single()
    f_beat, a_beat, *_ = fit_sine(s.times, ch1)
    assert f_beat == pytest.approx(bw, rel=0.01)
    expected = amplitude * iq.quadrature_factor / 2 / np.sqrt(2)  # one low-pass stage at its corner
    assert a_beat == pytest.approx(expected, rel=0.05)


def test_network_analyzer_sweep_of_the_loopback_is_flat(p, sim):
    sim.model.set_loopback(1, gain=1.0, noise=1e-3)
    na = p.networkanalyzer
    # start at 10 x rbw: closer to the rbw the 2f demodulation product leaks through
    # the quadrature filters (on the board as well)
    na.setup(start_freq=1e4, stop_freq=5e6, points=31, rbw=1000, average_per_point=1, amplitude=0.2,
             input="in1", output_direct="out1", acbandwidth=0, logscale=True, trace_average=1,
             running_state="stopped")
    t0 = time.monotonic()
    y = na.single()
    elapsed = time.monotonic() - t0
    assert np.all(np.abs(np.abs(y) - 1.0) < 0.01)  # stated tolerance: 1 % in magnitude
    assert np.all(np.abs(np.degrees(np.angle(y))) < 1.0)  # and 1 degree in phase
    assert elapsed < 30


def test_network_analyzer_sees_loopback_gain_and_delay(p, sim):
    delay = 200e-9
    sim.model.set_loopback(1, gain=0.5, delay=delay)
    na = p.networkanalyzer
    na.setup(start_freq=1e5, stop_freq=2e6, points=11, rbw=2000, average_per_point=1, amplitude=0.2,
             input="in1", output_direct="out1", acbandwidth=0, logscale=False, running_state="stopped")
    y = na.single()
    freqs = na.frequencies
    assert np.allclose(np.abs(y), 0.5, rtol=0.01)
    expected = np.exp(-2j * np.pi * freqs * delay)
    assert np.allclose(np.angle(y / expected), 0.0, atol=np.radians(1.0))


def test_sampler_reads_what_the_routing_says(p, sim):
    rp = p.rp
    sim.model.set_loopback(2, gain=0.5, offset=0.1)
    rp.asg1.setup(waveform="dc", offset=0.25, trigger_source="immediately", output_direct="out2")
    rp.asg0.setup(waveform="dc", offset=0.0, trigger_source="immediately", output_direct="off")
    pid = rp.pid1
    pid.setup(input="in2", output_direct="off", setpoint=0.0, p=1.0, i=0.0, ival=0.0)
    rp.iir.input = "pid1"
    rp.iir.bypass = True
    lsb = 2 / 2**14
    assert rp.sampler.asg1 == pytest.approx(0.25, abs=2 * lsb)
    assert rp.sampler.out2 == pytest.approx(0.25, abs=2 * lsb)
    assert rp.sampler.in2 == pytest.approx(0.225, abs=2 * lsb)
    assert rp.sampler.pid1 == pytest.approx(0.225, abs=2 * lsb)
    assert rp.sampler.iir == pytest.approx(0.225, abs=2 * lsb)
    assert rp.sampler.out1 == pytest.approx(0.0, abs=2 * lsb)
    rp.asg1.output_direct = "off"
    assert rp.sampler.in2 == pytest.approx(0.1, abs=2 * lsb)
    pid.setpoint = 0.05
    assert rp.sampler.pid1 == pytest.approx(0.05, abs=2 * lsb)
    rp.scope.input2 = "pid1"
    assert rp.scope.voltage_in2 == pytest.approx(0.05, abs=2 * lsb)


def test_sampler_statistics_show_the_noise(p, sim):
    sim.model.set_loopback(1, gain=0.0, offset=-0.2, noise=0.01)
    mean, std, mx, mn = p.rp.sampler.stats("in1", t=0.05)
    assert mean == pytest.approx(-0.2, abs=3e-3)
    assert std == pytest.approx(0.01, rel=0.3)
    assert mn < mean < mx


@pytest.fixture
def manual(pyrpl_lib):
    """PyRPL on a simulator whose model time moves only when the test advances it."""
    from conftest import pyrpl_on

    from rpl_noqt.sim import FpgaModel, ManualClock, Simulator

    clock = ManualClock(start=1.0)
    with Simulator(model=FpgaModel(seed=1234, clock=clock)) as simulator, pyrpl_on(simulator, pyrpl_lib) as p:
        yield p, simulator, clock


def _advance_until(clock, condition, step: float, timeout: float = 10.0) -> None:
    """Advance model time by ``step`` until ``condition()`` (checked from this
    thread; PyRPL acts from its loop, so wall time passes as well)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        clock.advance(step)
        time.sleep(0.001)


def test_asg_burst_mode_on_the_scope(manual):
    # Model time stands still while PyRPL talks to the board, so the trace shows
    # the FPGA's behaviour and nothing of how fast this machine runs PyRPL: on
    # the wall clock, PyRPL's "trigger_source = immediately" is seven control
    # word writes over 1-6 ms (trigger; output off; reset; ...; reset off, which
    # triggers again; output on, which reloads the cycle counter), and the
    # burst on the scope was whatever part of its 300 us the output-off write
    # left (70-90 us less on a loaded machine).
    p, sim, clock = manual
    rp = p.rp
    asg = rp.asg0
    asg.setup(waveform="sin", frequency=10e3, amplitude=0.5, trigger_source="off", output_direct="off",
              cycles_per_burst=3)
    s = rp.scope
    s.setup(input1="asg0", duration=0.001, trigger_source="asg0", trigger_delay=0.0004, average=False,
            rolling_mode=False)
    armed_at = getattr(s, "_last_time_setup", None)
    res = s.single_async()
    # single_async arms from PyRPL's loop, and the trigger needs its pre-trigger samples
    _advance_until(clock, lambda: getattr(s, "_last_time_setup", None) != armed_at and s._trigger_armed
                   and s.pretrig_ok, step=1e-4)
    t_trigger = clock.now()
    asg.trigger_source = "immediately"  # every write of it at model time t_trigger
    assert clock.now() == t_trigger
    clock.advance(2e-3)  # past the end of the trace
    from pyrpl.async_utils import wait

    ch1, _ = wait(res, timeout=10)
    assert s.trigger_timestamp == sim.model.clock.cycles(t_trigger)  # the scope triggered on the burst start
    active = np.abs(ch1) > 0.05
    burst = s.times[active]
    # 3 periods of 100 us from the trigger; |sin| > 0.1 starts 1.6 us after a zero crossing
    crossing = np.arcsin(0.1) / (2 * np.pi * 10e3)
    dt = s.times[1] - s.times[0]
    assert burst.min() == pytest.approx(crossing, abs=2 * dt)
    assert burst.max() == pytest.approx(3e-4 - crossing, abs=2 * dt)
    during = (s.times >= 0) & (s.times < 3e-4)  # and it is the sine, from its start phase
    assert ch1[during] == pytest.approx(0.5 * np.sin(2 * np.pi * 10e3 * s.times[during]), abs=0.01)
    assert not active[s.times > burst.max()].any()  # then it holds a (near zero) value
    assert burst.max() < s.times[-1] - 1e-4
