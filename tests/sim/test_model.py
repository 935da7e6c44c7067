"""Register model against the RTL, on a hand-stepped clock (no sockets, no sleeps)."""

from __future__ import annotations

import numpy as np
import pytest

from rpl_noqt.sim import FpgaModel, ManualClock
from rpl_noqt.sim.pid import IVAL_MAX

SCOPE, ASG, DSP, HK = 0x40100000, 0x40200000, 0x40300000, 0x40000000
CYCLE = 8e-9


@pytest.fixture
def clock():
    return ManualClock(start=1.0)


@pytest.fixture
def m(clock):
    return FpgaModel(seed=0, clock=clock)


def rd(m, addr):
    return int(m.read(addr, 1)[0])


def dsp(slot, offset):
    return DSP + slot * 0x10000 + offset


def start_sine(m, channel=0, freq=1e3, amp=0.5, ncyc=0):
    base = ASG + 0x20 * channel
    table = np.round(8191 * np.sin(2 * np.pi * np.arange(2**14) / 2**14)).astype(int) & 0x3FFF
    m.write(ASG + 0x10000 * (channel + 1), table)
    m.write(base + 0x4, [int(amp * 2**13)])
    m.write(base + 0x8, [2**30 - 1])
    m.write(base + 0x10, [round(freq * 2**30 / 125e6)])
    m.write(base + 0x18, [ncyc])
    shift = 16 * channel
    m.write(ASG, [(0x40 | 1) << shift])  # reset, source 1
    m.write(ASG, [(0x10 | 1) << shift])  # run: software trigger


def test_reset_values_and_constants_pyrpl_reads(m):
    assert rd(m, HK) == 1  # id: release1
    assert rd(m, SCOPE + 0x14) == 0x2000  # decimation
    assert rd(m, SCOPE + 0x10) == 2**13 and rd(m, SCOPE + 0x20) == 20
    for pid in range(3):
        assert [rd(m, dsp(pid, o)) for o in (0x200, 0x204, 0x208, 0x20C, 0x220, 0x224, 0x228)] == [12, 32, 10, 24, 4, 5, 10]
        assert rd(m, dsp(pid, 0x124)) == 0x2000 and rd(m, dsp(pid, 0x128)) == 0x1FFF
        assert rd(m, dsp(pid, 0x12C)) == 0b111
    for iq, quad in ((5, 2), (6, 2), (7, 4)):
        assert [rd(m, dsp(iq, o)) for o in (0x200, 0x204, 0x214, 0x220, 0x224, 0x228)] == [11, 17, 24, 1, 5, 50]
        assert [rd(m, dsp(iq, o)) for o in (0x230, 0x234, 0x238)] == [quad, 5, 10]
    assert [rd(m, dsp(4, o)) for o in (0x200, 0x204, 0x208)] == [32, 29, 14]
    assert rd(m, dsp(3, 0x11C)) == 20
    assert rd(m, dsp(0, 0x0)) == 10 and rd(m, dsp(9, 0x0)) == 11  # pid <- in1, scope ch2 <- in2
    assert rd(m, dsp(10, 0x0)) == 15  # pwm inputs off
    assert rd(m, dsp(0, 0xC)) == 0xFF  # sync: everything running
    assert rd(m, ASG + 0x4) == 0x2000 and rd(m, ASG + 0x8) == 2**30 - 1


def test_asg_frequency_amplitude_offset(m, clock):
    start_sine(m, freq=1e3, amp=0.5)
    m.write(ASG + 0x4, [int(0.5 * 2**13) | (int(0.1 * 2**13) << 16)])
    t = clock.now() + np.arange(20000) * 1e-6
    v = m.asg[0].output(t)
    assert v.max() == pytest.approx(0.6, abs=2e-3) and v.min() == pytest.approx(-0.4, abs=2e-3)
    crossings = np.flatnonzero((v[:-1] < 0.1) & (v[1:] >= 0.1))
    period = np.mean(np.diff(t[crossings]))
    assert period == pytest.approx(1e-3, rel=1e-4)


def test_asg_zero_bit_and_reset_hold(m, clock):
    start_sine(m)
    m.write(ASG, [0x10 | 0x80 | 1])  # on = False
    assert m.signal("asg0") == 0.0
    m.write(ASG, [0x10 | 0x40 | 1])  # state machine reset: holds table[start]
    clock.advance(1e-3)
    assert m.signal("asg0") == pytest.approx(0.0, abs=1e-3)


def test_asg_burst_stops_after_n_cycles(m, clock):
    start_sine(m, freq=10e3, ncyc=2)
    t0 = clock.now()
    t = t0 + np.arange(400) * 1e-6
    v = m.asg[0].output(t)
    assert np.abs(v[t - t0 < 190e-6]).max() > 0.49
    assert np.abs(v[t - t0 > 201e-6]).max() < 1e-3
    clock.advance(1e-3)
    assert not m.asg[0].is_running(clock.now())


def test_scope_immediate_acquisition_state_machine(m, clock):
    m.write(SCOPE + 0x14, [1])
    m.write(SCOPE + 0x10, [2**14])
    m.write(SCOPE, [2])  # reset
    assert rd(m, SCOPE + 0x18) == 0 and rd(m, SCOPE + 0x1C) == 0
    m.write(SCOPE, [1])  # arm
    assert rd(m, SCOPE) & 1 == 1 and rd(m, SCOPE + 0x16C) == 1
    clock.advance(100 * CYCLE)
    m.write(SCOPE + 4, [1])  # software trigger
    assert rd(m, SCOPE) == 0b101  # armed, delay running
    assert rd(m, SCOPE + 0x1C) == 99  # wp at trigger = last written sample
    clock.advance(2**14 * CYCLE)
    assert rd(m, SCOPE) == 0  # done: disarmed, source cleared
    assert rd(m, SCOPE + 4) == 0
    assert rd(m, SCOPE + 0x18) == (99 + 2**14) % 2**14


def test_scope_trigger_waits_for_pretrigger_data(m, clock):
    m.write(SCOPE + 0x14, [1])
    m.write(SCOPE + 0x10, [2**13])  # half a buffer after the trigger
    m.write(SCOPE, [1 | 2])
    clock.advance(100 * CYCLE)
    assert rd(m, SCOPE + 0x16C) == 0  # only 100 of 8192 pretrigger samples
    m.write(SCOPE + 4, [1])
    assert rd(m, SCOPE) == 0b001  # trigger ignored: no delay running
    clock.advance(2**13 * CYCLE)
    assert rd(m, SCOPE + 0x16C) == 1


def test_scope_edge_trigger_and_hysteresis(m, clock):
    start_sine(m, freq=1e3, amp=0.5)
    m.write(dsp(8, 0x0), [8])  # scope ch1 <- asg0
    m.write(SCOPE + 0x14, [64])
    m.write(SCOPE + 0x10, [2**13])
    m.write(SCOPE + 0x8, [int(0.25 * 2**13)])
    m.write(SCOPE + 0x20, [int(0.05 * 2**13)])
    m.write(SCOPE, [1 | 2])
    m.write(SCOPE + 4, [2])  # ch1 positive edge
    clock.advance(0.02)
    assert rd(m, SCOPE) == 0
    data = m.read(SCOPE + 0x10000, 2**14).astype(np.int64)
    data = np.where(data >= 2**13, data - 2**14, data) / 2**13
    trace = np.roll(data, -(rd(m, SCOPE + 0x1C) + 2**13 + 1))
    i0 = 2**14 - 2**13 - 1  # the trigger sample
    assert trace[i0] == pytest.approx(0.25, abs=0.01)
    assert trace[i0 - 1] < 0.25 <= trace[i0]


def test_scope_we_keep_keeps_writing(m, clock):
    m.write(SCOPE + 0x14, [1])
    m.write(SCOPE + 0x10, [10])
    m.write(SCOPE, [2])
    m.write(SCOPE, [1 | 8])  # arm with adc_we_keep
    clock.advance(2**14 * CYCLE)
    m.write(SCOPE + 4, [1])
    clock.advance(100 * CYCLE)
    assert rd(m, SCOPE) == 0b1001  # still armed, delay done
    wp = rd(m, SCOPE + 0x18)
    clock.advance(50 * CYCLE)
    assert rd(m, SCOPE + 0x18) == (wp + 50) % 2**14


def test_scope_timestamps(m, clock):
    m.write(SCOPE + 0x10, [2**14])
    m.write(SCOPE, [1 | 2])
    clock.advance(1e-3)
    m.write(SCOPE + 4, [1])
    t_trig = clock.now()
    clock.advance(1.0)
    now = (rd(m, SCOPE + 0x160) << 32) | rd(m, SCOPE + 0x15C)
    trig = (rd(m, SCOPE + 0x168) << 32) | rd(m, SCOPE + 0x164)
    assert now == pytest.approx(clock.now() * 125e6, abs=2)
    assert trig == pytest.approx(t_trig * 125e6, abs=2)


def test_pid_error_sign_and_integrator(m, clock):
    m.set_loopback(1, gain=0.0, offset=0.25)
    ki = round(1e3 * 2**32 * 2 * np.pi * 8e-9)  # 1 kHz unity gain
    m.write(dsp(0, 0x10C), [ki])
    clock.advance(1e-4)
    ival = (rd(m, dsp(0, 0x100)) ^ 0x8000) - 0x8000  # 16-bit signed, 2**13 per volt
    ival /= 2**13
    assert ival == pytest.approx(2 * np.pi * 1e3 * 0.25 * 1e-4, abs=2 / 2**13)  # error = input - setpoint > 0
    m.write(dsp(0, 0x100), [int(-0.5 * 2**13) & 0xFFFF])
    assert rd(m, dsp(0, 0x100)) == int(-0.5 * 2**13) & 0xFFFF


def test_pid_pause_on_sync(m, clock):
    m.set_loopback(1, gain=0.0, offset=0.25)
    m.write(dsp(0, 0x10C), [round(1e3 * 2**32 * 2 * np.pi * 8e-9)])
    m.write(dsp(0, 0xC), [0xFE])  # clear pid0's sync bit: gains paused
    clock.advance(1e-3)
    assert rd(m, dsp(0, 0x100)) == 0


def test_iq_network_analyzer_busy_bit_and_sum(m, clock):
    iq = 5
    m.write(dsp(iq, 0x4), [1])  # iq0 -> out1 -> in1 -> iq0
    m.write(dsp(iq, 0x114), [int(0.5 * 2**17)])  # amplitude 0.5 V
    m.write(dsp(iq, 0x130), [1000])
    m.write(dsp(iq, 0x134), [500])
    m.write(dsp(iq, 0x108), [round(1e6 / 125e6 * 2**32)])
    clock.advance(100 * CYCLE)
    words = m.read(dsp(iq, 0x140), 4)
    assert all(w >> 31 for w in words)
    clock.advance(2000 * CYCLE)
    a, b, c, d = (int(w) for w in m.read(dsp(iq, 0x140), 4))
    assert not any(w >> 31 for w in (a, b, c, d))
    i_sum = a + (b << 31)
    i_sum -= (i_sum >> 61) * 2**62
    q_sum = c + (d << 31)
    q_sum -= (q_sum >> 61) * 2**62
    z = complex(i_sum, q_sum) / 1000 * 4 / 2**24 / 0.5
    assert abs(z) == pytest.approx(1.0, rel=1e-3)
    assert np.angle(z) == pytest.approx(-2 * np.pi * 1e6 * 3 * CYCLE, abs=1e-3)


def test_unmapped_and_readonly(m):
    assert rd(m, 0x40600000) == 0
    m.write(HK, [5])
    assert rd(m, HK) == 1
    m.write(dsp(0, 0x10), [123])  # sampler word is read-only
    assert rd(m, dsp(0, 0x10)) == 0


def test_test_helpers_validate(m):
    with pytest.raises(ValueError, match="channel"):
        m.set_loopback(3, gain=1.0)
    with pytest.raises(ValueError, match="unknown loopback setting"):
        m.set_loopback(1, gian=1.0)
    with pytest.raises(ValueError, match="noise"):
        m.set_loopback(1, noise=-1.0)
    with pytest.raises(ValueError, match="frequency"):
        m.inject_tone(1, 1e9, 0.1)
    with pytest.raises(ValueError, match="reference"):
        m.inject_tone(1, 1e3, 0.1, reference="asg0")
    with pytest.raises(ValueError, match="unknown signal"):
        m.signal("in3")
    tone = m.inject_tone(2, 1e3, 0.1)
    m.remove_tone(tone)
    with pytest.raises(ValueError, match="no injected tone"):
        m.remove_tone(tone)


def test_reset_restores_power_on_state(m):
    m.write(ASG + 0x10, [1234])
    m.reset()
    assert rd(m, ASG + 0x10) == 0


def test_samples_keep_the_values_they_had_when_taken(m, clock):
    start_sine(m, freq=1e3, amp=0.5)
    m.write(dsp(8, 0x0), [8])  # scope ch1 <- asg0
    m.write(SCOPE + 0x14, [64])
    m.write(SCOPE + 0x10, [2**14])
    m.write(SCOPE, [1 | 2])
    m.write(SCOPE + 4, [1])
    clock.advance(2**13 * 64 * CYCLE)
    m.write(ASG + 0x4, [int(0.1 * 2**13)])  # amplitude change half way through
    clock.advance(2**13 * 64 * CYCLE)
    data = m.read(SCOPE + 0x10000, 2**14).astype(np.int64)
    data = np.where(data >= 2**13, data - 2**14, data) / 2**13
    trace = np.roll(data, -(rd(m, SCOPE + 0x1C) + 2**14 + 1))
    assert np.abs(trace[: 2**13 - 10]).max() == pytest.approx(0.5, abs=0.01)
    assert np.abs(trace[2**13 + 10 :]).max() == pytest.approx(0.1, abs=0.01)


def test_trig_phase_read_through_the_sampler_right_after_arming(m, clock):
    # pyrpl's test_trig arms a neg-edge trigger and reads the latched phase
    # through the sampler at once: the read itself must find the edge
    start_sine(m, freq=10e3, amp=0.4)
    trig = 3
    m.write(dsp(trig, 0x0), [8])  # input: asg0
    m.write(dsp(trig, 0x10C), [1])  # output_signal: asg0 phase
    m.write(dsp(trig, 0x118), [0])  # threshold 0 V
    m.write(dsp(trig, 0x11C), [8])  # small hysteresis
    for source, expected in ((1, 0.0), (2, 180.0)):
        m.write(dsp(trig, 0x108), [source])
        m.write(dsp(trig, 0x100), [1])  # arm
        clock.advance(2e-4)  # two periods
        code = rd(m, dsp(trig, 0x10)) & 0x3FFF
        phase = (code - 2**14 if code & 0x2000 else code) * 360 / 2**14
        assert abs((phase - expected + 180) % 360 - 180) < 1.0, (source, phase)


def test_pid_tones_see_the_rtl_pipeline_and_filters(m):
    pid = m.bus.blocks[0]
    f = np.array([1e3, 1e6])
    z1 = np.exp(-2j * np.pi * f * CYCLE)
    m.write(dsp(0, 0x108), [2**12])  # P = 1
    assert np.allclose(pid.tone_response(f), z1**4)  # error, kp_reg, pid_out, out_buffer
    m.write(dsp(0, 0x108), [0])
    ki = round(1e3 * 2**32 * 2 * np.pi * 8e-9)  # unity gain at 1 kHz
    m.write(dsp(0, 0x10C), [ki])
    assert abs(pid.tone_response(np.array([1e3]))[0]) == pytest.approx(1.0, rel=1e-3)
    m.write(dsp(0, 0x120), [0x80 | 10])  # one low-pass stage on: the bandwidth cuts the 1 MHz tone
    assert abs(pid.tone_response(f)[1]) < abs(pid.tone_response(f)[0]) * 1e-3 * 1.1


def test_pid_integrator_averages_a_fast_tone_instead_of_sampling_it(m, clock):
    # an NA sweep through an integrating PID: the integrator must not random-walk
    # (worst case: a tone at the step rate, which point samples would see as DC)
    m.set_loopback(1, gain=0.0)
    m.write(dsp(0, 0x10C), [round(250 * 2**32 * 2 * np.pi * 8e-9)])  # 250 Hz unity gain
    steps = int(np.ceil(0.05 / (0.5 / (2 * np.pi * 250))))  # how FpgaModel.advance steps 50 ms
    m.inject_tone(1, steps / 0.05, 0.1, phase_deg=60)
    for _ in range(20):
        clock.advance(0.05)
        rd(m, dsp(0, 0x100))
    ival = ((rd(m, dsp(0, 0x100)) ^ 0x8000) - 0x8000) / 2**13
    assert abs(ival) < 0.01  # the tone's integral is 0.1 * 250 / 3160: a few mV at most


def _iir_coefficient(m, stage, k, value):
    word = round(value * 2**29) & 0xFFFFFFFF
    m.write(dsp(4, 0x8000 + 4 * (8 * stage + 2 * k)), [word])


def test_iir_tones_see_the_biquads_as_the_rtl_schedules_them(m):
    iir = m.bus.blocks[4]
    f = np.array([1e3, 1e5])
    z1 = np.exp(-2j * np.pi * f * CYCLE)
    m.write(dsp(4, 0x100), [10])  # loops
    _iir_coefficient(m, 2, 0, 0.5)  # stage 2: y = 0.5 x + 0.5 y1 (DC gain 1)
    _iir_coefficient(m, 2, 2, 0.5)
    assert not np.any(iir.tone_response(f))  # off: 0
    m.write(dsp(4, 0x104), [1])  # on
    zl = z1**10
    hold = (1 - zl) / (10 * (1 - z1))
    assert np.allclose(iir.tone_response(f), 0.5 / (1 - 0.5 * zl) * z1**8 * hold)
    assert iir.dc_gain() == pytest.approx(1.0)
    m.write(dsp(4, 0x104), [3])  # shortcut wins: the input, one cycle later
    assert np.allclose(iir.tone_response(f), z1)


def test_scope_average_is_the_boxcar_over_all_decimated_cycles(m, clock):
    """With averaging on, a sample is the mean of all ``dec`` cycles before it
    (``red_pitaya_scope.v`` sums every cycle): a tone near the decimated Nyquist
    frequency is attenuated by ``sin(pi x)/(dec sin(pi x/dec))``, not by a
    coarser sub-sampled average (which reads 0.45 % high in amplitude here)."""
    dec = 256
    start_sine(m, freq=0.45 * 125e6 / dec, amp=0.9)
    tone = m.asg[0].spectrum()
    f, amp = tone.freqs[0], abs(tone.amps[0])
    m.write(dsp(8, 0x0), [8])  # scope ch1 <- asg0
    m.write(SCOPE + 0x14, [dec])
    m.write(SCOPE + 0x28, [1])  # average
    m.write(SCOPE + 0x10, [2**14])
    m.write(SCOPE, [2])
    t_arm = clock.now()
    m.write(SCOPE, [1])
    m.write(SCOPE + 4, [1])
    clock.advance(2**14 * dec * CYCLE)
    data = m.read(SCOPE + 0x10000, 2**14).astype(np.int64)
    data = np.where(data >= 2**13, data - 2**14, data) / 2**13
    t = t_arm + (np.arange(2**14) + 1) * dec * CYCLE
    basis = np.stack([np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t), np.ones_like(t)], axis=1)
    (c, s, _), *_ = np.linalg.lstsq(basis, data, rcond=None)
    x = np.pi * f * CYCLE
    boxcar = np.sin(x * dec) / (dec * np.sin(x))
    assert np.hypot(c, s) == pytest.approx(amp * boxcar, rel=1.5e-3)  # sub-sampled: +4.5e-3


@pytest.mark.parametrize("switch", ["average off", "decimation"])
def test_scope_samples_taken_keep_their_settings_when_the_scope_is_reconfigured(clock, switch):
    """Scope register writes do not bring the other blocks up to date (they drive no signal):
    the scope keeps the samples it has taken itself where its own settings change them.
    A tone at 0.45 of the decimated Nyquist rate reads differently averaged and not, so
    samples recomputed with the new setting would differ from the ones read before it."""
    models = [FpgaModel(seed=0, clock=clock) for _ in range(2)]
    dec = 256
    for m in models:
        start_sine(m, freq=0.45 * 125e6 / dec, amp=0.9)
        m.write(dsp(8, 0x0), [8])  # scope ch1 <- asg0
        m.write_word(SCOPE + 0x14, dec)
        m.write_word(SCOPE + 0x28, 1)  # average
        m.write_word(SCOPE + 0x10, 2**14)
        m.write_word(SCOPE, 2)
        m.write_word(SCOPE, 1)
        m.write_word(SCOPE + 4, 1)
    clock.advance(3000 * dec * CYCLE)  # 3000 samples taken, averaged
    before = models[0].read(SCOPE + 0x10000, 2**14)  # read now: computed with the averaging on
    taken = int(models[0].read_word(SCOPE + 0x18)) + 1
    assert 2900 < taken < 3100
    changed = models[1]
    if switch == "average off":
        changed.write_word(SCOPE + 0x28, 0)
    else:
        changed.write_word(SCOPE + 0x14, dec // 2)
    clock.advance(1000 * dec * CYCLE)
    after = changed.read(SCOPE + 0x10000, 2**14)
    assert np.array_equal(after[:taken], before[:taken])
    assert not np.array_equal(after[taken + 10:taken + 500], models[0].read(SCOPE + 0x10000, 2**14)[taken + 10:taken + 500])


def test_iq_bandpass_filters_the_noise_it_is_fed(m, clock):
    """ASG noise through an IQ bandpass: the output is the input filtered by the
    same response a tone sees (cross-spectrum at the centre frequency equals the
    phasor response), computed from the very samples other readers of the ASG
    see (the noise is a fixed function of the cycle)."""
    from rpl_noqt.sim.dsp import EvalContext

    seg, k = 4096, 328
    f0 = k * 125e6 / seg  # on an FFT bin
    rng = np.random.default_rng(1)
    table = np.clip(np.round(rng.normal(0, 0.4, 2**14) * 2**13), -(2**13), 2**13 - 1).astype(int) & 0x3FFF
    m.write(ASG + 0x10000, table)
    m.write(ASG + 0x4, [2**13])
    m.write(ASG, [0x40 | 1])
    m.write(ASG, [0x1000 | 0x10 | 5])  # noise (random pointer), always triggered
    iq = lambda off: dsp(5, off)  # noqa: E731
    m.write(dsp(5, 0x0), [8])  # iq0 <- asg0
    m.write(iq(0x108), [round(f0 / 125e6 * 2**32)])
    m.write(iq(0x124), [(0x80 | 18) | (0x80 | 18) << 8])  # 2 stages, ~300 kHz
    m.write(iq(0x110), [2**10])
    m.write(iq(0x11C), [2**10])
    m.write(iq(0x10C), [1])  # output_signal = output_direct
    t = (np.floor(clock.now() / CYCLE) + 0.5 + np.arange(64 * seg)) * CYCLE
    x = m.asg[0].output(t)
    assert np.array_equal(x, m.asg[0].output(t))  # the same samples for every reader
    y = m.bus.signal(5, t, EvalContext(m.rng))
    assert y.std() > 1e-3  # noise passes the bandpass
    win = np.hanning(seg)
    X = np.fft.rfft(x.reshape(64, seg) * win, axis=1)[:, k]
    Y = np.fft.rfft(y.reshape(64, seg) * win, axis=1)[:, k]
    h_noise = np.sum(np.conj(X) * Y) / np.sum(np.abs(X) ** 2)
    # the same block's response to a tone at f0 (phasor view)
    m.write(ASG + 0x10000, np.round(8191 * np.sin(2 * np.pi * np.arange(2**14) / 2**14)).astype(int) & 0x3FFF)
    m.write(ASG + 0x4, [2**12])
    m.write(ASG + 0x10, [round(f0 * 2**30 / 125e6)])
    m.write(ASG, [0x40 | 1])
    m.write(ASG, [0x10 | 5])
    s_in = m.asg[0].spectrum()
    s_out = m.bus.spectrum(5, EvalContext(None, 0.0))
    a_in = s_in.amps[np.argmin(np.abs(s_in.freqs - f0))]
    a_out = s_out.amps[np.argmin(np.abs(s_out.freqs - f0))]
    h_tone = a_out / a_in
    assert abs(h_tone) > 0.3
    assert abs(h_noise - h_tone) < 0.1 * abs(h_tone)


def _volts(word):
    return ((word ^ 0x8000) - 0x8000) / 2**13


@pytest.mark.parametrize("interval", [1e-3, 0.05, 0.5, 2.0])
@pytest.mark.parametrize("start", [4.0, -4.0])
def test_pid_to_pid_loop_over_the_bus_relaxes_like_the_hardware(m, clock, interval, start):
    # test_lockbox's fake plant: pid1 (p=-1, i=-1 Hz) fed by a fast "piezo" pid2
    # (i at its 38.8 kHz maximum) that locks pid1's output to a setpoint; the
    # loop closes only over the DSP bus. Starting with the piezo on a rail, the
    # fast loop must leave the rail at once and then hold x = ival1 - setpoint
    # while pid1's integrator relaxes as exp(-2 pi t), whatever the time between
    # two register accesses (before: rail-to-rail bang-bang for >= 50 ms).
    setpoint, ival1_0 = -0.02, 0.6
    m.write(dsp(1, 0x0), [2])  # pid1 <- pid2
    m.write(dsp(1, 0x108), [-(2**12) & 0xFFFFFF])  # p = -1
    m.write(dsp(1, 0x10C), [-round(2**32 * 2 * np.pi * 8e-9) & 0xFFFFFF])  # i = -1 Hz
    m.write(dsp(2, 0x0), [1])  # pid2 <- pid1
    m.write(dsp(2, 0x10C), [2**23 - 1])
    m.write(dsp(2, 0x104), [round(setpoint * 2**13) & 0x3FFF])
    m.write(dsp(1, 0x100), [round(ival1_0 * 2**13) & 0xFFFF])
    m.write(dsp(2, 0x100), [round(start * 2**13 - (1 if start > 0 else 0)) & 0xFFFF])
    t = 0.0
    while t < 1.0 - 1e-9:
        clock.advance(interval if interval < 1.0 else 0.25)  # a 2 s gap is tested below
        t += interval if interval < 1.0 else 0.25
        m.advance()
    if interval >= 1.0:
        clock.advance(interval)
        t += interval
    ival1 = _volts(rd(m, dsp(1, 0x100)))
    x = m.signal("pid2")
    expected = setpoint + (ival1_0 - setpoint) * np.exp(-2 * np.pi * t)
    assert ival1 == pytest.approx(expected, abs=0.02 + 0.02 * abs(ival1_0 - setpoint))
    assert x == pytest.approx(ival1 - setpoint, abs=2e-3)  # the fast loop is locked, off the rails
    assert m.signal("pid1") == pytest.approx(setpoint, abs=2e-3)


@pytest.mark.parametrize("interval", [1e-4, 1e-3, 0.02, 0.3])
@pytest.mark.parametrize(("plant_p", "setpoint_codes", "expected_ival2"), [
    (+1, 0, 0.0),  # positive feedback, exactly at its equilibrium: the integer sum never moves
    (+1, -1, IVAL_MAX),  # one code off: runs away, away from the setpoint
    (+1, +1, -4.0),
    (-1, 0, 0.0),  # negative feedback: stays
    (-1, -3, 3 / 2**13),  # and settles where the plant's output meets the setpoint
    (-1, +2, -2 / 2**13),
])
def test_pid_to_pid_loop_keeps_the_sign_of_its_feedback(m, clock, interval, plant_p, setpoint_codes, expected_ival2):
    # test_lockbox.py::test_sleep_while_locked locks its fake plant after
    # test_calibrate left it at p=+1: a positive-feedback loop, which holds only
    # while the piezo PID's setpoint register is exactly the equilibrium.
    m.write(dsp(1, 0x0), [2])  # plant pid1 <- pid2, p = plant_p, i = 0
    m.write(dsp(1, 0x108), [(plant_p * 2**12) & 0xFFFFFF])
    m.write(dsp(2, 0x0), [1])  # piezo pid2 <- pid1, i at its maximum
    m.write(dsp(2, 0x10C), [2**23 - 1])
    m.write(dsp(2, 0x104), [setpoint_codes & 0x3FFF])
    for _ in range(60):  # the loop's time constant is microseconds: 60 accesses at any spacing
        clock.advance(interval)
        m.advance()
    assert _volts(rd(m, dsp(2, 0x100))) == pytest.approx(expected_ival2, abs=0.5 / 2**13)


class _BusyClock(ManualClock):
    """Every look at the clock finds ``tick`` more time gone, as on a machine busy
    with other work: the model's own computing is wall-clock time too."""

    def __init__(self, start: float, tick: float) -> None:
        super().__init__(start)
        self.tick = tick

    def _read(self) -> float:
        self.advance(self.tick)
        return super()._read()


def test_a_write_happens_at_one_instant_however_long_the_model_computes():
    # The model records the samples taken so far, then applies a write. If those
    # were two instants, the samples in between were computed later with the
    # written state: under load an ASG trigger rewrote up to a millisecond of
    # scope trace before it (a burst seen 70-90 us short on the scope).
    clock = _BusyClock(start=1.0, tick=2e-6)  # 250 cycles per look at the clock
    m = FpgaModel(seed=0, clock=clock)
    table = np.round(8191 * np.sin(2 * np.pi * np.arange(2**14) / 2**14)).astype(int) & 0x3FFF
    m.write(ASG + 0x10000, table)
    m.write(ASG + 0x4, [int(0.5 * 2**13)])
    m.write(ASG + 0x8, [2**30 - 1])
    m.write(ASG + 0xC, [2**28])  # start at 90 degrees: the first sample after the trigger is the crest
    m.write(ASG + 0x10, [round(10e3 * 2**30 / 125e6)])
    m.write(dsp(8, 0x0), [8])  # scope ch1 <- asg0
    m.write(SCOPE + 0x14, [1])
    m.write(SCOPE + 0x10, [2**13])
    m.write(SCOPE, [1 | 2])
    m.write(SCOPE + 4, [8])  # trigger on asg0
    clock.advance(2**14 * CYCLE)  # pre-trigger data
    m.write(ASG, [1])  # source 1 + software trigger (never reset before: output held at table[0] = 0)
    clock.advance(2**14 * CYCLE)
    assert rd(m, SCOPE) == 0  # done
    data = m.read(SCOPE + 0x10000, 2**14).astype(np.int64)
    data = np.where(data >= 2**13, data - 2**14, data) / 2**13
    trace = np.roll(data, -(rd(m, SCOPE + 0x1C) + 2**13 + 1))
    i0 = 2**14 - 2**13 - 1  # the trigger sample
    before, after = trace[:i0], trace[i0 + 1 :]
    assert np.abs(before).max() == 0.0, f"{np.count_nonzero(before)} samples before the trigger show the ASG"
    assert after[:100] == pytest.approx(0.5, abs=2e-3)  # the crest, right from the trigger
