"""Housekeeping, ``red_pitaya_hk.v`` at 0x40000000: id, DNA, LEDs, expansion IO.

The id register reads 1 ("release1" in PyRPL's ``HK.id`` options).  Expansion
pins read back what is driven on the pins configured as outputs; inputs read
what is connected to them: DIO0_P, the external trigger, is the simulator's
external input (``FpgaModel.set_external_trigger``, ``dio.py``), the other
pins read 0.
"""

from __future__ import annotations

HK_BASE = 0x40000000
ID_VALUE = 1
DNA = 0x0123_4567_89AB_CDEF & (2**57 - 1)


class Hk:
    def __init__(self) -> None:
        self.digital_loop = 0
        self.dir_p = 0
        self.dir_n = 0
        self.out_p = 0
        self.out_n = 0
        self.ext_p = 0  # levels connected from outside (bit 0: DIO0_P, set by dio.py)
        self.led = 0
        self.select = [0x0100] * 8

    def read(self, offset: int) -> int:
        if 0x50 <= offset <= 0x6C and offset % 4 == 0:
            return self.select[(offset - 0x50) // 4]
        regs = {
            0x00: ID_VALUE, 0x04: DNA & 0xFFFFFFFF, 0x08: DNA >> 32, 0x0C: self.digital_loop,
            0x10: self.dir_p, 0x14: self.dir_n, 0x18: self.out_p, 0x1C: self.out_n,
            0x20: (self.out_p & self.dir_p) | (self.ext_p & ~self.dir_p & 0xFF), 0x24: self.out_n & self.dir_n, 0x30: self.led,
        }
        return regs.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        if offset == 0x0C:
            self.digital_loop = value & 1
        elif offset == 0x10:
            self.dir_p = value & 0xFF
        elif offset == 0x14:
            self.dir_n = value & 0xFF
        elif offset == 0x18:
            self.out_p = value & 0xFF
        elif offset == 0x1C:
            self.out_n = value & 0xFF
        elif offset == 0x30:
            self.led = value & 0xFF
        elif 0x50 <= offset <= 0x6C and offset % 4 == 0:
            self.select[(offset - 0x50) // 4] = value & 0xFFFF
