"""The FPGA blocks of issue 13 part 2, through unmodified PyRPL on a simulator
whose model clock the test moves (``ManualClock``), so counts are exact:
the IQ modules' phase-frequency detector (``pfd.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from rpl_noqt.sim import FpgaModel, ManualClock, Simulator

from conftest import pyrpl_on


@pytest.fixture
def msim():
    clock = ManualClock(start=1.0)
    with Simulator(model=FpgaModel(seed=1, clock=clock)) as simulator:
        simulator.clock = clock
        yield simulator


@pytest.fixture
def mp(msim, pyrpl_lib):
    with pyrpl_on(msim, pyrpl_lib) as instance:
        yield instance


def _pfd_setup(rp, f_in, f_lo, amplitude=0.5):
    rp.asg0.setup(waveform="sin", frequency=f_in, amplitude=amplitude, offset=0.0,
                  trigger_source="immediately", output_direct="out1")
    iq = rp.iq0
    iq.pfd_on = False
    iq.input = "in1"
    iq.frequency = f_lo
    iq.output_direct = "off"
    iq.output_signal = "pfd"
    return iq


def _counts(iq):
    return round(iq.pfd_integral * 14)  # PyRPL: FloatRegister(0x150, bits=14, norm=14)


@pytest.mark.parametrize("df", [+1000.0, -1000.0])
def test_pfd_integral_counts_the_frequency_difference(mp, msim, df):
    rp = mp.rp
    iq = _pfd_setup(rp, 1e6 + df, 1e6)
    assert iq.pfd_integral == 0  # held in reset while pfd_on is False
    msim.clock.advance(0.1)
    assert iq.pfd_integral == 0
    iq.pfd_on = True
    exact = rp.asg0.frequency - iq.frequency  # the registers' frequencies, as PyRPL reads them back
    assert exact == pytest.approx(df, abs=0.2)
    last = 0
    for k in range(1, 6):
        msim.clock.advance(0.5)
        counts = _counts(iq)
        assert abs(counts - exact * 0.5 * k) <= 1.5, (k, counts)
        assert abs(counts - last) >= 499  # it keeps counting between reads
        last = counts
    # routed as the IQ's output signal: counts / 2**13 V, read by the sampler at the same instant
    assert rp.sampler.iq0 * 2**13 == pytest.approx(counts, abs=1.5)


def test_pfd_saturates_where_the_rtl_counter_sits_and_resets(mp, msim):
    rp = mp.rp
    iq = _pfd_setup(rp, 1.1e6, 1e6)
    iq.pfd_on = True
    msim.clock.advance(0.2)  # 20000 counts would be needed
    assert _counts(iq) == 8190
    assert iq.pfd_integral == pytest.approx(585.0, abs=0.01)  # PyRPL's doc: "-585 is the maximum value"
    iq.frequency = 1.2e6  # now the local oscillator is faster: it counts down from the saturation
    msim.clock.advance(1e-3)
    assert _counts(iq) == pytest.approx(8190 - 100, abs=2)
    msim.clock.advance(0.2)
    assert _counts(iq) == -8191
    iq.pfd_on = False
    assert iq.pfd_integral == 0
    iq.pfd_on = True
    msim.clock.advance(1e-3)
    assert _counts(iq) == pytest.approx(-100, abs=2)


def test_pfd_equal_frequencies_stay_within_a_count_and_off_input_never_counts(mp, msim):
    rp = mp.rp
    f = 125e6 / 128  # exact for both the ASG (2**30 step) and the IQ (2**32 phase) registers
    iq = _pfd_setup(rp, f, f)
    assert rp.asg0.frequency == iq.frequency == f
    iq.pfd_on = True
    seen = set()
    for _ in range(20):
        msim.clock.advance(0.137)
        seen.add(_counts(iq))
    # the input and the LO cross alternately: between an input crossing and the next LO
    # crossing the counter is one higher (what the PID behind a PFD averages to a phase)
    assert seen <= {-1, 0, 1} and max(seen) - min(seen) == 1
    # no signal at the input: only the local oscillator's crossings count (down)
    rp.asg0.output_direct = "off"
    msim.clock.advance(1e-3)
    base = _counts(iq)
    msim.clock.advance(2e-3)
    assert _counts(iq) - base == pytest.approx(-2e-3 * f, abs=2)
    # a DC input never crosses either
    msim.model.set_loopback(1, offset=-0.3)
    base = _counts(iq)
    msim.clock.advance(1e-3)
    assert _counts(iq) - base == pytest.approx(-1e-3 * f, abs=2)


def test_pfd_counts_a_two_tone_input_cycle_by_cycle(mp, msim):
    """Two equal tones (no dominant one): the model counts the sign of the sum per cycle."""
    rp = mp.rp
    iq = _pfd_setup(rp, 200e3, 100e3, amplitude=0.3)
    rp.asg1.setup(waveform="sin", frequency=300e3, amplitude=0.3, trigger_source="immediately",
                  output_direct="out1")
    iq.pfd_on = True
    msim.clock.advance(1e-3)
    c1 = _counts(iq)
    msim.clock.advance(1e-3)
    c2 = _counts(iq)
    # sin(2 pi 200k t + a) + sin(2 pi 300k t + b) = 2 sin(2 pi 250k t + .) cos(2 pi 50k t + .):
    # 5 + 1 sign changes every 10 us, 3 of them negative-going: 300 per ms, minus the LO's 100
    assert c2 - c1 == pytest.approx(200, abs=3)


# -- ASG external trigger (DIO0_P, dio.py) -------------------------------------------------
CYCLE = 8e-9


def _burst_setup(rp, source, cycles=2, frequency=10e3):
    rp.asg0.setup(waveform="sin", frequency=frequency, amplitude=0.5, offset=0.0, cycles_per_burst=cycles,
                  trigger_source=source, output_direct="out1")
    return rp.asg0


def _asg_moving(rp, msim, dt=3e-6):
    """Whether asg0's output changes over ``dt`` of model time (sampler reads)."""
    a = rp.sampler.asg0
    msim.clock.advance(dt)
    return rp.sampler.asg0 != a


def test_asg_ext_positive_edge_starts_a_burst_and_is_debounced(mp, msim):
    rp = mp.rp
    asg = _burst_setup(rp, "ext_positive_edge")
    assert asg.trigger_source == "ext_positive_edge"  # control bits [2:0] = 2
    msim.clock.advance(1e-3)
    assert not _asg_moving(rp, msim)  # waits for the pin
    rp.hk.expansion_P0_output = False  # PyRPL's IORegister makes the pin an output when read otherwise
    msim.model.set_external_trigger(True)
    assert rp.hk.expansion_P0 is False  # the edge reaches the FPGA 2 cycles later
    msim.clock.advance(1e-6)
    assert rp.hk.expansion_P0 is True
    assert _asg_moving(rp, msim)
    msim.clock.advance(250e-6)  # 2 periods of 10 kHz = 200 us: the burst is over
    assert not _asg_moving(rp, msim)
    msim.model.set_external_trigger(False)  # a falling edge does not trigger this source
    msim.clock.advance(50e-6)
    assert not _asg_moving(rp, msim)
    msim.model.set_external_trigger(True)  # 0.3 ms after the accepted edge: the debouncer ignores it
    msim.clock.advance(1e-6)
    assert not _asg_moving(rp, msim)
    msim.model.set_external_trigger(False)
    msim.clock.advance(0.3e-3)  # > 0.5 ms since the accepted edge
    msim.model.pulse_external_trigger(1e-6)
    msim.clock.advance(1e-6)
    assert _asg_moving(rp, msim)


def test_asg_ext_negative_edge_and_burst_timing_on_the_scope(mp, msim):
    rp = mp.rp
    _burst_setup(rp, "ext_negative_edge", cycles=1, frequency=100e3)
    msim.model.set_external_trigger(True)
    msim.clock.advance(1e-3)
    assert not _asg_moving(rp, msim)
    s = rp.scope
    s.setup(input1="asg0", input2="in1", duration=2**14 * CYCLE, trigger_source="immediately", average=False,
            rolling_mode=False)
    assert s.decimation == 1
    s._start_trace_acquisition()  # the trace covers the 131 us from here
    msim.clock.advance(20e-6)
    msim.model.set_external_trigger(False)  # the falling edge, 20 us + 2 cycles into the trace
    msim.clock.advance(1e-3)
    assert s._data_ready()
    ch1 = s._get_trace()[0]
    moving = np.flatnonzero(np.diff(ch1) != 0)
    # one period of 100 kHz (10 us = 1250 samples at 8 ns), then held at the last value
    assert (moving[-1] - moving[0] + 2) * CYCLE == pytest.approx(10e-6, abs=3 * CYCLE)
    assert moving[0] * CYCLE == pytest.approx(20e-6, abs=4 * CYCLE)


def test_asg_triggered_by_the_pin_driven_from_housekeeping(mp, msim):
    """DIO0_P driven as an output (hk.expansion_P0_output): exp_p_in follows it, the generator too."""
    rp = mp.rp
    _burst_setup(rp, "ext_positive_edge")
    rp.hk.expansion_P0_output = True
    rp.hk.expansion_P0 = False
    msim.clock.advance(1e-3)
    assert not _asg_moving(rp, msim)
    msim.model.set_external_trigger(True)  # an output pin ignores what is connected from outside
    msim.clock.advance(1e-6)
    assert not _asg_moving(rp, msim)
    rp.hk.expansion_P0 = True
    msim.clock.advance(1e-6)
    assert _asg_moving(rp, msim)


def test_asg_ext_raw_runs_while_high(mp, msim):
    rp = mp.rp
    asg = _burst_setup(rp, "ext_raw", cycles=1, frequency=100e3)
    asg.bursts = 1000
    msim.clock.advance(1e-3)
    assert not _asg_moving(rp, msim)
    msim.model.set_external_trigger(True)
    msim.clock.advance(1e-3)  # bursts repeat while the level is high
    assert _asg_moving(rp, msim)
    msim.clock.advance(1e-3)
    assert _asg_moving(rp, msim)
    msim.model.set_external_trigger(False)
    msim.clock.advance(20e-6)  # the burst in progress (10 us) ends, no more start
    assert not _asg_moving(rp, msim)
    msim.clock.advance(1e-3)
    assert not _asg_moving(rp, msim)


def test_external_trigger_api_validates(msim):
    with pytest.raises(ValueError, match="level"):
        msim.model.set_external_trigger(2)
    with pytest.raises(ValueError, match="width"):
        msim.model.pulse_external_trigger(0.0)
    msim.model.set_external_trigger(True)
    with pytest.raises(ValueError, match="already high"):
        msim.model.pulse_external_trigger(1e-6)


# -- analog front end (analog.py) -------------------------------------------------------------
def test_hv_jumper_divides_the_input_by_20_and_pyrpl_reads_lv_volts(pyrpl_lib):
    from rpl_noqt.sim import Simulator as PlantSimulator

    with PlantSimulator(seed=3, input_range={1: "HV"}) as sim, pyrpl_on(sim, pyrpl_lib) as p:
        rp = p.rp
        for asg, out in ((rp.asg0, "out1"), (rp.asg1, "out2")):
            asg.setup(waveform="sin", frequency=10e3, amplitude=0.8, trigger_source="immediately",
                      output_direct=out)
        s = rp.scope
        s.setup(input1="in1", input2="in2", duration=1e-3, trigger_source="immediately", average=True,
                rolling_mode=False)
        ch1, ch2 = s.single()
        from test_physics import fit_sine

        assert fit_sine(s.times, ch1)[1] == pytest.approx(0.8 / 20, rel=0.01)  # HV: 0.04 "V" in PyRPL's units
        assert fit_sine(s.times, ch2)[1] == pytest.approx(0.8, rel=0.01)  # LV
        rp.asg0.output_direct = "off"
        rp.asg1.output_direct = "off"
        sim.model.set_loopback(1, offset=5.0)  # 5 V at the connector: within HV's +-20 V
        sim.model.set_loopback(2, offset=5.0)  # and far beyond LV's +-1 V
        assert rp.sampler.in1 == pytest.approx(0.25, abs=2 / 2**13)
        assert rp.sampler.in2 == pytest.approx(1.0, abs=2 / 2**13)  # saturated
        sim.model.set_input_range(1, "LV")
        assert rp.sampler.in1 == pytest.approx(1.0, abs=2 / 2**13)
        with pytest.raises(ValueError, match="input range"):
            sim.model.set_input_range(1, "5V")


def test_rolloff_near_nyquist_measured_by_the_network_analyzer(pyrpl_lib):
    from rpl_noqt.sim import Simulator as PlantSimulator
    from rpl_noqt.sim.analog import Rolloff

    with PlantSimulator(seed=4, rolloff=True) as sim, pyrpl_on(sim, pyrpl_lib) as p:
        na = p.networkanalyzer
        na.setup(start_freq=1e6, stop_freq=61e6, points=7, rbw=2000, average_per_point=1, amplitude=0.2,
                 input="in1", output_direct="out1", acbandwidth=0, logscale=False, trace_average=1,
                 running_state="stopped")
        y = na.single()
        f = na.frequencies
        r = Rolloff()
        h = r.dac(f) * r.adc(f)
        assert 20 * np.log10(abs(h[np.argmin(abs(f - 51e6))])) == pytest.approx(-6.2, abs=0.3)  # -3 dB each path
        assert np.allclose(20 * np.log10(np.abs(y)), 20 * np.log10(np.abs(h)), atol=0.05)
        assert np.allclose(np.degrees(np.angle(y / h)), 0.0, atol=1.0)
        assert 20 * np.log10(abs(y[-1])) < -9  # 61 MHz: more than 9 dB down, flat before
        # the time domain agrees: a 20 MHz sine on the scope at decimation 1
        rp = p.rp
        rp.asg0.setup(waveform="sin", frequency=20e6, amplitude=0.5, trigger_source="immediately",
                      output_direct="out1")
        s = rp.scope
        s.setup(input1="in1", input2="asg0", duration=2**14 * 8e-9, trigger_source="immediately", average=False,
                rolling_mode=False)
        ch1, ch2 = s.single()
        from test_physics import fit_sine

        ratio = fit_sine(s.times, ch1)[1] / fit_sine(s.times, ch2)[1]
        assert ratio == pytest.approx(abs(r.dac(20e6) * r.adc(20e6)), rel=0.01)
        # a tone injected at the input connector sees only the anti-alias filter
        rp.asg0.output_direct = "off"
        sim.model.inject_tone(1, 40e6, 0.2)
        ch1 = s.single()[0]
        amplitude = 2 * abs(np.mean(ch1 * np.exp(-2j * np.pi * 40e6 * s.times)))
        assert amplitude == pytest.approx(0.2 * abs(r.adc(40e6)), rel=0.01)
        assert abs(r.adc(40e6)) < 0.85  # -1.5 dB: distinguishable from a flat input
        sim.model.remove_tone()
        # switched off, the front end is flat again
        sim.model.set_rolloff(False)
        y = na.single()
        assert np.allclose(np.abs(y), 1.0, atol=0.002)
        with pytest.raises(ValueError, match="adc_bandwidth"):
            sim.model.set_rolloff(True, adc_bandwidth=-1.0)
        with pytest.raises(ValueError, match="unknown"):
            sim.model.set_rolloff(True, bandwidth=1e6)


def test_front_end_options_of_the_simulator_and_cli():
    import argparse

    from rpl_noqt.sim import Simulator as PlantSimulator
    from rpl_noqt.sim.cli import configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args([])
    assert (args.input_range, args.rolloff) == ("LV", False)
    args = parser.parse_args(["--input-range", "HV", "--rolloff"])
    assert (args.input_range, args.rolloff) == ("HV", True)
    sim = PlantSimulator(input_range="HV", rolloff={"adc_bandwidth": 20e6})
    assert sim.model.analog.input_range == {1: "HV", 2: "HV"}
    assert sim.model.analog.rolloff.adc_bandwidth == 20e6
    assert PlantSimulator().model.analog.rolloff is None
    with pytest.raises(ValueError, match="input range"):
        PlantSimulator(input_range={2: "MV"})


def test_scope_external_trigger_sees_the_edge_that_starts_the_generator(mp, msim):
    """Scope source ext_positive_edge (6) on DIO0_P, the same edge as the generator's:
    with trigger_delay 0 the burst starts in the middle of the trace."""
    rp = mp.rp
    _burst_setup(rp, "ext_positive_edge", cycles=1, frequency=1e6)
    s = rp.scope
    s.setup(input1="asg0", input2="in1", duration=2**14 * CYCLE, trigger_source="ext_positive_edge",
            trigger_delay=0.0, average=False, rolling_mode=False)
    s._start_trace_acquisition()
    msim.clock.advance(1e-3)  # pre-trigger samples written: armed, waiting
    assert not s._data_ready()
    msim.model.set_external_trigger(True)
    msim.clock.advance(1e-3)
    assert s._data_ready()
    ch1 = s._get_trace()[0]
    moving = np.flatnonzero(np.diff(ch1) != 0)
    assert abs(moving[0] - 2**13) <= 3  # the generator's first step, at the trigger sample
    assert (moving[-1] - moving[0] + 2) * CYCLE == pytest.approx(1e-6, abs=3 * CYCLE)
    # falling edge source, and the debounce register (0x90): a second falling edge within it is ignored
    s.setup(input1="asg0", input2="in1", duration=2**14 * CYCLE, trigger_source="ext_negative_edge",
            trigger_delay=0.0, average=False, rolling_mode=False)
    s.trigger_debounce = 1e-3
    assert s._trigger_debounce == 125000
    msim.model.set_external_trigger(False)  # accepted by the debouncer before the scope is armed
    msim.clock.advance(0.2e-3)
    s._start_trace_acquisition()
    msim.clock.advance(0.3e-3)
    msim.model.pulse_external_trigger(1e-6)  # falls 0.5 ms after the first fall: within 1 ms, ignored
    msim.clock.advance(0.3e-3)
    assert not s._data_ready()
    msim.clock.advance(0.5e-3)
    msim.model.pulse_external_trigger(1e-6)  # 1.3 ms after: accepted
    msim.clock.advance(0.3e-3)
    assert s._data_ready()


def test_pfd_counts_a_negative_input_in_the_cycle_it_leaves_reset(mp, msim):
    """l1/l2 are 0 in reset: an input already negative is an edge at once (pfd_block.v lines 63-76)."""
    rp = mp.rp
    iq = _pfd_setup(rp, 1e3, 0.0)
    rp.asg0.output_direct = "off"
    for offset, expected in ((-0.3, 1), (0.3, 0)):
        msim.model.set_loopback(1, offset=offset)
        iq.pfd_on = False
        iq.pfd_on = True
        msim.clock.advance(1e-3)  # a DC input and a LO at 0 Hz: nothing crosses afterwards
        assert _counts(iq) == expected, offset
