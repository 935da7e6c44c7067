"""Numeric limits of PyRPL registers, read from the live register descriptors.

PyRPL silently clips out-of-range values (``pid.p = 5000`` gives 2048); the
plugins refuse them instead, naming the limits taken from here: what the
register really holds (rpl-noqt's value checks narrow a declared maximum the
register cannot hold, e.g. ``asg0.offset`` takes at most 8191/8192 V, not
1 V), so a value the plugin accepts is never clamped on the board.
"""

from __future__ import annotations

import sys
from typing import Any

from .options import check_number

__all__ = ("register_limits", "check_register")


def register_limits(module: Any, name: str) -> tuple[float, float]:
    """``(min, max)`` attribute ``name`` of a PyRPL hardware module really takes.

    For a module of a ``leco://`` board the server computed them the same way
    and sent them in its registry.
    """
    remote = sys.modules.get("rpl_noqt.remote.client")
    if remote is not None and isinstance(module, remote.RemoteModule):  # a leco:// board: the server's registry
        bounds = remote.attribute_spec(module, name).bounds
        return (float("-inf"), float("inf")) if bounds is None else bounds
    from rpl_noqt.board.values import effective_bounds

    low, high = effective_bounds(getattr(type(module), name), hardware=True)
    return float(low), float(high)


def check_register(setting: str, value: Any, module: Any, name: str, unit: str = "", scale: float = 1.0) -> float:
    """Check ``value`` (in units ``scale`` x the register's) against the register's limits."""
    low, high = register_limits(module, name)
    low, high = sorted((low * scale, high * scale))
    return check_number(setting, value, low, high, unit)
