"""``low-pass``: a first-order low-pass from out1 to in1, for loop transfer functions.

``H(f) = gain / (1 + i f / cutoff)``; out2 -> in2 stays a cable.  A model
choice, not hardware: an RC filter or a slow actuator behind a DAC.  See
:class:`~rpl_noqt.sim.plants.base.LinearPlant` for what the time domain does.

Parameters (defaults): ``cutoff`` 1 kHz (-3 dB corner, Hz), ``gain`` 1.0 (DC
gain, V/V).

Its PyRPL configuration is a ``Linear`` lockbox that locks in1 to 0.3 V with
out1.  PyRPL's PID subtracts the setpoint from its input
(``error <= dat_i_filtered - set_sp``, ``red_pitaya_pid_block.v`` line 205 in
pyrpl-fpga/pyrpl), so a positive ``i`` integrates upwards while the input is
above the setpoint: PyRPL's lockbox closes a negative-feedback loop only when
``output.dc_gain`` has the opposite sign of the plant's real gain (PyRPL's own
``test_lockbox`` plant is inverting for the same reason).  The shipped config
therefore says ``dc_gain: -gain``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import LinearPlant, check_number


class LowPass(LinearPlant):
    name = "low-pass"
    defaults = {"cutoff": 1e3, "gain": 1.0}

    def _validate(self, values: dict[str, float]) -> dict[str, float]:
        return {
            "cutoff": check_number("cutoff", values["cutoff"], low=0.0, high=62.5e6, low_open=True),
            "gain": check_number("gain", values["gain"], low=-100.0, high=100.0),
        }

    def response(self, freqs: np.ndarray) -> np.ndarray:
        freqs = np.asarray(freqs, dtype=float)
        return self.gain / (1.0 + 1j * freqs / self.cutoff)

    def pyrpl_config(self) -> dict[str, Any]:
        return self.linear_lockbox_config(setpoint=0.3, unity_gain_frequency=min(100.0, self.cutoff / 10))
