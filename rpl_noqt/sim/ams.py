"""Analog mixed signals, ``red_pitaya_ams.v`` at 0x40400000.

Only the four PWM DAC registers (0x20..0x2C) that PyRPL's ``AMS`` uses are
kept; the XADC monitor registers read 0 (nothing is measured in simulation).
"""

from __future__ import annotations

AMS_BASE = 0x40400000


class Ams:
    def __init__(self) -> None:
        self.dac = [0, 0, 0, 0]

    def read(self, offset: int) -> int:
        if 0x20 <= offset <= 0x2C and offset % 4 == 0:
            return self.dac[(offset - 0x20) // 4]
        return 0

    def write(self, offset: int, value: int) -> None:
        if 0x20 <= offset <= 0x2C and offset % 4 == 0:
            self.dac[(offset - 0x20) // 4] = value & 0xFFFFFFFF
