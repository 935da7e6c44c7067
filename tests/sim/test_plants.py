"""Plants behind the simulated outputs (issue 13, part 1), through real sessions.

Each test starts ``Simulator(plant=...)`` and drives it with unmodified PyRPL
through ``rpl_noqt.connect(..., config=sim.pyrpl_config)``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import rpl_noqt
from rpl_noqt.sim import Simulator
from rpl_noqt.sim.plants import PLANTS, FabryPerot, LowPass, Resonator, make_plant


def _session(sim):
    return rpl_noqt.connect(sim.host, sim.port, ssh=False, config=sim.pyrpl_config)


def _na_errors(na, plant, acbandwidth=0, **setup):
    na.setup(average_per_point=1, input="in1", output_direct="out1", acbandwidth=acbandwidth, trace_average=1,
             running_state="stopped", **setup)
    measured = na.single()
    model = plant.transfer_function(na.frequencies)
    ratio = measured / model
    return float(np.max(np.abs(20 * np.log10(np.abs(ratio))))), float(np.max(np.abs(np.degrees(np.angle(ratio)))))


def test_registry_and_parameters():
    assert set(PLANTS) == {"fabry-perot", "low-pass", "resonator"}
    lp = make_plant("low-pass", cutoff=2e3)
    assert isinstance(lp, LowPass) and lp.cutoff == 2e3 and lp.gain == 1.0
    with pytest.raises(ValueError, match="unknown plant 'cavity'"):
        make_plant("cavity")
    with pytest.raises(ValueError, match=r"unknown low-pass parameter\(s\) \['cutof'\]"):
        make_plant("low-pass", cutof=1.0)
    with pytest.raises(ValueError, match="cutoff must be > 0"):
        LowPass(cutoff=0)
    with pytest.raises(ValueError, match="finite number"):
        FabryPerot(linewidth=float("nan"))
    with pytest.raises(ValueError, match="plant_params needs a plant"):
        Simulator(plant_params={"cutoff": 1.0})
    with Simulator() as sim:
        assert sim.plant is None and sim.pyrpl_config is None


def test_low_pass_network_analyzer_matches_the_model():
    with Simulator(plant="low-pass", seed=1) as sim, _session(sim) as s:
        db, deg = _na_errors(s.pyrpl.networkanalyzer, sim.plant, start_freq=100.0, stop_freq=100e3, points=31,
                             rbw=50.0, amplitude=0.2, logscale=True)
        print(f"low-pass: NA vs model within {db:.3f} dB, {deg:.3f} deg")
        assert db < 1.0 and deg < 5.0
        # the time domain: a DC level goes through with the DC gain
        s.rp.asg0.setup(waveform="dc", offset=0.4, trigger_source="immediately", output_direct="out1")
        assert s.rp.sampler.in1 == pytest.approx(0.4, abs=2e-3)
        sim.plant.gain = -0.5
        assert s.rp.sampler.in1 == pytest.approx(-0.2, abs=2e-3)


def test_resonator_network_analyzer_matches_the_model():
    with Simulator(plant="resonator", seed=1) as sim, _session(sim) as s:
        plant = sim.plant
        assert isinstance(plant, Resonator)
        width = plant.f0 / plant.q
        db, deg = _na_errors(s.pyrpl.networkanalyzer, plant, start_freq=plant.f0 - 5 * width,
                             stop_freq=plant.f0 + 5 * width, points=41, rbw=100.0, amplitude=0.2, logscale=False)
        print(f"resonator: NA vs model within {db:.3f} dB, {deg:.3f} deg")
        assert db < 1.0 and deg < 5.0
        # a lock-in driving out1 at f0 sees the response Q * dc_gain at -90 degrees: all of it in
        # the quadrature demodulated 90 degrees later (a tone A sin(theta + psi) reads A/2 cos(psi + phase))
        iq = s.rp.iq0
        drive = 0.1
        for phase, expected in ((90.0, drive * plant.q * plant.dc_gain / 2), (0.0, 0.0)):
            iq.setup(frequency=plant.f0, bandwidth=[1e3, 1e3], gain=0, phase=phase, acbandwidth=0,
                     amplitude=drive, input="in1", output_direct="out1", output_signal="quadrature",
                     quadrature_factor=1.0)
            assert s.rp.sampler.iq0 == pytest.approx(expected, abs=2e-3)


def test_pyrpl_lockbox_locks_the_low_pass():
    """PyRPL's Linear lockbox from the shipped config holds in1 at its setpoint through the low-pass."""
    with Simulator(plant="low-pass", seed=1) as sim, _session(sim) as s:
        lockbox = s.pyrpl.lockbox
        assert lockbox.classname == "Linear"
        assert lockbox.lock()
        time.sleep(0.3)
        assert lockbox.is_locked()
        assert s.rp.sampler.in1 == pytest.approx(lockbox.sequence[-1].setpoint, abs=3e-3)
        sim.plant.gain = 0.5  # the plant changes: the integrator follows
        time.sleep(0.3)
        assert s.rp.sampler.in1 == pytest.approx(lockbox.sequence[-1].setpoint, abs=3e-3)
        lockbox.unlock()
        assert s.rp.sampler.in1 == pytest.approx(0.0, abs=3e-3)


# -- fabry-perot ---------------------------------------------------------------------------------


def _quiet_cavity(**params):
    """A cavity without drift or acoustic noise (deterministic detuning)."""
    return Simulator(plant="fabry-perot", seed=1, plant_params={"drift": 0.0, "acoustic": 0.0, **params})


def test_fabry_perot_signals_are_pyrpls_model():
    """After PyRPL's own calibration, transmission, reflection and the IQ's PDH signal at a
    given detuning are what PyRPL's FabryPerot model expects there (PDH: FPPdh._pdh_normalized)."""
    with _quiet_cavity() as sim, _session(sim) as s:
        lockbox = s.pyrpl.lockbox
        assert type(lockbox).__name__ == "FabryPerot"
        assert lockbox._bandwidth_in_Hz == pytest.approx(sim.plant.hwhm_hz, rel=1e-6)
        assert lockbox._bandwidth_in_m == pytest.approx(sim.plant.hwhm_m, rel=1e-6)
        lockbox.calibrate_all()
        lockbox.unlock()  # piezo at 0 V: the detuning is the plant's static one
        for x in (-2.0, -1.0, -0.4, 0.0, 0.3, 1.0, 3.0):
            sim.plant.detuning = x
            for name in ("transmission", "reflection", "pdh"):
                inp = lockbox.inputs[name]
                span = inp.calibration_data.max - inp.calibration_data.min
                # the mean over many sampler reads: in2 also carries the 500 kHz PDH beat, which
                # single reads catch at random phases (as on a board)
                measured = inp.stats(t=0.3 if name == "reflection" else 0.01)[0]
                expected = inp.expected_signal(x)
                assert abs(measured - expected) < 0.05 * span, (name, x, measured, expected)


def test_fabry_perot_network_analyzer_matches_the_model():
    """out1 -> in1 on the side of the fringe: piezo pole times the fringe's slope.

    Half the maximum transmission sits on in1: the NA's input high-pass keeps that DC level
    from leaking through its demodulation (as on a board), PyRPL divides its response out."""
    with _quiet_cavity(detuning=-1.0) as sim, _session(sim) as s:
        s.pyrpl.lockbox.unlock()
        db, deg = _na_errors(s.pyrpl.networkanalyzer, sim.plant, start_freq=500.0, stop_freq=50e3, points=31,
                             rbw=50.0, amplitude=0.005, logscale=True, acbandwidth=50.0)
        print(f"fabry-perot: NA vs model within {db:.3f} dB, {deg:.3f} deg")
        assert db < 1.0 and deg < 5.0


def _lock(s, sim):
    lockbox = s.pyrpl.lockbox
    lockbox.calibrate_all()
    t0 = time.monotonic()
    assert lockbox.lock(), "PyRPL's lock sequence did not end locked"
    return lockbox, time.monotonic() - t0, lockbox.inputs.transmission.calibration_data.max


def test_lockbox_locks_the_cavity_through_drift_and_unlock_drifts_off():
    """calibrate_all() + lock(): locked, transmission near its maximum while the cavity drifts
    (10x the default drift speed for 6 s: the drift of 60 s); unlock() lets it drift off."""
    with Simulator(plant="fabry-perot", seed=2, plant_params={"drift_period": 6.0}) as sim, _session(sim) as s:
        lockbox, lock_time, t_max = _lock(s, sim)
        assert lock_time < 5
        worst, piezo = 1.0, []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.0:
            time.sleep(0.25)
            worst = min(worst, s.rp.sampler.in1 / t_max)
            piezo.append(s.rp.sampler.out1)
        print(f"locked in {lock_time:.2f} s; transmission >= {worst:.3f} of max over 6 s, "
              f"piezo moved {np.ptp(piezo):.3f} V")
        assert lockbox.is_locked()
        assert worst > 0.9
        assert np.ptp(piezo) > 0.05  # the lock did follow a drift
        lockbox.unlock(reset_offset=False)  # the piezo stays where it was: only the drift moves
        time.sleep(2.0)
        assert s.rp.sampler.in1 / t_max < 0.5
        assert not lockbox.is_locked()


def test_auto_relock_recovers_from_a_kick():
    with Simulator(plant="fabry-perot", seed=3) as sim, _session(sim) as s:
        lockbox, _, t_max = _lock(s, sim)
        lockbox.lockstatus_interval = 0.2
        lockbox.auto_lock = True
        step = sim.plant.kick()
        assert abs(step) > 1.5 * lockbox.inputs.pdh.mod_freq / sim.plant.hwhm_hz  # beyond the PDH capture range
        time.sleep(0.3)
        assert s.rp.sampler.in1 / t_max < 0.1  # the kick unlocked the cavity
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10 and not (lockbox.current_state == "lock_on" and lockbox.is_locked()):
            time.sleep(0.1)
        relock = time.monotonic() - t0
        print(f"relocked {relock:.2f} s after a kick of {step:+.1f} HWHM")
        assert relock < 10
        time.sleep(0.5)
        assert s.rp.sampler.in1 / t_max > 0.9
        lockbox.auto_lock = False


@pytest.mark.slow
def test_lock_holds_for_60_s_of_default_drift():
    with Simulator(plant="fabry-perot", seed=4) as sim, _session(sim) as s:
        lockbox, _, t_max = _lock(s, sim)
        worst = 1.0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60.0:
            time.sleep(1.0)
            worst = min(worst, s.rp.sampler.in1 / t_max)
        print(f"transmission >= {worst:.3f} of max over 60 s")
        assert lockbox.is_locked()
        assert worst > 0.95


def test_demo_lock_sweeps_calibrates_and_locks(tmp_path, capsys):
    from rpl_noqt.cli import build_parser

    args = build_parser().parse_args(["demo", "--lock", "--seconds", "1", "--plot", str(tmp_path / "lock.png")])
    assert args._run(args) == 0
    out = capsys.readouterr().out
    assert "calibration sweep: pdh" in out and "lock demo OK" in out
    assert (tmp_path / "lock.png").stat().st_size > 10_000


def test_sim_cli_serves_a_plant_and_its_config():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "rpl_noqt.cli", "sim", "--port", "0", "--plant", "low-pass",
                             "--plant-param", "cutoff=2000"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
    assert lines[0].startswith("rpl-noqt sim listening on 127.0.0.1:")
    assert "low-pass(cutoff=2000, gain=1)" in lines[1]
    assert "low_pass.yml" in lines[2]
    bad = subprocess.run([sys.executable, "-m", "rpl_noqt.cli", "sim", "--port", "0", "--plant", "low-pass",
                          "--plant-param", "cutof=1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown low-pass parameter(s) ['cutof']" in bad.stderr


def test_a_nested_phasor_view_linearises_around_the_last_operating_point():
    """While out1's tones are being computed, the plant's view of its own input (asked by
    a PID that drives out1 from in1) cannot know out1 yet: it linearises around the DC
    out1 had at the last instant, not around 0 V (which put the view of a cavity held
    0.3 V up the piezo 5.6 linewidths away from where it is)."""
    from rpl_noqt.sim import FpgaModel, ManualClock

    clock = ManualClock(1.0)
    model = FpgaModel(seed=0, clock=clock)
    plant = make_plant("fabry-perot", drift=0.0, acoustic=0.0)
    model.attach_plant(plant)
    dsp = 0x40300000
    for address, value in ((dsp + 0x0, 10), (dsp + 0x4, 1), (dsp + 0x108, round(0.05 * 2**12)),  # pid0: in1 -> out1, P only
                           (dsp + 0x100, round(0.3 * 2**13))):  # its integrator holds out1 near 0.3 V
        model.write_word(address, value)
    seen = []
    outer = type(plant)._input_spectrum_now

    def watched(self, channel):
        seen.append((bool(self.view_key()[2]), self._state()["x"]))
        return outer(self, channel)

    plant._input_spectrum_now = watched.__get__(plant)
    for _ in range(3):  # the first instant has no last DC yet (0 V); the next ones have
        clock.advance(1e-3)
        with model.lock, model.clock.held():
            plant._state()
            plant._input_spectrum(1, None)
    nested = [x for inner, x in seen if inner]
    full = [x for inner, x in seen if not inner]
    assert len(nested) >= 2 and full
    dc = plant.out_dc(1)
    assert 0.25 < dc < 0.35
    assert full[-1] == pytest.approx(plant.hwhm_per_volt * dc, abs=1e-6)
    # the last instant's DC; the first one's came from the 0 V view (in1 on resonance, 40 mV
    # more through the P gain), the next ones from views at the right operating point
    assert nested[-1] == pytest.approx(full[-1], abs=0.01)
    assert nested[0] == pytest.approx(0.0, abs=1e-9)  # no DC known yet at the first instant
