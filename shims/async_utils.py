"""Served to PyRPL as ``pyrpl.async_utils``: the same API on a background loop.

Upstream runs coroutines on a qasync loop that only turns while Qt events are
pumped, and its ``wait`` pumps them in a busy loop from the main thread only.
Here every coroutine runs on rpl_noqt's background asyncio loop, so:

* ``ensure_future(coro)`` works from any thread and never blocks the caller;
  the future it returns is awaitable in coroutines and cancellable anywhere.
* ``wait(future, timeout)`` blocks the calling thread on a threading primitive
  (no spinning) and raises ``TimeoutError("Timeout exceeded")`` on timeout,
  leaving the future running, as upstream does.
* ``sleep(t)`` blocks the calling thread until the loop reaches ``t`` from
  now (as upstream: when it returns, the loop has done what was due by then);
  ``sleep_async(t)`` awaits ``asyncio.sleep`` on whatever loop runs the
  coroutine.
* ``Event`` is an ``asyncio.Event`` of the background loop whose ``set`` may
  be called from any thread.

``wait`` and ``sleep`` refuse to run on the loop thread itself (they would
deadlock it): inside coroutines use ``await`` and ``sleep_async``, as the
upstream docstring already demands. While a thread blocks in ``wait`` or
``sleep`` it holds no board lock (see :mod:`rpl_noqt.runtime.blocking`).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

from rpl_noqt.runtime import blocking as _blocking
from rpl_noqt.runtime import loop as _loop
from rpl_noqt.errors import LoopThreadError

if TYPE_CHECKING:  # asyncio is imported on first use, keeping 'import pyrpl' light
    import asyncio
    import concurrent.futures

__all__ = (
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "INTERACTIVE",
    "Event",
    "TimeoutError",
    "asyncio_wait",
    "ensure_future",
    "sleep",
    "sleep_async",
    "wait",
)

_logger = logging.getLogger(__name__)

# the values of concurrent.futures' constants, without importing it
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"

#: Upstream switches to a Qt-GUI wait inside IPython; we never need to.
INTERACTIVE = False

if sys.version_info >= (3, 11):
    TimeoutError = TimeoutError  # noqa: A001,PLW0127 - asyncio's is the builtin since 3.11

_TIMEOUT_CLASS: list[type[BaseException]] = []


def _timeout_error() -> type[BaseException]:
    """What ``wait`` raises on timeout: asyncio's TimeoutError *and* the builtin.

    They are one class since Python 3.11; on 3.10 PyRPL catches the builtin
    while users may catch asyncio's, so a class deriving from both is made.
    """
    if sys.version_info >= (3, 11):
        return TimeoutError
    if not _TIMEOUT_CLASS:  # pragma: no cover - Python 3.10
        import asyncio

        class WaitTimeoutError(asyncio.TimeoutError, TimeoutError):  # type: ignore[misc]
            pass

        _TIMEOUT_CLASS.append(WaitTimeoutError)
    return _TIMEOUT_CLASS[0]


def __getattr__(name: str) -> Any:
    # Upstream creates these at import; here they are lazy so that importing
    # PyRPL starts no thread and creates no application.
    if name == "LOOP":
        return _loop.get_loop()
    if name == "TimeoutError":  # Python 3.10 only; 3.11+ binds it at module level
        return _timeout_error()
    if name == "APP":
        from .qtwidgets import QApplication

        return QApplication.instance() or QApplication(["pyrpl"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def sleep_async(delay: float, result: Any = None) -> Any:
    """``await sleep_async(t)``: sleep inside a coroutine without blocking its loop."""
    import asyncio

    if math.isnan(delay):
        raise ValueError("Invalid delay: NaN (not a number)")
    return await asyncio.sleep(max(0.0, delay), result)


def ensure_future(coroutine: Awaitable[Any]) -> asyncio.Future[Any]:
    """Schedule ``coroutine`` on the background loop; return its future at once."""
    import asyncio
    import concurrent.futures

    from rpl_noqt.runtime.futures import LoopFuture, schedule_coroutine

    loop = _loop.get_loop()
    if isinstance(coroutine, asyncio.Future):
        return coroutine
    if asyncio.iscoroutine(coroutine):
        return schedule_coroutine(coroutine, loop)
    if isinstance(coroutine, concurrent.futures.Future):
        proxy = LoopFuture(loop=loop)
        coroutine.add_done_callback(lambda f: _copy_concurrent(f, proxy))
        return proxy
    if hasattr(coroutine, "__await__"):
        return schedule_coroutine(_await(coroutine), loop)
    raise TypeError(f"ensure_future() needs a coroutine or future, got {type(coroutine).__name__}")


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _copy_concurrent(source: concurrent.futures.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


async def asyncio_wait(
    fs: Iterable[asyncio.Future[Any]], *, timeout: float | None = None, return_when: str = ALL_COMPLETED
) -> tuple[set[asyncio.Future[Any]], set[asyncio.Future[Any]]]:
    """``asyncio.wait`` on the running loop (kept for upstream compatibility)."""
    import asyncio

    if asyncio.isfuture(fs) or asyncio.iscoroutine(fs):
        raise TypeError(f"expect a list of futures, not {type(fs).__name__}")
    return await asyncio.wait(set(fs), timeout=timeout, return_when=return_when)


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout):
        raise ValueError(f"timeout must be None or a number of seconds, got {timeout!r}")
    return max(0.0, float(timeout))


def wait(future: Awaitable[Any] | concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
    """Block the calling thread until ``future`` is done; return its result.

    Raises ``TimeoutError("Timeout exceeded")`` after ``timeout`` seconds (the
    future keeps running), and :class:`~rpl_noqt.errors.LoopThreadError` if
    called on the event-loop thread.
    """
    import asyncio
    import concurrent.futures

    timeout = _check_timeout(timeout)
    if _loop.in_loop_thread():
        if asyncio.iscoroutine(future):
            future.close()  # refused: never scheduled, so close it quietly
        raise LoopThreadError(
            "pyrpl.async_utils.wait() was called on the event-loop thread, where it would "
            "deadlock; inside a coroutine use 'await' instead"
        )
    if isinstance(future, concurrent.futures.Future):
        return _wait_concurrent(future, timeout)
    fut = ensure_future(future)
    done = threading.Event()
    if not fut.done():
        loop = fut.get_loop()
        loop.call_soon_threadsafe(_add_callback, fut, done)
        with _blocking.released_locks():
            finished = done.wait(timeout)
        if not finished and not fut.done():
            raise _timeout_error()("Timeout exceeded")
    return fut.result()


def _add_callback(fut: asyncio.Future[Any], done: threading.Event) -> None:
    import asyncio

    asyncio.Future.add_done_callback(fut, lambda _f: done.set())


def _wait_concurrent(future: concurrent.futures.Future[Any], timeout: float | None) -> Any:
    import concurrent.futures

    with _blocking.released_locks():
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():
                return future.result()
            raise _timeout_error()("Timeout exceeded") from None


#: How long past its end a :func:`sleep` waits for a busy event loop (s)
LOOP_GRACE_S = 2.0


def sleep(time_s: float) -> None:
    """Block the calling thread until the event loop has reached ``time_s`` seconds from now.

    Upstream's ``sleep`` is ``wait(ensure_future(sleep_async(t)))``: it ends
    on the loop, so whatever the loop had to do by then (signal deliveries,
    timers, the set-up of a restarted acquisition) has been done when it
    returns. The same here: the sleep ends when the loop's timer fires, i.e.
    after ``time_s`` and not before the loop has caught up with everything due
    until then. A loop still busy ``LOOP_GRACE_S`` past the end (a callback
    waiting for a lock the caller holds, say) no longer holds the caller: it
    returns with a warning instead of deadlocking.
    """
    if math.isnan(time_s):
        raise ValueError("Invalid delay: NaN (not a number)")
    if _loop.in_loop_thread():
        raise LoopThreadError(
            "pyrpl.async_utils.sleep() was called on the event-loop thread, where it would "
            "stall every timer and acquisition; inside a coroutine use 'await sleep_async(t)'"
        )
    delay = max(0.0, float(time_s))
    deadline = time.monotonic() + delay
    done = threading.Event()
    try:
        _loop.call_soon_threadsafe(_set_at, deadline, done)
    except RuntimeError:  # no loop can run any more (interpreter shutting down)
        with _blocking.released_locks():
            time.sleep(delay)
        return
    with _blocking.released_locks():
        if not done.wait(delay + LOOP_GRACE_S):
            _logger.warning("sleep(%.3g): the event loop was still busy %.1f s after the end of the sleep; "
                            "returning without it", delay, LOOP_GRACE_S)


def _set_at(deadline: float, done: threading.Event) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + (deadline - time.monotonic()), done.set)


class Event:
    """An asyncio Event of the background loop; ``set`` works from any thread.

    ``Event()`` returns an instance of an ``asyncio.Event`` subclass (made on
    first use, so that importing PyRPL does not import asyncio).
    """

    def __new__(cls) -> Any:
        return _event_class()()


_EVENT_CLASS: list[type] = []


def _event_class() -> type:
    if _EVENT_CLASS:
        return _EVENT_CLASS[0]
    import asyncio

    class LoopEvent(asyncio.Event):
        __doc__ = Event.__doc__

        def _get_loop(self) -> asyncio.AbstractEventLoop:
            return _loop.get_loop()

        def set(self) -> None:
            if self._value:
                return
            self._value = True  # visible at once to is_set() in every thread
            if _loop.in_loop_thread():
                self._wake()
            else:
                _loop.get_loop().call_soon_threadsafe(self._wake)

        def _wake(self) -> None:
            for waiter in list(self._waiters):
                if not waiter.done():
                    waiter.set_result(True)

    _EVENT_CLASS.append(LoopEvent)
    return LoopEvent
