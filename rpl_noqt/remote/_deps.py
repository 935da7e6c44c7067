"""The one place that imports pyleco, so a missing extra fails with one clear message.

Remote sessions are optional: a headless install of rpl-noqt has no pyleco
(it comes with PyMoDAQ, or with ``pip install "rpl-noqt[remote]"``).
"""

from __future__ import annotations

from types import ModuleType

__all__ = ("EXTRA_HINT", "require_pyleco")

EXTRA_HINT = 'pip install "rpl-noqt[remote]"'


def require_pyleco() -> ModuleType:
    """Import pyleco (and pyzmq), or raise ImportError naming the extra that provides them."""
    try:
        import pyleco
        import zmq  # noqa: F401  (pyleco needs it; say so here, not deep inside)
    except ImportError as exc:
        raise ImportError(
            f"rpl_noqt remote sessions (leco://..., rpl-noqt serve) need pyleco and pyzmq, which are not "
            f"installed ({exc}). Install them with: {EXTRA_HINT}") from exc
    return pyleco
