"""Allowed values of every board setting the plugins expose, and their validation.

The lists are constants (PyRPL 0.9.9.1, the version rpl-noqt pins) so that the
plugin classes can declare their settings without importing PyRPL while
PyMoDAQ lists its plugins; ``tests/plugins/test_hardware.py`` checks them
against a live PyRPL. Every check raises :class:`SettingError` naming the
setting, the value and what is allowed, *before* anything is written to a board.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = (
    "ASG_MODULES",
    "ASG_WAVEFORMS",
    "DSP_SIGNALS",
    "INPUT_RANGES",
    "IQ_MODULES",
    "MAX_FREQUENCY",
    "OUTPUT_DIRECTS",
    "PID_MODULES",
    "SAMPLER_SIGNALS",
    "SCOPE_CHANNELS",
    "SCOPE_DECIMATIONS",
    "SCOPE_DURATIONS",
    "SCOPE_SAMPLES",
    "SCOPE_TRIGGER_SOURCES",
    "SettingError",
    "check_choice",
    "check_number",
    "nearest",
)

#: DSP bus signals by name (``pyrpl.hardware_modules.dsp.DSP_INPUTS``).
DSP_SIGNALS: tuple[str, ...] = (
    "in1", "in2", "out1", "out2", "iq0", "iq1", "iq2", "iq2_2",
    "pid0", "pid1", "pid2", "asg0", "asg1", "trig", "iir", "off",
)
#: Signals the sampler can read (every DSP signal but "off").
SAMPLER_SIGNALS: tuple[str, ...] = tuple(s for s in DSP_SIGNALS if s != "off")
OUTPUT_DIRECTS: tuple[str, ...] = ("off", "out1", "out2", "both")
ASG_MODULES: tuple[str, ...] = ("asg0", "asg1")
PID_MODULES: tuple[str, ...] = ("pid0", "pid1", "pid2")
IQ_MODULES: tuple[str, ...] = ("iq0", "iq1", "iq2")
ASG_WAVEFORMS: tuple[str, ...] = ("sin", "cos", "ramp", "halframp", "square", "dc", "noise")

SCOPE_SAMPLES = 2**14
SCOPE_DECIMATIONS: tuple[int, ...] = tuple(2**n for n in range(17))
#: One curve lasts SCOPE_SAMPLES samples of 8 ns x decimation.
SCOPE_DURATIONS: tuple[float, ...] = tuple(d * SCOPE_SAMPLES * 8e-9 for d in SCOPE_DECIMATIONS)
#: "off" is left out: the scope would never trigger.
SCOPE_TRIGGER_SOURCES: tuple[str, ...] = (
    "immediately", "ch1_positive_edge", "ch1_negative_edge", "ch2_positive_edge", "ch2_negative_edge",
    "ext_positive_edge", "ext_negative_edge", "asg0", "asg1", "dsp",
)
SCOPE_CHANNELS: tuple[str, ...] = ("ch1", "ch2", "both")

#: Input jumper position -> volts at the connector per volt at the ADC.
INPUT_RANGES: dict[str, float] = {"LV": 1.0, "HV": 20.0}

#: Largest frequency the DDS generators and the IQ modules produce (Nyquist of 125 MHz).
MAX_FREQUENCY = 62.5e6


class SettingError(ValueError):
    """A setting's value is not allowed; raised before the board is touched."""


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; raise :class:`SettingError` otherwise."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise SettingError(f"{name} = {value!r} is not allowed; allowed values: {', '.join(map(repr, allowed))}")
    return value


def check_number(name: str, value: Any, low: float, high: float, unit: str = "") -> float:
    """Return ``float(value)`` if it is a finite number in [low, high]; raise :class:`SettingError` otherwise."""
    unit = f" {unit}" if unit else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SettingError(f"{name} = {value!r} is not a finite number; allowed: {low:g} to {high:g}{unit}")
    if not low <= value <= high:
        raise SettingError(f"{name} = {value!r}{unit} is out of range; allowed: {low:g} to {high:g}{unit}")
    return float(value)


def nearest(name: str, value: Any, allowed: Iterable[float], rel: float = 1e-6) -> float:
    """The member of ``allowed`` equal to ``value`` within ``rel``; :class:`SettingError` if none is.

    For float lists (scope durations) where a value read from a settings tree
    may differ from the constant in the last digits.
    """
    allowed = tuple(allowed)
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        for candidate in allowed:
            if math.isclose(float(value), candidate, rel_tol=rel):
                return candidate
    raise SettingError(f"{name} = {value!r} is not allowed; allowed values: {', '.join(f'{a:g}' for a in allowed)}")
