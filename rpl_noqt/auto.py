"""``import rpl_noqt.auto``: activate the shim on import.

The form a PyMoDAQ plugin (or any library) uses as its first import, before
anything imports pyrpl. Importing it again does nothing more.
"""

from __future__ import annotations

from .runtime.activation import activate

patch_record = activate()

__all__ = ("patch_record",)
