"""Release the board locks a thread holds while it blocks.

A thread in ``wait(scope.single_async())`` or ``sleep(t)`` must not keep its
board locked: the coroutine it waits for runs on the event-loop thread and
needs the same lock for its register reads. Locks that take part
(:class:`rpl_noqt.runtime.locks.DeviceLock`) :func:`register` once and stamp each
outermost acquisition; :func:`released_locks` finds those the calling thread
holds and fully releases them (whatever the recursion depth) for
the duration of the blocking call and restores them afterwards, as
``threading.Condition.wait`` does with its lock.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

__all__ = ("ReleasableLock", "held_locks", "register", "released_locks")


class ReleasableLock(Protocol):
    def _held_stamp(self, ident: int) -> int | None: ...
    def _release_all(self) -> Any: ...
    def _restore(self, state: Any) -> None: ...


# Locks are asked who holds them only when a thread is about to block, so the
# hot acquire/release path keeps no per-thread bookkeeping at all.
_registry: weakref.WeakSet[Any] = weakref.WeakSet()


def register(lock: ReleasableLock) -> None:
    """Let :func:`released_locks` release ``lock`` while its holder blocks."""
    _registry.add(lock)


def held_locks() -> list[ReleasableLock]:
    """Locks the calling thread holds, in acquisition order (outermost first)."""
    me = threading.get_ident()
    held = []
    for lock in list(_registry):
        stamp = lock._held_stamp(me)
        if stamp is not None:
            held.append((stamp, lock))
    return [lock for _, lock in sorted(held, key=lambda pair: pair[0])]


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
