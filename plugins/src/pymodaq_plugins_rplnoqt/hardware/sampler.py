"""The DSP sampler: instantaneous values of any DSP signal, as the Sampler viewer uses it."""

from __future__ import annotations

from collections.abc import Iterable

from .board import Board
from .options import SAMPLER_SIGNALS, SettingError, check_choice

__all__ = ("SamplerDriver",)


class SamplerDriver:
    """Read DSP signals by name (volts; in1/in2 at the connector)."""

    def __init__(self, board: Board) -> None:
        self.board = board

    @staticmethod
    def validate(signals: Iterable[str]) -> tuple[str, ...]:
        """The signals, checked; at least one."""
        chosen = tuple(check_choice("sampler signal", s, SAMPLER_SIGNALS) for s in signals)
        if not chosen:
            raise SettingError(f"choose at least one sampler signal; allowed values: {', '.join(SAMPLER_SIGNALS)}")
        return chosen

    def read(self, signals: Iterable[str]) -> dict[str, float]:
        """One value per signal, read one after the other (each read is atomic on the board)."""
        chosen = self.validate(signals)
        sampler = self.board.rp.sampler
        return {s: float(getattr(sampler, s)) * self.board.scale(s) for s in chosen}
