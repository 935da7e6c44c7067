"""What the per-module drivers share: a board and one checked module name."""

from __future__ import annotations

from typing import Any, ClassVar

from .board import Board
from .options import check_choice

__all__ = ("ModuleDriver",)


class ModuleDriver:
    """One numbered module of the board (``asg0``, ``pid1``, ``iq2`` ...).

    Subclasses name the kind (for error messages) and the allowed modules;
    the name is checked before anything reaches the board.
    """

    kind: ClassVar[str]
    choices: ClassVar[tuple[str, ...]]

    def __init__(self, board: Board, name: str) -> None:
        self.board = board
        self.name = check_choice(f"{self.kind} module", name, self.choices)

    @property
    def module(self) -> Any:
        """The PyRPL module object (looked up on each use: the session owns it)."""
        return getattr(self.board.rp, self.name)
