"""IIR filter slot, ``red_pitaya_iir_block.v`` (slot 4).

Registers and constants are modelled; the biquad cascade itself is not: when
``on`` the block passes its input through unchanged (``bypass``/shortcut passes
it through by definition; off outputs 0 like the RTL, which clears its state).
Coefficient writes at 0x8000.. are accepted and kept (the RTL has no read-back).
"""

from __future__ import annotations

import numpy as np

from .dsp import DspBlock, EvalContext
from .signals import Spectrum

IIRBITS, IIRSHIFT, IIRSTAGES = 32, 29, 14
FILTERSTAGES, FILTERSHIFTBITS, FILTERMINBW = 1, 3, 1000


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

    def _passes(self) -> bool:
        return bool(self.flags & 0x3)

    def output_signal(self, t: np.ndarray, ctx: EvalContext) -> np.ndarray:
        if not self._passes():
            return np.zeros(np.shape(t))
        return self.model.bus.input_of(self.number, t, ctx)

    def signal_spectrum(self, ctx: EvalContext) -> Spectrum:
        return self.model.bus.input_spectrum(self.number, ctx) if self._passes() else Spectrum()
