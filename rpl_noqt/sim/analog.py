"""The analog world outside the FPGA: a cable from out1/out2 back to in1/in2.

On a bench one connects OUT1 to IN1 with a BNC cable to test PyRPL; the
simulator does the same by default (gain 1, no offset, no noise, no delay).
Each input is ``gain * out(t - delay) + offset + noise + injected tones``,
saturated to the ADC range.  Tests change these settings from any thread
through :class:`AnalogFrontend` (the model lock makes them atomic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .signals import Spectrum


@dataclass(frozen=True)
class Loopback:
    """Cable model for one input channel."""

    gain: float = 1.0
    offset: float = 0.0
    noise: float = 0.0  # rms volts, white over the full band
    delay: float = 0.0  # seconds

    def __post_init__(self) -> None:
        for name in ("gain", "offset", "noise", "delay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"loopback {name} must be a finite number, got {value!r}")
        if self.noise < 0:
            raise ValueError(f"loopback noise must be >= 0 V rms, got {self.noise!r}")
        if not 0 <= self.delay <= 1.0:
            raise ValueError(f"loopback delay must be between 0 and 1 s, got {self.delay!r}")


@dataclass(frozen=True)
class Tone:
    """An injected sine ``amplitude * sin(2 pi f t + phase)`` on one input.

    ``coefficient`` is the phasor ``c`` with ``x(t) = Re(c exp(2j pi f t))``
    in absolute model time; it already contains the phase reference.
    """

    channel: int
    frequency: float
    amplitude: float
    phase_deg: float
    coefficient: complex


def _check_channel(channel: int) -> int:
    if channel not in (1, 2):
        raise ValueError(f"input channel must be 1 or 2, got {channel!r}")
    return channel


class AnalogFrontend:
    """Loopback settings and injected tones of in1/in2 (not thread-safe by itself:
    :class:`~rpl_noqt.sim.fpga.FpgaModel` wraps every call in its lock)."""

    def __init__(self) -> None:
        self.loopback: dict[int, Loopback] = {1: Loopback(), 2: Loopback()}
        self.tones: dict[int, Tone] = {}
        self._next_tone = 1

    def set_loopback(self, channel: int, **settings: float) -> Loopback:
        """Replace some fields of the cable model of ``channel``."""
        _check_channel(channel)
        unknown = set(settings) - {"gain", "offset", "noise", "delay"}
        if unknown:
            raise ValueError(f"unknown loopback setting(s) {sorted(unknown)}; allowed: gain, offset, noise, delay")
        current = self.loopback[channel]
        values = {k: getattr(current, k) for k in ("gain", "offset", "noise", "delay")}
        values.update(settings)
        self.loopback[channel] = Loopback(**values)
        return self.loopback[channel]

    def add_tone(self, channel: int, frequency: float, amplitude: float, phase_deg: float, phase_origin: float) -> int:
        """Register a tone; ``phase_origin`` (rad) is the phase of the reference at t=0."""
        _check_channel(channel)
        for name, value in (("frequency", frequency), ("amplitude", amplitude), ("phase_deg", phase_deg)):
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"tone {name} must be a finite number, got {value!r}")
        if not 0 <= frequency < 62.5e6:
            raise ValueError(f"tone frequency must be in [0, 62.5e6) Hz, got {frequency!r}")
        if amplitude < 0:
            raise ValueError(f"tone amplitude must be >= 0 V, got {amplitude!r}")
        phase = math.radians(phase_deg) + phase_origin
        coefficient = -1j * amplitude * complex(math.cos(phase), math.sin(phase))
        tone_id = self._next_tone
        self._next_tone += 1
        self.tones[tone_id] = Tone(channel, float(frequency), float(amplitude), float(phase_deg), coefficient)
        return tone_id

    def remove_tone(self, tone_id: int | None = None) -> None:
        """Remove one tone, or all of them when ``tone_id`` is None."""
        if tone_id is None:
            self.tones.clear()
        elif self.tones.pop(tone_id, None) is None:
            raise ValueError(f"no injected tone with id {tone_id!r}; existing: {sorted(self.tones)}")

    def tone_spectrum(self, channel: int) -> Spectrum:
        tones = [t for t in self.tones.values() if t.channel == channel]
        if not tones:
            return Spectrum(noise=self.loopback[channel].noise)
        return Spectrum(
            dc=0.0,
            freqs=np.array([t.frequency for t in tones]),
            amps=np.array([t.coefficient for t in tones], dtype=complex),
            noise=self.loopback[channel].noise,
        )
