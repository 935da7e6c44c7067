"""The analog world outside the FPGA: a cable from out1/out2 back to in1/in2,
and the board's analog front end (input range jumpers, roll-off near Nyquist).

On a bench one connects OUT1 to IN1 with a BNC cable to test PyRPL; the
simulator does the same by default (gain 1, no offset, no noise, no delay).
Each input is ``gain * out(t - delay) + offset + noise + injected tones``,
saturated to the ADC range.  Tests change these settings from any thread
through :class:`AnalogFrontend` (the model lock makes them atomic).

Front end (STEMlab 125-14; the FPGA sees 14-bit codes, PyRPL converts them
as ``code / 2**13`` volts, i.e. it assumes the inputs' LV range):

* **Input range** (a jumper per input on the board): ``"LV"`` +-1 V full
  scale (the default, and what PyRPL assumes: it has no HV setting) or
  ``"HV"`` +-20 V full scale, a 1:20 divider in front of the ADC.  The model
  divides the voltage at the connector (cable or plant, offset, injected
  tones and the cable's noise) by ``INPUT_RANGES[range]`` before the ADC
  saturates, so with HV PyRPL reads 1/20 of the voltage.  The divider is
  nominal: a real board's HV gain differs by a few percent until calibrated
  (Red Pitaya's calibration EEPROM; PyRPL does not read it).
* **Roll-off** (off by default, :class:`Rolloff`; ``FpgaModel.set_rolloff``):
  the DAC's zero-order hold ``sinc(f / fs) exp(-i pi f / fs)`` (fs = 125 MHz:
  -3.9 dB and -90 deg at Nyquist), a reconstruction low-pass after it and an
  anti-alias low-pass before the ADC.  Red Pitaya specifies 50 MHz (-3 dB)
  of bandwidth for the inputs and for the outputs (STEMlab 125-14 data
  sheet); the filter shape is a model choice: second-order Butterworth, the
  DAC's corner placed so that sinc times filter is -3 dB at
  ``dac_bandwidth``.  A signal out -> cable -> in sees ``H_dac(f) H_adc(f)``;
  an injected tone and a plant's signal (at the input connector) see
  ``H_adc(f)``.  It is exact for every steady-state tone (the phasor view,
  and the time domain gets the difference ``(H - 1)`` of each tone added);
  transients and noise are not filtered, and the images of the zero-order
  hold above Nyquist and aliasing are left out (no signal in the model is
  above 62.5 MHz).  Off, the front end is flat and delay-free, as the model
  was before: existing expectations keep their values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .signals import FPGA_CLOCK_HZ, Spectrum

#: full scale (V at the connector for a full-scale code) of the input range jumpers
INPUT_RANGES = {"LV": 1.0, "HV": 20.0}


def _butterworth2(f: np.ndarray, corner: float) -> np.ndarray:
    """Second-order Butterworth low-pass ``1 / (s**2 + sqrt(2) s + 1)``, ``s = i f / corner``."""
    if not math.isfinite(corner):
        return np.ones(np.shape(f), dtype=complex)
    s = 1j * np.asarray(f, dtype=float) / corner
    return 1.0 / (s * s + math.sqrt(2.0) * s + 1.0)


@dataclass(frozen=True)
class Rolloff:
    """The analog bandwidth of the DAC and ADC paths (``-3 dB`` frequencies, Hz)."""

    adc_bandwidth: float = 50e6
    dac_bandwidth: float = 50e6

    def __post_init__(self) -> None:
        for name in ("adc_bandwidth", "dac_bandwidth"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or not 1e3 <= value <= 1e9:
                raise ValueError(f"rolloff {name} must be between 1e3 and 1e9 Hz, got {value!r}")

    @property
    def dac_corner(self) -> float:
        """Corner of the reconstruction filter: ``|sinc * filter| = 1/sqrt(2)`` at ``dac_bandwidth``
        (infinite when the hold alone already rolls off that much)."""
        zoh = float(np.sinc(self.dac_bandwidth / FPGA_CLOCK_HZ))
        need = (1 / math.sqrt(2)) / zoh
        if need >= 1.0:
            return math.inf
        return self.dac_bandwidth / (1 / need**2 - 1) ** 0.25

    def dac(self, f: np.ndarray) -> np.ndarray:
        """DAC output over DAC code: zero-order hold (with its half-cycle delay) and reconstruction filter."""
        f = np.asarray(f, dtype=float)
        return np.sinc(f / FPGA_CLOCK_HZ) * np.exp(-1j * np.pi * f / FPGA_CLOCK_HZ) * _butterworth2(f, self.dac_corner)

    def adc(self, f: np.ndarray) -> np.ndarray:
        """The anti-alias filter in front of the ADC."""
        return _butterworth2(f, self.adc_bandwidth)


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
        self.input_range: dict[int, str] = {1: "LV", 2: "LV"}
        self.rolloff: Rolloff | None = None

    def divider(self, channel: int) -> float:
        """Connector volts per ADC volt: 1 (LV) or 20 (HV)."""
        return INPUT_RANGES[self.input_range[channel]]

    def set_input_range(self, channel: int, value: str) -> None:
        _check_channel(channel)
        if value not in INPUT_RANGES:
            raise ValueError(f"input range must be one of {sorted(INPUT_RANGES)}, got {value!r}")
        self.input_range[channel] = value

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
