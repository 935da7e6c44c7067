"""asyncio futures and tasks that other threads may touch.

PyRPL hands the future of an acquisition to whoever called ``single_async()``
and later calls ``future.cancel()`` from whatever thread calls ``stop()``.
Plain asyncio futures allow that only on their loop's thread. These
subclasses forward the state-changing calls to the loop when made from
elsewhere, so they stay awaitable inside coroutines (they *are* asyncio
futures of the background loop) and usable from any thread.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any

__all__ = ("LoopFuture", "LoopTask", "schedule_coroutine")


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    owner = getattr(loop, "_thread_id", None)  # set by BaseEventLoop while running
    return owner is None or owner == threading.get_ident()


class _ThreadSafeMixin:
    """Forward state changes to the owning loop when called from another thread."""

    _loop: asyncio.AbstractEventLoop

    def _forward(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        loop = self.get_loop()  # type: ignore[attr-defined]
        if _on_loop_thread(loop) or loop.is_closed():
            return False
        loop.call_soon_threadsafe(functools.partial(method, self, *args, **kwargs))
        return True

    def cancel(self, msg: Any = None) -> bool:
        if self.done():  # type: ignore[attr-defined]
            return False
        if self._forward(_base(self).cancel, msg):
            return True  # cancellation requested; it lands on the loop momentarily
        return _base(self).cancel(self, msg)

    def add_done_callback(self, fn: Callable[[Any], object], *, context: Context | None = None) -> None:
        if not self._forward(_base(self).add_done_callback, fn, context=context):
            _base(self).add_done_callback(self, fn, context=context)

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        if self._forward(_base(self).remove_done_callback, fn):
            return 1
        return _base(self).remove_done_callback(self, fn)


def _base(obj: object) -> Any:
    return asyncio.Task if isinstance(obj, asyncio.Task) else asyncio.Future


class LoopFuture(_ThreadSafeMixin, asyncio.Future):  # type: ignore[misc]
    """An asyncio Future of the background loop; safe to resolve from any thread."""

    def set_result(self, result: Any) -> None:
        if not self._forward(asyncio.Future.set_result, result):
            asyncio.Future.set_result(self, result)

    def set_exception(self, exception: BaseException | type[BaseException]) -> None:
        if not self._forward(asyncio.Future.set_exception, exception):
            asyncio.Future.set_exception(self, exception)


class LoopTask(_ThreadSafeMixin, asyncio.Task):  # type: ignore[misc]
    """An asyncio Task of the background loop; cancellable from any thread."""


def schedule_coroutine(coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """Start ``coro`` on ``loop`` from any thread without blocking the caller.

    On the loop thread this creates the :class:`LoopTask` directly. From another thread it
    returns at once a :class:`LoopFuture` that follows the task created on the
    loop a moment later (cancelling it cancels the task): the caller never
    waits for the loop, which may be busy waiting for a lock the caller holds.
    """
    if _on_loop_thread(loop) and loop.is_running():
        return LoopTask(coro, loop=loop)
    proxy = LoopFuture(loop=loop)
    loop.call_soon_threadsafe(_start_followed_task, coro, proxy, loop)
    return proxy


def _start_followed_task(coro: Coroutine[Any, Any, Any], proxy: LoopFuture, loop: asyncio.AbstractEventLoop) -> None:
    if proxy.cancelled():
        coro.close()
        return
    task = LoopTask(coro, loop=loop)

    def task_done(t: asyncio.Future[Any]) -> None:
        if proxy.done():
            return
        if t.cancelled():
            asyncio.Future.cancel(proxy)
        elif t.exception() is not None:
            asyncio.Future.set_exception(proxy, t.exception())  # type: ignore[arg-type]
        else:
            asyncio.Future.set_result(proxy, t.result())

    def proxy_done(p: asyncio.Future[Any]) -> None:
        if p.cancelled() and not task.done():
            task.cancel()

    task.add_done_callback(task_done)
    asyncio.Future.add_done_callback(proxy, proxy_done)
