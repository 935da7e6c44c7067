"""rpl_noqt: unmodified PyRPL without Qt, from any thread, safely.

``import rpl_noqt`` changes nothing. ``rpl_noqt.activate()`` (or
``import rpl_noqt.auto``) makes every later ``import pyrpl`` Qt-free; see
:mod:`rpl_noqt.runtime.activation` for exactly what that does, and
``print(rpl_noqt.patch_record())`` for what it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = (
    "BoardConnectionError",
    "BoardLockedError",
    "BoardTimeoutError",
    "CallCancelledError",
    "LinkPolicy",
    "Session",
    "__version__",
    "activate",
    "connect",
    "deactivate",
    "flush_configs",
    "is_active",
    "patch_record",
    "serve",
)

if TYPE_CHECKING:  # pragma: no cover
    from .runtime.activation import activate, deactivate, flush_configs, is_active, patch_record
    from .board.policy import LinkPolicy
    from .errors import BoardConnectionError, BoardLockedError, BoardTimeoutError, CallCancelledError
    from .remote.server import serve
    from .session import Session, connect

_LAZY = {name: "rpl_noqt.runtime.activation" for name in ("activate", "deactivate", "flush_configs", "is_active", "patch_record")}
_LAZY.update(connect="rpl_noqt.session", Session="rpl_noqt.session", LinkPolicy="rpl_noqt.board.policy",
             BoardConnectionError="rpl_noqt.errors", BoardTimeoutError="rpl_noqt.errors",
             BoardLockedError="rpl_noqt.errors", CallCancelledError="rpl_noqt.errors", serve="rpl_noqt.remote.server")


def __getattr__(name: str) -> Any:
    # Lazy so that 'import rpl_noqt' imports nothing heavy and patches nothing.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'rpl_noqt' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
