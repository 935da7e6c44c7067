"""A PID controller (pid0-2), as the PID actuator uses it.

The actuator moves the setpoint. The setpoint is in volts at the connector of
the PID's input: behind an HV jumper (in1/in2) the board's setpoint register
holds 1/20 of it. PyRPL's error signal is ``input - setpoint``, so a loop
through a non-inverting cable needs a negative integral gain.
"""

from __future__ import annotations

from typing import Any

from .driver import ModuleDriver
from .limits import check_register
from .options import DSP_SIGNALS, OUTPUT_DIRECTS, PID_MODULES, SettingError, check_choice

__all__ = ("PidDriver", "PID_SETTINGS")

#: Settings :meth:`PidDriver.configure` accepts.
PID_SETTINGS = ("p", "i", "input", "output_direct")


class PidDriver(ModuleDriver):
    """One PID of the board: ``PidDriver(board, "pid0")``."""

    kind = "PID"
    choices = PID_MODULES

    def read_settings(self) -> dict[str, Any]:
        """Setpoint (V at the input's connector), gains, input, output and integrator value, from the board."""
        p = self.module
        with self.board.lock:
            source = p.input
            return {
                "setpoint": float(p.setpoint) * self.board.scale(source),
                "p": float(p.p),
                "i": float(p.i),
                "input": source,
                "output_direct": p.output_direct,
                "ival": float(p.ival),
            }

    def setpoint(self) -> float:
        """The setpoint (V at the input's connector), read from the board."""
        p = self.module
        with self.board.lock:
            return float(p.setpoint) * self.board.scale(p.input)

    def set_setpoint(self, volts: float) -> float:
        """Set the setpoint (V at the input's connector); returns what the board took."""
        p = self.module
        with self.board.lock:
            k = self.board.scale(p.input)
            value = check_register("setpoint", volts, p, "setpoint", "V", scale=k)
            p.setpoint = value / k
            return float(p.setpoint) * k

    def reset_integrator(self) -> None:
        """Set the integrator to 0 V (the output restarts from the proportional part)."""
        self.module.ival = 0.0

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Validate then apply a subset of :data:`PID_SETTINGS`; returns the read-back settings.

        The setpoint register is kept when the input changes, so the setpoint
        read back in volts changes if the new input has another range.
        """
        unknown = set(changes) - set(PID_SETTINGS)
        if unknown:
            raise SettingError(f"unknown PID setting(s) {sorted(unknown)}; allowed: {', '.join(PID_SETTINGS)}")
        p = self.module
        values: dict[str, Any] = {}
        if "p" in changes:
            values["p"] = check_register("p", changes["p"], p, "p")
        if "i" in changes:
            values["i"] = check_register("i", changes["i"], p, "i", "Hz")
        if "input" in changes:
            values["input"] = check_choice("input", changes["input"], DSP_SIGNALS)
        if "output_direct" in changes:
            values["output_direct"] = check_choice("output_direct", changes["output_direct"], OUTPUT_DIRECTS)
        with self.board.lock:
            for name, value in values.items():
                setattr(p, name, value)
        return self.read_settings()
