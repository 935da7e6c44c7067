"""DeviceLock: reentrant, starvation-free, releasable while a thread blocks."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from rpl_noqt.runtime import blocking
from rpl_noqt.runtime.locks import DeviceLock


@contextlib.contextmanager
def held_by_another_thread(lock: DeviceLock):
    """Hold ``lock`` in a helper thread for the duration of the block."""
    held, release = threading.Event(), threading.Event()

    def holder():
        with lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    try:
        yield
    finally:
        release.set()
        t.join(5)


def test_reentrant_and_only_the_owner_releases():
    lock = DeviceLock("t")
    with lock:
        with lock:
            assert lock.held_by_me()
        assert lock.locked()
    assert not lock.locked()
    lock.acquire()
    errors = []

    def foreign_release():
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=foreign_release)
    t.start()
    t.join(5)
    lock.release()
    assert errors and "does not hold it" in errors[0]


def test_timeout_and_non_blocking_acquire():
    lock = DeviceLock("t")
    with held_by_another_thread(lock):
        assert lock.acquire(blocking_=False) is False
        start = time.monotonic()
        assert lock.acquire(timeout=0.2) is False
        assert time.monotonic() - start >= 0.19
    assert lock.acquire(timeout=5) is True
    lock.release()


def test_a_waiter_is_not_starved_by_a_thread_that_keeps_reacquiring():
    lock = DeviceLock("t")
    stop = threading.Event()
    got_it = threading.Event()

    def greedy():
        while not stop.is_set():
            with lock:
                time.sleep(0.0005)  # short hold, immediately re-taken

    g = threading.Thread(target=greedy)
    g.start()
    time.sleep(0.05)
    waits = []
    for _ in range(20):  # bounded: 20 fair acquisitions against the greedy thread
        start = time.monotonic()
        with lock:
            waits.append(time.monotonic() - start)
    got_it.set()
    stop.set()
    g.join(5)
    assert len(waits) == 20 and max(waits) < 1.0, f"waits {max(waits):.3f} s: starved"


def test_released_while_blocking_and_restored_with_its_depth():
    lock = DeviceLock("t")
    other_got_it = threading.Event()
    with lock, lock:
        assert blocking.held_locks() == [lock]

        def other():
            with lock:
                other_got_it.set()

        t = threading.Thread(target=other)
        with blocking.released_locks():
            assert not lock.locked() or not lock.held_by_me()
            t.start()
            assert other_got_it.wait(5)
            t.join(5)
        assert lock.held_by_me() and lock._count == 2
    assert not lock.locked() and blocking.held_locks() == []


def test_held_locks_lists_only_the_callers_in_acquisition_order():
    first, second, foreign = DeviceLock("a"), DeviceLock("b"), DeviceLock("c")
    with held_by_another_thread(foreign):
        with second:  # acquired first, so outermost, although created later
            with first, second:
                assert blocking.held_locks() == [second, first]
                with blocking.released_locks():
                    assert not first.locked() and not second.locked() and foreign.locked()
                assert first.held_by_me() and second._count == 2
        assert blocking.held_locks() == []


def test_release_unheld_lock_raises():
    with pytest.raises(RuntimeError, match="does not hold it"):
        DeviceLock("t").release()


def test_fifo_lock_hands_over_in_arrival_order():
    """Six threads queue one after another while the lock is held; they get it in that order
    (threading.Lock promises no order), and a releasing thread cannot barge back in front."""
    from rpl_noqt.runtime.locks import FifoLock

    lock = FifoLock()
    order: list[int] = []
    assert lock.acquire()

    def waiter(i: int) -> None:
        with lock:
            order.append(i)

    threads = []
    for i in range(6):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 5
        while len(lock._waiters) < i + 1 and time.monotonic() < deadline:  # queued before the next starts
            time.sleep(0.001)
    lock.release()
    assert lock.acquire(timeout=5)  # queues behind all six, does not barge
    order.append(99)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4, 5, 99]


def test_fifo_lock_cancelled_wait_gives_up_its_place_and_timeouts_hold():
    from rpl_noqt.runtime.locks import FifoLock

    lock = FifoLock()
    assert lock.acquire()
    flag = threading.Event()
    threading.Timer(0.1, flag.set).start()
    t0 = time.monotonic()
    assert lock.acquire(cancelled=flag.is_set, poll=0.01) is False
    assert 0.05 < time.monotonic() - t0 < 1.0
    assert lock.acquire(timeout=0.05) is False
    assert lock.acquire(blocking=False) is False
    lock.release()
    assert not lock.locked()
    assert lock.acquire(blocking=False)  # nobody left queued: a cancelled waiter does not hold a turn
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()
