"""Remote sessions: one board, many processes and lab PCs, over LECO.

``rpl-noqt serve HOST --name NAME`` (or :func:`serve`) owns a board's
session and serves it as a LECO locking actor; ``rpl_noqt.connect(
"leco://NAME")`` returns a :class:`RemoteSession` used like a local one.
Needs pyleco (``pip install "rpl-noqt[remote]"``); see docs/remote.md.

Modules, one job each: :mod:`.registry` (what a server offers, built from
PyRPL's classes), :mod:`.payloads` (values and binary array frames),
:mod:`.surface` (the server's dispatch and lock table), :mod:`.actor` (the
LECO component), :mod:`.coordinator` (find or embed a coordinator),
:mod:`.server` (``serve()``), :mod:`.link` (a client's requests, deadlines
and reconnects), :mod:`.client` (the proxies), :mod:`.isolate` (``connect(...,
isolate=True)``: a server in a child process), :mod:`.cli` (``rpl-noqt serve``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._deps import require_pyleco
from .errors import RegistryMismatchError, RemoteCallError, RemoteNameError

__all__ = ("BoardServer", "RegistryMismatchError", "RemoteCallError", "RemoteNameError", "RemoteSession",
           "connect_remote", "require_pyleco", "serve")

if TYPE_CHECKING:  # pragma: no cover
    from .client import RemoteSession, connect_remote
    from .server import BoardServer, serve

_LAZY = {"RemoteSession": "client", "connect_remote": "client", "BoardServer": "server", "serve": "server"}


def __getattr__(name: str) -> Any:
    # Lazy: the error types import without pyleco; the rest says which extra is missing.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'rpl_noqt.remote' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"rpl_noqt.remote.{module_name}"), name)
    globals()[name] = value
    return value
