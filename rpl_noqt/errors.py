"""Exceptions and warnings raised by rpl_noqt.

They subclass built-ins (``RuntimeError``, ``TypeError``, ``ImportError``) so
that ``except`` clauses written for PyRPL or Qt keep working.
"""

from __future__ import annotations

__all__ = (
    "ActivationError",
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
