"""IIR filter slot, ``red_pitaya_iir_block.v`` (slot 4).

Registers, constants and coefficients (0x8000.., write-only as in the RTL).
Tones (the phasor view of the IQ modules and the network analyzer) go through
the exact steady-state response of the parallel biquads as the RTL schedules
them (:meth:`Iir.tone_response`); in the time domain the block applies its DC
gain (slow signals only). Shortcut passes the filtered input; off outputs 0
(the RTL clears its state).
"""

from __future__ import annotations

import numpy as np

from . import filters
from .dsp import DspBlock, EvalContext
from .signals import FPGA_CLOCK_HZ, Spectrum, signed

IIRBITS, IIRSHIFT, IIRSTAGES = 32, 29, 14
FILTERSTAGES, FILTERSHIFTBITS, FILTERMINBW = 1, 3, 1000
FILTER_PARAMS = filters.FilterParams(stages=FILTERSTAGES, shiftbits=FILTERSHIFTBITS, minbw=FILTERMINBW)


class Iir(DspBlock):
    def __init__(self, model, number: int) -> None:
        super().__init__(model, number)
        self.loops = 0
        self.flags = 0  # bit 0 on, bit 1 shortcut (bypass)
        self.filter = 0
        self.coefficients: dict[int, int] = {}

    def read(self, offset: int) -> int:
        regs = {
            0x100: self.loops, 0x104: self.flags, 0x108: 0, 0x120: self.filter,
            0x200: IIRBITS, 0x204: IIRSHIFT, 0x208: IIRSTAGES,
            0x220: FILTERSTAGES, 0x224: FILTERSHIFTBITS, 0x228: FILTERMINBW,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        if offset == 0x100:
            self.loops = value & 0x3FF
        elif offset == 0x104:
            self.flags = value & 0x3
        elif offset == 0x120:
            self.filter = value & 0xFFFFFFFF
        elif offset & 0x8000:
            self.coefficients[(offset >> 2) & 0x3FF] = value & 0xFFFFFFFF

    # -- the biquads -----------------------------------------------------------
    def _coefficient(self, stage: int, k: int) -> float:
        """b0, b1, a1, a2 (k = 0..3) of ``stage``: the low word of each 64-bit pair
        (``IIRBITS`` = 32), fixed point at ``IIRSHIFT``."""
        return signed(self.coefficients.get(8 * stage + 2 * k, 0), IIRBITS) / 2**IIRSHIFT

    def _stages(self) -> list[tuple[int, float, float, float, float]]:
        loops = self.loops or 1 << 10  # a 10-bit down-counter: 0 wraps to 1024
        out = []
        for stage in range(min(loops, IIRSTAGES)):
            b0, b1, a1, a2 = (self._coefficient(stage, k) for k in range(4))
            if b0 or b1:
                out.append((stage, b0, b1, a1, a2))
        return out

    def tone_response(self, freqs: np.ndarray) -> np.ndarray:
        """Steady-state response to tones at ``freqs`` (fundamental only).

        From the RTL: the input filter; biquad ``s`` runs once per ``loops``
        cycles, ``y = a1 y1 + a2 y2 + b0 x0 + b1 x1``, on an input sampled
        ``s + 6`` cycles before the output register (x0 register, the
        down-counting stage schedule, product, sum, accumulator, ``signal_o``,
        ``dat_o``); the sum of all biquads is held for ``loops`` cycles (a
        zero-order hold, of which the fundamental is kept).  Shortcut: the
        filtered input one cycle later; off: 0.
        """
        freqs = np.asarray(freqs, dtype=float)
        z1 = np.exp(-2j * np.pi * freqs / FPGA_CLOCK_HZ)
        filtered = filters.response(self.filter, FILTER_PARAMS, freqs) if self.filter else np.ones(freqs.shape)
        if self.flags & 2:
            return filtered * z1
        if not self.flags & 1:
            return np.zeros(freqs.shape, dtype=complex)
        loops = self.loops or 1 << 10
        zl = z1**loops
        total = np.zeros(freqs.shape, dtype=complex)
        for stage, b0, b1, a1, a2 in self._stages():
            total += (b0 + b1 * zl) / (1.0 - a1 * zl - a2 * zl**2) * z1 ** (stage + 6)
        with np.errstate(divide="ignore", invalid="ignore"):
            hold = np.where(np.abs(1.0 - z1) > 1e-12, (1.0 - zl) / (loops * (1.0 - z1)), 1.0)
        return filtered * total * hold

    def dc_gain(self) -> float:
        if self.flags & 2:
            return filters.dc_gain(self.filter, FILTER_PARAMS) if self.filter else 1.0
        if not self.flags & 1:
            return 0.0
        gain = 0.0
        for _, b0, b1, a1, a2 in self._stages():
            denominator = 1.0 - a1 - a2
            gain += (b0 + b1) / denominator if denominator else 0.0
        return gain * (filters.dc_gain(self.filter, FILTER_PARAMS) if self.filter else 1.0)

    def output_signal(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        # time domain: the DC gain (a slow-signal approximation; tones go
        # through signal_spectrum with the full response)
        gain = self.dc_gain()
        if gain == 0.0:
            return np.zeros(np.shape(t))
        return gain * self.model.bus.input_of(self.number, t, ctx)

    def signal_spectrum(self, ctx: EvalContext) -> Spectrum:
        s = self.model.bus.input_spectrum(self.number, ctx)
        if not self.flags & 3:
            return Spectrum()
        gain = self.dc_gain()
        return Spectrum(dc=gain * s.dc, freqs=s.freqs.copy(), amps=s.amps * self.tone_response(s.freqs),
                        noise=abs(gain) * s.noise)
