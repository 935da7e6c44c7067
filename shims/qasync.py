"""What PyRPL gets for ``qasync``: nothing to run a Qt loop with.

Only upstream ``pyrpl.async_utils`` uses qasync, and rpl_noqt replaces that
module with :mod:`rpl_noqt.shims.async_utils`; anything else asking for a
qasync loop is told where the loop is.
"""

from __future__ import annotations

from typing import Any, NoReturn


def _no_qasync(name: str) -> NoReturn:
    raise RuntimeError(
        f"qasync.{name} is not available under rpl_noqt: PyRPL's coroutines run on "
        "rpl_noqt's background asyncio loop (rpl_noqt.runtime.loop.get_loop())."
    )


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    _no_qasync(name)
