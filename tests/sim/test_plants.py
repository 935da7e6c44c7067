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


def _na_errors(na, plant, **setup):
    na.setup(average_per_point=1, input="in1", output_direct="out1", acbandwidth=0, trace_average=1,
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
