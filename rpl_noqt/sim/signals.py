"""Number formats and the phasor representation shared by the FPGA blocks.

The FPGA moves 14-bit two's-complement samples between blocks: full scale
(code 8191) is +1 V and code -8192 is -1 V.  Internally the simulator works in
volts (float64) and converts to codes only where a register or a scope buffer
exposes them, so rounding happens at the same places as on the board.

:class:`Spectrum` is the steady-state ("phasor") view of a signal: a DC value,
a list of tones and a white-noise level.  The IQ demodulator and the network
analyzer work on this view because it gives their low-pass filtered quadratures
exactly and cheaply, where a time-domain simulation would need millions of
125 MHz samples per point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: FPGA clock (Hz); every register counting "cycles" counts this clock.
FPGA_CLOCK_HZ = 125e6
#: one FPGA clock cycle (s)
CYCLE = 1.0 / FPGA_CLOCK_HZ
#: codes per volt of the 14-bit signal bus
CODES_PER_VOLT = 2**13
#: the largest positive sample (V), the smallest is -1.0
V_MAX = (2**13 - 1) / 2**13


def sat_volts(v: np.ndarray | float) -> np.ndarray:
    """Saturate like the 14-bit bus: [-1, 8191/8192] V."""
    return np.clip(v, -1.0, V_MAX)


def volts_to_code(v: np.ndarray | float) -> np.ndarray:
    """Volts -> unsigned 14-bit register code (two's complement in 14 bits)."""
    c = np.clip(np.round(np.asarray(v, dtype=float) * CODES_PER_VOLT), -(2**13), 2**13 - 1)
    return (c.astype(np.int64) & 0x3FFF).astype(np.uint32)


def signed(value: int, bits: int) -> int:
    """Interpret the low ``bits`` of ``value`` as two's complement."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def to_unsigned(value: int, bits: int) -> int:
    """Two's complement encoding of ``value`` in ``bits`` bits."""
    return int(value) & ((1 << bits) - 1)


def code_to_volts(code: int, bits: int = 14) -> float:
    """Signed ``bits``-bit code -> volts (2**13 codes per volt)."""
    return signed(code, bits) / CODES_PER_VOLT


@dataclass
class Spectrum:
    """Steady-state description ``x(t) = dc + sum Re(amp_k exp(2j pi f_k t)) + noise``.

    ``t`` is absolute model time (s).  ``noise`` is the rms of white noise over
    the full 62.5 MHz band.
    """

    dc: float = 0.0
    freqs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    amps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=complex))
    noise: float = 0.0

    @classmethod
    def empty(cls) -> Spectrum:
        return cls()

    def scaled(self, gain: complex | float) -> Spectrum:
        """Multiply by a real gain (complex gains rotate tones, DC uses the real part)."""
        return Spectrum(
            dc=float(np.real(gain)) * self.dc,
            freqs=self.freqs.copy(),
            amps=self.amps * gain,
            noise=abs(gain) * self.noise,
        )

    def delayed(self, delay: float) -> Spectrum:
        """Delay by ``delay`` seconds (phase lag on every tone)."""
        if delay == 0 or len(self.freqs) == 0:
            return self
        return Spectrum(
            self.dc, self.freqs.copy(), self.amps * np.exp(-2j * np.pi * self.freqs * delay), self.noise
        )

    def filtered(self, response) -> Spectrum:  # response: callable f -> complex
        """Apply a linear filter given as a complex frequency response."""
        dc_gain = complex(response(np.array([0.0]))[0])
        amps = self.amps * response(self.freqs) if len(self.freqs) else self.amps
        return Spectrum(self.dc * dc_gain.real, self.freqs.copy(), amps, self.noise)

    def __add__(self, other: Spectrum) -> Spectrum:
        return Spectrum(
            self.dc + other.dc,
            np.concatenate([self.freqs, other.freqs]),
            np.concatenate([self.amps, other.amps]),
            float(np.hypot(self.noise, other.noise)),
        )

    def evaluate(self, t: np.ndarray, rng: np.random.Generator | None = None, noise_scale: float = 1.0) -> np.ndarray:
        """Time-domain samples at times ``t`` (noise drawn from ``rng``)."""
        t = np.asarray(t, dtype=float)
        out = np.full(t.shape, self.dc, dtype=float)
        for f, a in zip(self.freqs, self.amps, strict=True):
            out += np.real(a * np.exp(2j * np.pi * f * t))
        if self.noise and rng is not None:
            out += rng.normal(0.0, self.noise * noise_scale, size=t.shape)
        return out
