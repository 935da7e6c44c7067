"""Exceptions and warnings raised by rpl_noqt.

They subclass built-ins (``RuntimeError``, ``TypeError``, ``ImportError``) so
that ``except`` clauses written for PyRPL or Qt keep working.
"""

from __future__ import annotations

__all__ = (
    "ActivationError",
    "BoardConnectionError",
    "BoardLockedError",
    "BoardTimeoutError",
    "GuiUnavailableError",
    "LoopThreadError",
    "RplNoQtWarning",
    "SlotError",
    "UnsupportedPyrplVersionError",
)


class RplNoQtWarning(UserWarning):
    """Something works, but not the way the user probably expects."""


class ActivationError(RuntimeError):
    """The shim cannot be activated in this process (for example pyrpl was
    already imported with real Qt)."""


class UnsupportedPyrplVersionError(ActivationError):
    """The installed pyrpl is not one of the versions rpl_noqt was tested with."""


class GuiUnavailableError(RuntimeError):
    """PyRPL asked for a widget, dialog or plot; rpl_noqt serves it no Qt."""


class LoopThreadError(RuntimeError):
    """A blocking call (``wait``, ``sleep``, a portal call) was made from the
    background event-loop thread, where it would deadlock."""


class SlotError(RuntimeError):
    """A slot raised while a signal was emitted (only raised in ``"raise"``
    slot-error mode; the default mode logs the traceback)."""


class BoardConnectionError(ConnectionError):
    """A board could not be reached, or stopped answering, within the link policy.

    The one exception a user catches for link trouble: raised by connecting,
    by every register access and by everything built on them. The message
    names the board, the operation, the address and the cause; the same
    facts are attributes, for programs.
    """

    def __init__(self, board: str, operation: str, cause: str, *, address: int | None = None) -> None:
        self.board = board
        self.operation = operation
        self.address = address
        self.cause = cause
        where = f" at {address:#010x}" if address is not None else ""
        super().__init__(f"board {board}: {operation}{where} failed: {cause}")

    def __reduce__(self) -> tuple[object, ...]:  # picklable despite the keyword-only argument
        return (_rebuild_board_error, (type(self), self.board, self.operation, self.cause, self.address))


class BoardTimeoutError(BoardConnectionError, TimeoutError):
    """The board did not answer within the I/O deadline (it is also a ``TimeoutError``)."""


class BoardLockedError(RuntimeError):
    """Another client holds the board's lock (or the lock of this part of it).

    Raised by a remote session (``rpl_noqt.connect("leco://NAME")``) when a
    write or a state-changing call is refused because another client holds
    the LECO lock, or when taking the lock did not succeed in time. ``holder``
    is the LECO name of the client holding it, ``resource`` what it locked
    (None: the whole board).
    """

    def __init__(self, board: str, holder: str, resource: str | None = None, *, operation: str = "write") -> None:
        self.board = board
        self.holder = holder
        self.resource = resource
        self.operation = operation
        what = "the board" if resource is None else f"{resource!r}"
        super().__init__(f"board {board}: {operation} refused: {what} is locked by {holder!r}")

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_locked_error, (self.board, self.holder, self.resource, self.operation))


def _rebuild_locked_error(board: str, holder: str, resource: str | None, operation: str) -> BoardLockedError:
    return BoardLockedError(board, holder, resource, operation=operation)


def _rebuild_board_error(cls: type[BoardConnectionError], board: str, operation: str, cause: str,
                         address: int | None) -> BoardConnectionError:
    return cls(board, operation, cause, address=address)
