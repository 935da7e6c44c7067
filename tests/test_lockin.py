"""``Iq.lockin_xy()``: the lock-in reading rpl-noqt adds to PyRPL's IQ module (rpl_noqt/lockin.py)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import rpl_noqt


def _setup(iq) -> float:
    iq.setup(gain=0.0, acbandwidth=0, output_signal="quadrature", input="in2", frequency=20e3,
             bandwidth=[500, 500], amplitude=0.3, output_direct="out1", phase=10.0)
    return float(iq.frequency)


def test_lockin_xy_reads_a_tone_and_leaves_the_setup_as_it_was(sim, session):
    sim.model.set_loopback(2, gain=0.0)
    iq = session.rp.iq0
    frequency = _setup(iq)
    before = iq.setup_attributes
    sim.model.inject_tone(2, frequency, 0.2, phase_deg=40.0, reference="iq0")
    xy = iq.lockin_xy(0.01)
    assert isinstance(xy, np.ndarray) and xy.dtype == np.float64 and xy.shape == (2,)
    pipeline = 360 * frequency * 3 * 8e-9
    assert math.hypot(*xy) == pytest.approx(0.2, rel=0.01)
    assert math.degrees(math.atan2(xy[1], xy[0])) == pytest.approx(40.0 + 10.0 - pipeline, abs=0.5)  # + phase
    assert iq.setup_attributes == before  # excitation still on, phase, output signal: untouched
    assert any(e.target.endswith("Iq.lockin_xy") for e in rpl_noqt.patch_record())


@pytest.mark.parametrize("value, error", [(0.0, ValueError), (11.0, ValueError), (float("nan"), ValueError),
                                          ("0.1", TypeError), (True, TypeError)])
def test_lockin_xy_refuses_an_integration_time_out_of_range(session, value, error):
    with pytest.raises(error, match="integration_time"):
        session.rp.iq1.lockin_xy(value)


def test_readings_of_one_module_from_two_threads_queue_and_both_are_right(sim, session):
    sim.model.set_loopback(2, gain=0.0)
    iq = session.rp.iq0
    frequency = _setup(iq)
    sim.model.inject_tone(2, frequency, 0.2, phase_deg=40.0, reference="iq0")
    results: list[float] = []

    def read() -> None:
        results.extend(math.hypot(*iq.lockin_xy(0.02)) for _ in range(3))

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6 and all(r == pytest.approx(0.2, rel=0.01) for r in results), results
