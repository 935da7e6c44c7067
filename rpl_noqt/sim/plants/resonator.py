"""``resonator``: one mechanical mode from out1 to in1, for IQ and network-analyzer work.

``H(f) = dc_gain * f0^2 / (f0^2 - f^2 + i f f0 / Q)``: the displacement
response of a damped harmonic oscillator driven by a force proportional to
out1 and read out linearly on in1 (a model choice: a piezo-driven membrane or
cantilever with an interferometric readout).  At ``f0`` the response is
``-i Q dc_gain`` (-90 degrees); its full width at half maximum (power) is
``f0 / Q``.  out2 -> in2 stays a cable.  See
:class:`~rpl_noqt.sim.plants.base.LinearPlant` for the time domain: a drive's
steady state is exact, ring-downs are not modelled.

Parameters (defaults): ``f0`` 100 kHz, ``q`` 100 (quality factor), ``dc_gain``
0.01 V/V (so the peak gain ``Q dc_gain`` is 1).

Its PyRPL configuration: a ``Linear`` lockbox that holds in1's DC level at
``dc_gain / 2`` with out1 (the quasi-static response; the sign of
``output.dc_gain`` is inverted for PyRPL's PID, see :mod:`.lowpass`).  For
the mode itself use an IQ module or the network analyzer (``output_direct``
out1, input in1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import LinearPlant, check_number


class Resonator(LinearPlant):
    name = "resonator"
    defaults = {"f0": 100e3, "q": 100.0, "dc_gain": 0.01}

    def _validate(self, values: dict[str, float]) -> dict[str, float]:
        return {
            "f0": check_number("f0", values["f0"], low=0.0, high=62.5e6, low_open=True),
            "q": check_number("q", values["q"], low=0.5, high=1e7),
            "dc_gain": check_number("dc_gain", values["dc_gain"], low=-100.0, high=100.0),
        }

    def response(self, freqs: np.ndarray) -> np.ndarray:
        f = np.asarray(freqs, dtype=float)
        f0 = self.f0
        return self.dc_gain * f0**2 / (f0**2 - f**2 + 1j * f * f0 / self.q)

    def pyrpl_config(self) -> dict[str, Any]:
        return self.linear_lockbox_config(setpoint=0.5 * self.dc_gain, unity_gain_frequency=100.0)
