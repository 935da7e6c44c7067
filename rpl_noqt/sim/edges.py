"""Schmitt-trigger edge search shared by the scope and the trig module.

Both RTL blocks use the same comparator: for a positive edge the state is set
when ``x >= threshold`` and cleared when ``x < threshold - hysteresis``; the
trigger is the 0 -> 1 transition of the state (negative edges mirror this).
"""

from __future__ import annotations

import numpy as np


def schmitt(x: np.ndarray, threshold: float, hysteresis: float, positive: bool, state: int) -> tuple[int, int]:
    """Return ``(index of the first trigger or -1, state after the last sample)``.

    ``state`` is the comparator state before ``x[0]`` (0, 1, or -1 = unknown,
    which is treated as set so that only a full crossing triggers).
    """
    hits, final = all_edges(x, threshold, hysteresis, positive, state)
    return (int(hits[0]) if len(hits) else -1), final


def all_edges(x: np.ndarray, threshold: float, hysteresis: float, positive: bool, state: int) -> tuple[np.ndarray, int]:
    """Indices of every trigger in ``x`` and the final comparator state."""
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=int), state
    init = 1 if state < 0 else state
    ev = np.full(n, -1, dtype=np.int8)
    if positive:
        ev[x < threshold - hysteresis] = 0
        ev[x >= threshold] = 1
    else:
        ev[x > threshold + hysteresis] = 0
        ev[x <= threshold] = 1
    idx = np.where(ev >= 0, np.arange(n), -1)
    np.maximum.accumulate(idx, out=idx)
    st = np.where(idx >= 0, ev[np.maximum(idx, 0)], init)
    prev = np.concatenate([[init], st[:-1]])
    return np.flatnonzero((st == 1) & (prev == 0)), int(st[-1])
