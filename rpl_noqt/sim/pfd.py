"""The IQ module's phase-frequency detector, ``red_pitaya_pfd_block.v``.

RTL (lneuhaus/pyrpl, ``pyrpl/fpga/rtl``):

* ``red_pitaya_iq_block.v`` lines 336-345: one PFD per IQ module, ``s1`` the
  sign bit of the input after the input filter (``dat_i_filtered``), ``s2``
  the sign bit of the local oscillator's unshifted sine (``sin``, not the
  demodulation phase ``sin_shifted``); its reset is ``pfd_on`` (0x100 bit 1,
  line 128), which is 1 after a reload (line 121); ``pfd_integral`` is read at
  0x150 (line 160) and is output ``PFD`` = 2 of the output multiplexer
  (lines 77, 351).
* ``red_pitaya_pfd_block.v`` lines 63-88 (ISR = 0: a 14-bit counter): a rising
  sign bit (the signal going negative) of ``s1`` counts +1, of ``s2`` -1, both
  in the same cycle 0; at +8191 the counter steps down by one and at -8192 up
  by one whatever the edges (so a saturated counter sits at +8190 / -8191,
  touching the limit for a cycle at each edge that pushes it).

So the integral is (negative-going zero crossings of the input) minus (those
of the local oscillator) since ``pfd_on`` was last set: it grows at the
frequency difference ``f_in - f_lo`` counts per second and, for equal
frequencies, stays within one count of a value set by the phase difference.
PyRPL reads it as ``iq.pfd_integral = counts / 14`` (``FloatRegister(0x150,
bits=14, norm=_SIGNALBITS)``, ``hardware_modules/iq.py``: norm is 14, not
2**13, so saturation reads 8190/14 = 585, PyRPL's "-585 is the maximum value").
Routed as a signal (``iq.output_signal = 'pfd'``) it is ``counts / 2**13`` V.

Model (choices, not RTL):

* The counter is advanced in closed form between *updates*: a read of 0x150,
  and every write (before it is applied) while the PFD is *watched* (it has
  been read, or is routed as the output signal, since ``pfd_on`` was last set);
  an unwatched PFD is updated only at writes to its own IQ module or to the
  sync register.  Between updates the input's steady-state spectrum is taken
  as it is at the update; the crossings of the signals in that window are
  counted and added with the saturation ``clip(value + n_in - n_lo, -8191,
  8190)`` (exact while the count moves one way in the window, which it does
  unless the frequencies change, and a write is an update).
* Input crossings: when one tone of the (input-filtered) input dominates,
  ``A > R`` and ``R' < 2 pi f A sqrt(1 - (R/A)**2)`` with ``R`` the sum of the
  other amplitudes and the DC, ``R'`` the sum of their slopes, the input is
  monotonic wherever that tone crosses zero, so it crosses exactly once per
  period: counted from that tone's phase.  Otherwise the noise-free
  steady-state input is evaluated once per cycle over the window (at most
  ``MAX_CYCLES``; a longer window is extrapolated from its last ``MAX_CYCLES``
  cycles).  An input whose DC outweighs the sum of its tones never crosses
  (nothing is evaluated: most inputs behind a photodiode).  Noise is left out: a real PFD
  also counts noise-made double crossings near the zero crossings.
* The 3-cycle latency of the sine generator and the input pipeline is left
  out (it shifts the integral by far less than one count); the edge counted
  in the cycle the block leaves reset (a signal already negative) is
  modelled.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from . import filters
from .signals import CYCLE, Spectrum, significant

if TYPE_CHECKING:
    from .iq import Iq

#: where the RTL counter sits in saturation (it touches +8191 / -8192 for a cycle)
PFD_MAX = 2**13 - 2
PFD_MIN = -(2**13) + 1
#: longest window evaluated cycle by cycle when no tone dominates the input
MAX_CYCLES = 2**16
#: PyRPL's ``pfd_integral`` norm (``iq.py``: ``norm=_SIGNALBITS``)
PYRPL_NORM = 14
_TWO_PI = 2 * math.pi


class Pfd:
    """The PFD of one IQ module (``iq.pfd``)."""

    def __init__(self, iq: Iq) -> None:
        self.iq = iq
        self.value = 0
        self.t = iq.model.clock.now()
        self.watched = False

    @property
    def on(self) -> bool:
        return bool(self.iq.flags & 0x2)

    # -- register side -------------------------------------------------------------
    def set_on(self, on: bool, now: float) -> None:
        """``pfd_on`` changed (the caller has updated the counter first): the
        block leaves reset now, or is held at 0.

        Leaving reset, the last-cycle registers ``l1``/``l2`` are 0, so a
        signal that is negative in the first cycle counts as an edge
        (``red_pitaya_pfd_block.v`` lines 69-76, 63-64).
        """
        self.value = 0
        self.t = now
        self.watched = False
        if on:
            iq = self.iq
            x = self._filtered_input().evaluate(np.array([now]))[0]
            lo = math.sin(float(iq.theta(now))) if iq.running else 0.0
            self.value = int(round(x * 2.0**13) < 0) - int(lo < 0)

    def read(self, now: float) -> int:
        self.watched = True
        self.update(now)
        return self.value & 0x3FFF

    def update(self, now: float) -> None:
        """Bring the counter to ``now`` (with the registers and signals as they are)."""
        if not self.on:
            self.value, self.t = 0, now
            return
        if now <= self.t:
            return
        self.value = int(self._values(np.array([now]))[0])
        self.t = now

    # -- evaluation -----------------------------------------------------------------
    def output(self, t: np.ndarray) -> np.ndarray:
        """The counter in volts (``counts / 2**13``) at times ``t`` (the output multiplexer's PFD)."""
        self.watched = True
        t = np.asarray(t, dtype=float)
        if not self.on:
            return np.zeros(t.shape)
        return self._values(t) / 2.0**13

    def _values(self, t: np.ndarray) -> np.ndarray:
        n = np.floor(np.asarray(t, dtype=float) / CYCLE)
        n0 = math.floor(self.t / CYCLE)
        counts = self._input_crossings(n0, n) - self._lo_crossings(n0, n)
        return np.clip(self.value + counts, PFD_MIN, PFD_MAX).astype(np.int64)

    def _lo_crossings(self, n0: int, n: np.ndarray) -> np.ndarray:
        """Rising sign bits of ``sin(theta)`` in cycles (n0, n]."""
        iq = self.iq
        if not iq.running or iq.frequency == 0:
            return np.zeros(n.shape)
        k = np.floor((np.asarray(iq.theta(n * CYCLE)) - math.pi) / _TWO_PI)
        k0 = math.floor((float(iq.theta(n0 * CYCLE)) - math.pi) / _TWO_PI)
        return k - k0

    def _filtered_input(self) -> Spectrum:
        from .dsp import EvalContext
        from .iq import INPUT_FILTER

        iq = self.iq
        s = iq.model.bus.input_spectrum(iq.number, EvalContext(None, 0.0))
        freqs = np.asarray(s.freqs, dtype=float)
        h = filters.response(iq.input_filter, INPUT_FILTER, np.concatenate([[0.0], freqs]))
        return Spectrum(dc=float(np.real(s.dc * h[0])), freqs=freqs, amps=np.asarray(s.amps) * h[1:])

    def _input_crossings(self, n0: int, n: np.ndarray) -> np.ndarray:
        """Negative-going crossings of the filtered input in cycles (n0, n]."""
        s = self._filtered_input()
        mags = np.abs(s.amps)
        keep = mags > 0
        freqs, amps, mags = s.freqs[keep], s.amps[keep], mags[keep]
        if len(freqs) == 0 or _keeps_its_sign(s.dc, float(mags.sum())):
            return np.zeros(n.shape)
        j = int(np.argmax(mags))
        big, f = float(mags[j]), float(freqs[j])
        rest = float(mags.sum() - big + abs(s.dc))
        slope = float(_TWO_PI * (freqs * mags).sum() - _TWO_PI * f * big)
        if rest < big and slope < _TWO_PI * f * big * math.sqrt(1.0 - (rest / big) ** 2) and f < 0.5 / CYCLE:
            # x = |a| sin(psi), psi = 2 pi f t + arg(a) + pi/2: one crossing where psi passes pi (mod 2 pi)
            phi = float(np.angle(amps[j])) + math.pi / 2 - math.pi
            k = np.floor((_TWO_PI * f * (n * CYCLE) + phi) / _TWO_PI)
            k0 = math.floor((_TWO_PI * f * (n0 * CYCLE) + phi) / _TWO_PI)
            return k - k0
        return self._counted_crossings(s, n0, n)

    def _counted_crossings(self, s: Spectrum, n0: int, n: np.ndarray) -> np.ndarray:
        """No dominant tone: the sign bit of the noise-free input, cycle by cycle."""
        hi = int(n.max()) if n.size else n0
        span = hi - n0
        if span <= 0:
            return np.zeros(n.shape)
        m = min(span, MAX_CYCLES)
        neg = _negative_cycles(s, hi - m, m + 1)
        edges = np.concatenate([[0], np.cumsum(neg[1:] & ~neg[:-1])])
        scale = span / m
        idx = np.clip(n.astype(np.int64) - (hi - m), 0, m)
        return np.round(edges[idx] * scale)


#: the sign bit is ``round(x 2**13) < 0``: set below this voltage
_SIGN_THRESHOLD = -0.5 / 2**13


def _keeps_its_sign(dc: float, tones: float) -> bool:
    """Whether a signal of DC ``dc`` plus tones whose amplitudes sum to ``tones`` can never
    change its sign bit: it stays on one side of the threshold (a photodiode's
    transmission, a DC-dominated error signal), so it has no edges to count.
    Exact, with a margin of float rounding on the side of counting."""
    margin = 1e-12 + 1e-9 * (abs(dc) + tones)
    return dc - tones > _SIGN_THRESHOLD + margin or dc + tones < _SIGN_THRESHOLD - margin


#: tones summing to at most this amplitude (V, 4 codes) are left out of the first pass of
#: :func:`_negative_cycles` (an ASG table's quantisation spurs: 62 tones of about 2 uV)
SMALL_TONES = 4 / 2**13


def _negative_cycles(s: Spectrum, first: int, count: int) -> np.ndarray:
    """The sign bit of the 14-bit code of ``s`` (noise-free) in cycles ``first .. first + count - 1``.

    Exactly what evaluating every tone at every cycle gives (up to float
    rounding), cheaper: the largest tones are evaluated first; the tones left
    out can move the code by at most the sum of their amplitudes, so only
    the cycles that close to the threshold are evaluated again with every
    tone.  The sign bit is ``round(x 2**13) < 0``, that is ``x 2**13 < -0.5``.
    """
    times = np.arange(first, first + count) * CYCLE
    grid = (first * CYCLE, CYCLE)
    mags = np.abs(np.asarray(s.amps))
    big = significant(mags, SMALL_TONES)
    if big.all():
        return np.round(s.evaluate(times, grid=grid) * 2.0**13) < 0
    y = Spectrum(dc=s.dc, freqs=np.asarray(s.freqs)[big], amps=np.asarray(s.amps)[big]).evaluate(times, grid=grid)
    y *= 2.0**13
    bound = float(mags[~big].sum()) * 2.0**13 + 1e-6  # the small tones' most, and float rounding
    unsure = np.flatnonzero(np.abs(y + 0.5) <= bound)
    if len(unsure) > max(64, count // (2 * len(mags))):  # one by one would cost more than the grid
        return np.round(s.evaluate(times, grid=grid) * 2.0**13) < 0
    neg = y < -0.5
    if len(unsure):
        neg[unsure] = np.round(s.evaluate(times[unsure]) * 2.0**13) < 0
    return neg
