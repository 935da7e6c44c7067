"""An arbitrary signal generator (asg0/asg1), as the ASG actuator uses it.

The actuator moves the frequency; amplitude, offset, waveform and output are
settings. Outputs are not affected by the input jumpers, so no scaling here.
"""

from __future__ import annotations

from typing import Any

from .driver import ModuleDriver
from .limits import check_register
from .options import ASG_MODULES, ASG_WAVEFORMS, OUTPUT_DIRECTS, SettingError, check_choice

__all__ = ("AsgDriver", "ASG_SETTINGS")

#: Settings :meth:`AsgDriver.configure` accepts.
ASG_SETTINGS = ("waveform", "amplitude", "offset", "output_direct", "enabled")


class AsgDriver(ModuleDriver):
    """One generator of the board: ``AsgDriver(board, "asg0")``."""

    kind = "ASG"
    choices = ASG_MODULES

    def read_settings(self) -> dict[str, Any]:
        """Frequency (Hz), amplitude and offset (V), waveform, output and whether it runs, from the board."""
        a = self.module
        with self.board.lock:
            return {
                "frequency": float(a.frequency),
                "waveform": a.waveform,
                "amplitude": float(a.amplitude),
                "offset": float(a.offset),
                "output_direct": a.output_direct,
                "enabled": a.trigger_source != "off",
            }

    def frequency(self) -> float:
        """The frequency the generator runs at (Hz), read from the board."""
        return float(self.module.frequency)

    def set_frequency(self, frequency: float) -> float:
        """Set the frequency; returns the one the board took (quantised to about 0.12 Hz)."""
        a = self.module
        value = check_register("frequency", frequency, a, "frequency", "Hz")
        with self.board.lock:
            a.frequency = value
            return float(a.frequency)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Validate then apply a subset of :data:`ASG_SETTINGS`; returns the read-back settings.

        ``enabled=False`` stops the waveform (trigger source "off"); True runs it
        continuously ("immediately").
        """
        unknown = set(changes) - set(ASG_SETTINGS)
        if unknown:
            raise SettingError(f"unknown ASG setting(s) {sorted(unknown)}; allowed: {', '.join(ASG_SETTINGS)}")
        a = self.module
        setup: dict[str, Any] = {}
        if "waveform" in changes:
            setup["waveform"] = check_choice("waveform", changes["waveform"], ASG_WAVEFORMS)
        if "amplitude" in changes:
            setup["amplitude"] = check_register("amplitude", changes["amplitude"], a, "amplitude", "V")
        if "offset" in changes:
            setup["offset"] = check_register("offset", changes["offset"], a, "offset", "V")
        if "output_direct" in changes:
            setup["output_direct"] = check_choice("output_direct", changes["output_direct"], OUTPUT_DIRECTS)
        if "enabled" in changes:
            enabled = check_choice("enabled", changes["enabled"], (True, False))
            setup["trigger_source"] = "immediately" if enabled else "off"
        with self.board.lock:
            if setup:
                a.setup(**setup)  # PyRPL's sequence: stop, reset, write, restart
        return self.read_settings()
