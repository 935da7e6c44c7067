"""An IQ module (iq0-2) used as a lock-in amplifier, as the IQ viewer uses it.

The module demodulates its input at ``frequency`` (quadrature filters of
``bandwidth``); a reading integrates the demodulated quadratures over
``integration_time`` with the FPGA's network-analyzer accumulator, which gives
the complex amplitude ``X + iY`` of the input's component at that frequency,
in volts (at the connector for in1/in2: HV jumper x20). Optionally the module
also drives an excitation of ``amplitude`` at the same frequency on an output.

Phases include the module's 3-cycle pipeline (3 x 8 ns x f x 360 degrees).
"""

from __future__ import annotations

import math
from typing import Any

from .driver import ModuleDriver
from .limits import check_register
from .options import DSP_SIGNALS, IQ_MODULES, OUTPUT_DIRECTS, SettingError, check_choice, check_number

__all__ = ("IQ_SETTINGS", "IqDriver", "polar")

#: Settings :meth:`IqDriver.configure` accepts.
IQ_SETTINGS = ("input", "frequency", "bandwidth", "amplitude", "output_direct")


class IqDriver(ModuleDriver):
    """One IQ module of the board: ``IqDriver(board, "iq0")``."""

    kind = "IQ"
    choices = IQ_MODULES

    def read_settings(self) -> dict[str, Any]:
        """Input, frequency (Hz), bandwidth (Hz, first filter stage), excitation, from the board."""
        q = self.module
        with self.board.lock:
            return {
                "input": q.input,
                "frequency": float(q.frequency),
                "bandwidth": float(q.bandwidth[0]),
                "amplitude": float(q.amplitude),
                "output_direct": q.output_direct,
            }

    def bandwidth_limits(self) -> tuple[float, float]:
        """Smallest and largest quadrature filter bandwidth the FPGA offers (Hz)."""
        positive = [float(b) for b in self.module.bandwidths if b > 0]
        return min(positive), max(positive)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Validate then apply a subset of :data:`IQ_SETTINGS`; returns the read-back settings.

        The module is set up as a lock-in: gain 0 (no bandpass output), no AC
        filter, both quadrature filter stages at ``bandwidth`` (rounded by the
        FPGA to the nearest available value, read back).
        """
        unknown = set(changes) - set(IQ_SETTINGS)
        if unknown:
            raise SettingError(f"unknown IQ setting(s) {sorted(unknown)}; allowed: {', '.join(IQ_SETTINGS)}")
        q = self.module
        values: dict[str, Any] = {}
        if "input" in changes:
            values["input"] = check_choice("input", changes["input"], DSP_SIGNALS)
        if "frequency" in changes:
            values["frequency"] = check_register("frequency", changes["frequency"], q, "frequency", "Hz")
        if "bandwidth" in changes:
            low, high = self.bandwidth_limits()
            values["bandwidth"] = [check_number("bandwidth", changes["bandwidth"], low, high, "Hz")] * 2
        if "amplitude" in changes:
            values["amplitude"] = check_register("amplitude", changes["amplitude"], q, "amplitude", "V")
        if "output_direct" in changes:
            values["output_direct"] = check_choice("output_direct", changes["output_direct"], OUTPUT_DIRECTS)
        with self.board.lock:
            if values:
                q.setup(gain=0.0, acbandwidth=0, output_signal="quadrature", **values)
        return self.read_settings()

    def measure(self, integration_time: float) -> complex:
        """Demodulate for ``integration_time`` s and return ``X + iY`` (V) at the module's frequency.

        One ``lockin_xy()`` of the module (rpl-noqt's reading of the IQ
        accumulator, in-process or through a board server alike): it waits
        two filter time constants (settling) before it sums, without holding
        the board meanwhile. in1/in2 are then scaled by this board's input range.
        """
        check_number("integration_time", integration_time, 1e-6, 10.0, "s")
        q = self.module
        x, y = (float(v) for v in q.lockin_xy(integration_time))
        return complex(x, y) * self.board.scale(q.input)


def polar(z: complex) -> tuple[float, float]:
    """Amplitude (V) and phase (degrees) of ``z``."""
    return abs(z), math.degrees(math.atan2(z.imag, z.real))
