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
    "CallCancelledError",
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


class CallCancelledError(Exception):
    """A long call (a network-analyzer sweep, an acquisition, sampler statistics) was cancelled.

    Raised by :func:`rpl_noqt.remote.longcall.run_long_call` in the thread
    that made the call when a client cancelled it. By then a module with
    something to stop (an acquisition) has been stopped as PyRPL's own
    ``stop()`` leaves it: the board is not left half-configured. The message names the module, the method and how far
    it got; so do the attributes, for programs (``total`` 0: not known).
    """

    def __init__(self, module: str, method: str, done: int = 0, total: int = 0, elapsed: float = 0.0,
                 *, unit: str = "steps", detail: str = "") -> None:
        self.module = module
        self.method = method
        self.done = done
        self.total = total
        self.elapsed = elapsed
        self.unit = unit
        self.detail = detail
        if total > 0:
            how_far = f"after {done} of {total} {unit} ({100.0 * done / total:.0f}%), {elapsed:.2f} s"
        else:
            how_far = f"after {elapsed:.2f} s"
        tail = f": {detail}" if detail else ""
        super().__init__(f"{module}.{method}() cancelled {how_far}{tail}")

    def __reduce__(self) -> tuple[object, ...]:  # picklable despite the keyword-only arguments
        return (_rebuild_cancelled_error, (self.module, self.method, self.done, self.total, self.elapsed,
                                           self.unit, self.detail))


def _rebuild_cancelled_error(module: str, method: str, done: int, total: int, elapsed: float, unit: str,
                             detail: str) -> CallCancelledError:
    return CallCancelledError(module, method, done, total, elapsed, unit=unit, detail=detail)


def _rebuild_locked_error(board: str, holder: str, resource: str | None, operation: str) -> BoardLockedError:
    return BoardLockedError(board, holder, resource, operation=operation)


def _rebuild_board_error(cls: type[BoardConnectionError], board: str, operation: str, cause: str,
                         address: int | None) -> BoardConnectionError:
    return cls(board, operation, cause, address=address)
