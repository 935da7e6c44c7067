"""Shared helpers for the benchmarks: timing and a results table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def per_call_ns(func: Callable[[], object], *, number: int, repeat: int = 7) -> float:
    """Best-of-``repeat`` mean time of ``func()`` in ns (best: least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            func()
        best = min(best, (time.perf_counter_ns() - start) / number)
    return best


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")
