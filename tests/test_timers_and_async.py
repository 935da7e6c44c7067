"""QTimer stand-in, the background loop and the async_utils replacement."""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time

import pytest

from rpl_noqt.runtime import loop
from rpl_noqt.errors import LoopThreadError
from rpl_noqt.shims import async_utils
from rpl_noqt.shims.qtcore import QTimer


def _collect(timer: QTimer) -> tuple[list[str], threading.Event]:
    hits: list[str] = []
    first = threading.Event()

    def on_timeout():
        hits.append(threading.current_thread().name)
        first.set()

    timer.timeout.connect(on_timeout)
    return hits, first


def _wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_single_shot_fires_once_on_the_loop_thread():
    timer = QTimer()
    timer.setSingleShot(True)
    timer.setInterval(10)
    hits, first = _collect(timer)
    timer.start()
    assert timer.isActive()
    assert first.wait(5)
    time.sleep(0.1)
    assert hits == [loop.THREAD_NAME]
    assert not timer.isActive()


def test_periodic_timer_with_float_interval_and_stop_from_another_thread():
    timer = QTimer()
    timer.setInterval(7.5)  # float ms: PyQt would refuse it
    hits, _ = _collect(timer)
    timer.start()
    assert _wait_until(lambda: len(hits) >= 5)
    stopper = threading.Thread(target=timer.stop)
    stopper.start()
    stopper.join(5)
    assert not timer.isActive()
    count = len(hits)
    time.sleep(0.1)
    assert len(hits) <= count + 1  # at most one tick already in flight
    assert timer.interval() == 7.5


def test_timer_started_from_worker_thread_fires():
    timer = QTimer()
    timer.setSingleShot(True)
    hits, first = _collect(timer)
    worker = threading.Thread(target=timer.start, args=(5,))
    worker.start()
    worker.join(5)
    assert first.wait(5)


def test_restart_postpones_and_set_interval_restarts():
    timer = QTimer()
    timer.setSingleShot(True)
    hits, first = _collect(timer)
    timer.start(200)
    timer.start(10)  # restart: only the new deadline counts
    assert first.wait(5)
    time.sleep(0.3)
    assert len(hits) == 1
    assert timer.remainingTime() == -1


def test_restart_to_a_later_deadline_fires_once_at_the_new_one():
    # a restart leaves the queued entry in place (no call to the loop); the loop
    # moves it on to the new deadline: never a timeout at the old one
    timer = QTimer()
    timer.setSingleShot(True)
    hits, first = _collect(timer)
    t0 = time.monotonic()
    timer.start(100)
    time.sleep(0.05)
    timer.start(100)
    assert timer.isActive()
    assert first.wait(5)
    assert time.monotonic() - t0 >= 0.149
    time.sleep(0.15)
    assert len(hits) == 1
    assert not timer.isActive()


def test_stop_then_start_again_before_the_old_deadline():
    timer = QTimer()
    timer.setSingleShot(True)
    hits, first = _collect(timer)
    t0 = time.monotonic()
    timer.start(60)
    timer.stop()
    assert not timer.isActive() and timer.remainingTime() == -1
    time.sleep(0.02)
    timer.start(60)
    assert first.wait(5)
    assert time.monotonic() - t0 >= 0.079
    time.sleep(0.15)
    assert len(hits) == 1


def test_stopped_timer_does_not_fire():
    timer = QTimer()
    timer.setSingleShot(True)
    hits, _ = _collect(timer)
    timer.start(20)
    timer.stop()
    time.sleep(0.1)
    assert hits == []


def test_periodic_timer_restarted_often_ticks_once_per_interval():
    timer = QTimer()
    timer.setInterval(30)
    hits, _ = _collect(timer)
    timer.start()
    for _ in range(10):  # restarts inside the period: no tick yet, no extra tick later
        time.sleep(0.01)
        timer.start()
    assert hits == []
    assert _wait_until(lambda: len(hits) >= 2)
    timer.stop()
    assert 0 < timer.interval() and len(hits) >= 2


def test_invalid_intervals_are_rejected():
    timer = QTimer()
    with pytest.raises(ValueError, match=">= 0 ms, got -1"):
        timer.setInterval(-1)
    with pytest.raises(ValueError, match="nan"):
        timer.start(math.nan)
    with pytest.raises(TypeError, match="milliseconds, got '5'"):
        timer.setInterval("5")  # type: ignore[arg-type]


def test_unreferenced_timer_stops_like_a_deleted_qtimer():
    hits = []

    class Owner:
        def __init__(self):
            self.timer = QTimer()
            self.timer.setInterval(5)
            self.timer.timeout.connect(lambda: hits.append(1))
            self.timer.start()

    owner = Owner()
    assert _wait_until(lambda: len(hits) >= 2)
    del owner
    gc.collect()
    time.sleep(0.05)
    count = len(hits)
    time.sleep(0.1)
    assert len(hits) <= count + 1


def test_static_single_shot_and_errors_in_callback_are_logged(caplog):
    done = threading.Event()
    QTimer.singleShot(5, done.set)
    assert done.wait(5)
    failed = threading.Event()

    def boom():
        failed.set()
        raise RuntimeError("callback failure")

    QTimer.singleShot(0, boom)
    assert failed.wait(5)
    assert _wait_until(lambda: any("singleShot callback" in r.getMessage() for r in caplog.records))


# -- async_utils ----------------------------------------------------------------------
async def _answer(value, delay=0.01):
    await async_utils.sleep_async(delay)
    return value


@pytest.mark.parametrize("where", ["main", "worker"])
def test_ensure_future_and_wait_from_any_thread(where):
    result = {}

    def run():
        fut = async_utils.ensure_future(_answer(42))
        result["value"] = async_utils.wait(fut, timeout=5)
        result["direct"] = async_utils.wait(_answer("coro"), timeout=5)  # a coroutine works too

    if where == "main":
        run()
    else:
        t = threading.Thread(target=run)
        t.start()
        t.join(10)
    assert result == {"value": 42, "direct": "coro"}


def test_wait_timeout_raises_and_does_not_spin():
    fut = async_utils.ensure_future(_answer(1, delay=5))
    cpu0, wall0 = time.process_time(), time.monotonic()
    with pytest.raises(asyncio.TimeoutError, match="Timeout exceeded"):
        async_utils.wait(fut, timeout=0.5)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    assert wall >= 0.45
    assert cpu < 0.25, f"wait() used {cpu:.2f} s CPU in {wall:.2f} s: it spins"
    assert not fut.done()  # upstream leaves the future running
    fut.cancel()
    assert _wait_until(fut.cancelled)


def test_wait_rejects_bad_timeout():
    with pytest.raises(ValueError, match="timeout must be None or a number"):
        async_utils.wait(async_utils.ensure_future(_answer(1)), timeout=float("nan"))


def test_wait_propagates_exceptions():
    async def fail():
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        async_utils.wait(async_utils.ensure_future(fail()), timeout=5)


def test_sleep_blocks_the_caller_without_cpu():
    cpu0, wall0 = time.process_time(), time.monotonic()
    async_utils.sleep(0.3)
    assert time.monotonic() - wall0 >= 0.29
    assert time.process_time() - cpu0 < 0.15


@pytest.mark.parametrize(("busy_s", "sleep_s"), [(0.3, 0.05), (0.2, 0.0), (0.05, 0.25)])
def test_sleep_ends_on_the_loop_after_what_was_due_by_then(busy_s, sleep_s):
    # upstream's sleep is wait(ensure_future(sleep_async(t))): a test that sleeps
    # after starting something on the loop finds it done, even when the loop was
    # busy with a long step (an NA restart computing 10 000 frequencies, say)
    order = []
    loop.call_soon_threadsafe(lambda: (time.sleep(busy_s), order.append("busy step")))
    loop.call_soon_threadsafe(lambda: order.append("queued callback"))
    t0 = time.monotonic()
    async_utils.sleep(sleep_s)
    order.append("sleep returned")
    elapsed = time.monotonic() - t0
    assert order == ["busy step", "queued callback", "sleep returned"]
    assert elapsed >= max(busy_s, sleep_s) - 0.01
    assert elapsed < max(busy_s, sleep_s) + 1.0


def test_sleep_does_not_wait_forever_for_a_stuck_loop(monkeypatch, caplog):
    # a loop callback blocked on something the sleeping thread holds must not deadlock it
    monkeypatch.setattr(async_utils, "LOOP_GRACE_S", 0.2)
    release = threading.Event()
    loop.call_soon_threadsafe(lambda: release.wait(10))
    try:
        t0 = time.monotonic()
        with caplog.at_level("WARNING"):
            async_utils.sleep(0.1)
        elapsed = time.monotonic() - t0
    finally:
        release.set()
    assert 0.29 <= elapsed < 2.0
    assert any("still busy" in r.getMessage() for r in caplog.records)
    async_utils.sleep(0.01)  # the loop is free again: an ordinary sleep, no warning
    assert sum("still busy" in r.getMessage() for r in caplog.records) == 1


def test_wait_and_sleep_on_the_loop_thread_raise_instead_of_deadlocking():
    errors = []

    def on_loop():
        for call in (lambda: async_utils.sleep(0.01), lambda: async_utils.wait(_answer(1))):
            try:
                call()
            except LoopThreadError as exc:
                errors.append(str(exc))

    loop.call(on_loop)
    assert len(errors) == 2 and "event-loop thread" in errors[0]


def test_future_cancel_from_another_thread_cancels_the_task():
    started = threading.Event()

    async def long_running():
        started.set()
        await asyncio.sleep(30)

    fut = async_utils.ensure_future(long_running())
    assert started.wait(5)
    canceller = threading.Thread(target=fut.cancel)
    canceller.start()
    canceller.join(5)
    assert _wait_until(fut.cancelled)


def test_futures_are_awaitable_inside_coroutines_on_the_loop():
    inner = async_utils.ensure_future(_answer("inner"))

    async def outer():
        return await inner

    assert async_utils.wait(async_utils.ensure_future(outer()), timeout=5) == "inner"


def test_event_set_from_a_thread_wakes_a_waiting_coroutine():
    event = async_utils.Event()

    async def waiter():
        await event.wait()
        return "woken"

    fut = async_utils.ensure_future(waiter())
    time.sleep(0.05)
    assert not fut.done()
    setter = threading.Thread(target=event.set)
    setter.start()
    setter.join(5)
    assert event.is_set()
    assert async_utils.wait(fut, timeout=5) == "woken"


def test_sleep_async_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        async_utils.wait(async_utils.ensure_future(async_utils.sleep_async(float("nan"))), timeout=5)


def test_loop_call_from_threads_and_loop_attribute():
    assert loop.call(threading.current_thread) .name == loop.THREAD_NAME
    assert async_utils.LOOP is loop.get_loop()
    assert async_utils.INTERACTIVE is False
