"""Release the board locks a thread holds while it blocks.

A thread in ``wait(scope.single_async())`` or ``sleep(t)`` must not keep its
board locked: the coroutine it waits for runs on the event-loop thread and
needs the same lock for its register reads. Locks that take part
(:class:`rpl_noqt.locks.DeviceLock`) record themselves per thread on acquire;
:func:`released_locks` fully releases them (whatever the recursion depth) for
the duration of the blocking call and restores them afterwards, as
``threading.Condition.wait`` does with its lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ("ReleasableLock", "held_locks", "note_acquired", "note_released", "released_locks")


class ReleasableLock(Protocol):
    def _release_all(self) -> Any: ...
    def _restore(self, state: Any) -> None: ...


_held = threading.local()


def held_locks() -> list[ReleasableLock]:
    """Locks the calling thread holds, in acquisition order (outermost first)."""
    locks: list[ReleasableLock] | None = getattr(_held, "locks", None)
    return list(locks) if locks else []


def note_acquired(lock: ReleasableLock) -> None:
    """Called by a lock on its outermost acquire in this thread."""
    locks = getattr(_held, "locks", None)
    if locks is None:
        locks = _held.locks = []
    locks.append(lock)


def note_released(lock: ReleasableLock) -> None:
    """Called by a lock on its outermost release in this thread."""
    locks = getattr(_held, "locks", None)
    if locks and lock in locks:
        locks.remove(lock)


@contextmanager
def released_locks() -> Iterator[None]:
    """Hold none of this thread's board locks inside the block; restore after."""
    locks = held_locks()
    if not locks:
        yield
        return
    states = [(lock, lock._release_all()) for lock in reversed(locks)]
    try:
        yield
    finally:
        for lock, state in reversed(states):
            lock._restore(state)
