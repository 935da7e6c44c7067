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

try:  # the clip ufunc itself: np.clip's argument checks cost more than the clipping of a short array
    from numpy._core.umath import clip as _clip
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.umath import clip as _clip

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
    return _clip(v, -1.0, V_MAX)


def volts_to_code(v: np.ndarray | float) -> np.ndarray:
    """Volts -> unsigned 14-bit register code (two's complement in 14 bits)."""
    c = _clip(np.round(np.asarray(v, dtype=float) * CODES_PER_VOLT), -8192.0, 8191.0)
    return c.astype(np.int32).view(np.uint32) & np.uint32(0x3FFF)


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

    def evaluate(self, t: np.ndarray, rng: np.random.Generator | None = None, noise_scale: float = 1.0, *,
                 grid: tuple[float, float] | None = None) -> np.ndarray:
        """Time-domain samples at times ``t`` (noise drawn from ``rng``).

        ``grid=(a, b)``: the caller made ``t = a + k b`` (see :func:`grid_phasor_sum`).
        """
        t = np.asarray(t, dtype=float)
        out = np.full(t.shape, self.dc, dtype=float)
        fast = grid_phasor_sum(t, 2 * np.pi * np.asarray(self.freqs, dtype=float), self.amps, grid=grid)
        if fast is not None:
            out += fast.real
        else:
            for f, a in zip(self.freqs, self.amps, strict=True):
                out += np.real(a * np.exp(2j * np.pi * f * t))
        if self.noise and rng is not None:
            out += rng.normal(0.0, self.noise * noise_scale, size=t.shape)
        return out


#: below this many time x tone products a plain outer product is cheapest
_SMALL_PHASOR_WORK = 8192


def grid_phasor_sum(t: np.ndarray, omegas: np.ndarray, coefs: np.ndarray, *,
                    grid: tuple[float, float] | None = None) -> np.ndarray | None:
    """``sum_j coefs[j] * exp(1j * omegas[j] * t)`` (complex, shape of ``t``) for times on a grid; else None.

    The sum over tones that the phasor view needs everywhere, without a
    Python loop over tones, for times on a regular grid: ``t = a + k b``
    (scope samples, one sample per FPGA cycle) or ``a + k b + i c`` with ``i``
    the fastest index (the scope's sub-samples for averaging).  The phase is
    factorised, ``exp(i w t) = exp(i w (a + B h b)) exp(i w l b) exp(i w i c)``
    with ``k = B h + l``, so only ``O(sqrt(K) J)`` exponentials are computed and
    the sum over the ``J`` tones is one matrix product (a Python loop over 70
    tones of a 2^20-cycle window took seconds).  The factors equal
    ``exp(i w t)`` up to float rounding, of the order of the rounding of
    ``w t`` itself.  Returns None for few times or tones (the caller's loop is
    as fast) and for times off a grid.  ``grid=(a, b)``: the caller built
    ``t = a + k b`` itself (per-cycle windows of a million cycles), so it is
    not checked.
    """
    t = np.asarray(t, dtype=float)
    omegas = np.asarray(omegas, dtype=float).ravel()
    flat = t.ravel()
    n, tones = flat.size, omegas.size
    if tones == 0 or n < 64 or n * tones <= _SMALL_PHASOR_WORK:
        return None
    found = (grid[0], grid[1], n, 0.0, 1) if grid is not None else _grid(flat)
    if found is None:
        return None
    return _grid_sum(found, omegas, np.asarray(coefs, dtype=complex).ravel()).reshape(t.shape)


def _grid(flat: np.ndarray) -> tuple[float, float, int, float, int] | None:
    """``(a, b, K, c, m)`` with ``flat[k m + i] == a + k b + i c`` (to rounding), or None."""
    n = flat.size
    d = np.diff(flat)
    scale = 4 * np.finfo(float).eps * max(abs(float(flat[0])), abs(float(flat[-1])), 1e-300)
    c = float(d[0])
    off = np.flatnonzero(np.abs(d - c) > scale + 1e-9 * abs(c))
    a = float(flat[0])
    if not len(off):  # one progression
        m, kk, c = 1, n, 0.0
        b = (float(flat[-1]) - a) / (n - 1)
    else:
        m = int(off[0]) + 1
        if m < 2 or n % m or n // m < 2:
            return None
        kk = n // m
        b = (float(flat[(kk - 1) * m]) - a) / (kk - 1)
        c = (float(flat[m - 1]) - a) / (m - 1)
    ideal = (a + np.arange(kk)[:, None] * b + np.arange(m)[None, :] * c).ravel()
    if np.max(np.abs(flat - ideal)) > 4 * scale + 1e-9 * (abs(b) + abs(c) * m):
        return None
    return a, b, kk, c, m


def _grid_sum(grid: tuple[float, float, int, float, int], omegas: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    a, b, kk, c, m = grid
    block = max(1, int(np.sqrt(kk * max(1, m))) // m)  # about sqrt(n) columns per product
    blocks = -(-kk // block)
    hi = np.exp(1j * np.outer(a + np.arange(blocks) * (block * b), omegas)) * coefs  # blocks x J
    lo = np.exp(1j * np.outer(np.arange(block) * b, omegas))  # block x J
    if m > 1:
        inner = np.exp(1j * np.outer(np.arange(m) * c, omegas))  # m x J
        lo = (lo[:, None, :] * inner[None, :, :]).reshape(block * m, -1)
    z = hi @ lo.T  # blocks x (block m)
    return z.reshape(blocks * block * m)[: kk * m]
