"""One background event loop per process, started lazily, stopped at exit.

PyRPL's timers (config saves, PID integrator readout) and coroutines
(``scope.single_async()``, network-analyzer sweeps, the lockbox) run on this
loop: an asyncio loop driven by ``anyio.run`` in a daemon thread named
``rpl-noqt-loop``, with an anyio :class:`~anyio.from_thread.BlockingPortal`
for blocking calls from other threads.

Why not ``anyio.from_thread.start_blocking_portal``: it runs the loop in a
``ThreadPoolExecutor`` worker, which the interpreter joins *before* ``atexit``
handlers run, so a process that forgot to stop it would hang at exit. Our
thread is a daemon and our ``atexit`` handler stops it after running the
shutdown callbacks (config flushes) registered with :func:`at_shutdown`.

Nothing here runs at import time, and asyncio itself is imported only when the
thread starts on the first :func:`get_loop` (the first timer start or
coroutine): importing PyRPL stays as cheap as it can be.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from typing import TYPE_CHECKING

from ..errors import LoopThreadError

__all__ = (
    "at_shutdown",
    "call",
    "call_soon_threadsafe",
    "get_loop",
    "in_loop_thread",
    "is_running",
    "run_coroutine",
    "schedule",
    "shutdown",
)

if TYPE_CHECKING:  # asyncio and anyio are imported when the loop starts
    import asyncio
    import concurrent.futures

    from anyio.from_thread import BlockingPortal

logger = logging.getLogger(__name__)
T = TypeVar("T")

THREAD_NAME = "rpl-noqt-loop"
_START_TIMEOUT_S = 10.0


class _BackgroundLoop:
    """The process's loop thread; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._shutdown_callbacks: list[Callable[[], object]] = []
        self._ready = threading.Event()
        self._box: dict[str, Any] = {}
        self._pending: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self._atexit_registered = False
        self.timers = _Timers(self)

    # -- start ---------------------------------------------------------------
    def get_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._thread is None:
                self._start()
            ready = self._ready
        if not ready.wait(_START_TIMEOUT_S) or self._loop is None:
            raise RuntimeError(f"the rpl-noqt event loop did not start: {self._box.get('error')!r}")
        return self._loop

    def call_soon_threadsafe(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop soon; never waits for the loop to start."""
        loop = self._loop
        if loop is None:
            with self._lock:
                loop = self._loop
                if loop is None:
                    if self._thread is None:
                        self._start()
                    self._pending.append((callback, args))
                    return
        loop.call_soon_threadsafe(callback, *args)

    def _start(self) -> None:
        # With _lock held. The thread imports asyncio/anyio and builds the
        # loop; callers that only queue work (timers) do not wait for that.
        ready = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            import asyncio

            import anyio
            from anyio.from_thread import BlockingPortal

            async def serve() -> None:
                async with BlockingPortal() as portal:
                    box["portal"] = portal
                    loop = asyncio.get_running_loop()
                    with self._lock:
                        pending, self._pending = self._pending, []
                        self._loop = loop
                    for callback, args in pending:
                        loop.call_soon(callback, *args)
                    loop.call_soon(self.timers.rearm)  # deadlines queued before a restart
                    ready.set()
                    await portal.sleep_until_stopped()

            try:
                anyio.run(serve, backend="asyncio")
            except BaseException as exc:  # reported to waiters, then logged
                box["error"] = exc
                logger.exception("the rpl-noqt event loop stopped with an error")
            finally:
                ready.set()

        thread = threading.Thread(target=run, name=THREAD_NAME, daemon=True)
        self._ready, self._box, self._thread = ready, box, thread
        thread.start()
        self._register_atexit()
        logger.debug("started event loop thread %s", thread.name)

    def _portal_or_raise(self) -> BlockingPortal:
        self.get_loop()
        if "portal" not in self._box:
            raise RuntimeError(f"the rpl-noqt event loop did not start: {self._box.get('error')!r}")
        return self._box["portal"]

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.shutdown)
            self._atexit_registered = True

    # -- queries -------------------------------------------------------------
    def is_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def in_loop_thread(self) -> bool:
        thread = self._thread
        return thread is not None and thread.ident == threading.get_ident()

    # -- calls from other threads ------------------------------------------
    def call(self, func: Callable[..., Awaitable[T] | T], *args: Any) -> T:
        if self.in_loop_thread():
            raise LoopThreadError(
                f"blocking call of {func!r} from the event-loop thread would deadlock; await it instead"
            )
        self.get_loop()
        return self._portal_or_raise().call(func, *args)  # type: ignore[arg-type,return-value]

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.get_loop())

    # -- stop -----------------------------------------------------------------
    def at_shutdown(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if callback not in self._shutdown_callbacks:
                self._shutdown_callbacks.append(callback)
            self._register_atexit()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Run shutdown callbacks, stop the loop (cancelling its tasks), join the thread.

        Safe to call twice; the loop starts again lazily if used afterwards.
        """
        for callback in list(self._shutdown_callbacks):
            try:
                callback()
            except Exception:
                logger.exception("shutdown callback %r failed", callback)
        with self._lock:
            thread, loop, ready, box = self._thread, self._loop, self._ready, self._box
            self._thread = self._loop = None
            self._ready, self._box, self._pending = threading.Event(), {}, []
        if thread is None:
            return
        if thread.ident == threading.get_ident():
            raise LoopThreadError("shutdown() cannot run on the event-loop thread")
        ready.wait(_START_TIMEOUT_S)
        portal = box.get("portal")
        if portal is not None and loop is not None and not loop.is_closed():
            import asyncio
            import concurrent.futures

            # bounded: a task stuck in a blocking call must not hang interpreter exit
            try:
                asyncio.run_coroutine_threadsafe(portal.stop(cancel_remaining=True), loop).result(timeout)
            except (RuntimeError, concurrent.futures.TimeoutError):
                logger.error("event loop did not stop within %.1f s; leaving its daemon thread", timeout)
        thread.join(timeout)
        if thread.is_alive():
            logger.error("event loop thread did not stop within %.1f s (a task blocks it)", timeout)
        elif loop is not None and not loop.is_closed():
            logger.debug("event loop stopped")


class _Timers:
    """Deadlines (``time.monotonic()``) served on the loop by a single asyncio handle.

    :meth:`schedule` is cheap from any thread: it pushes onto a heap and wakes
    the loop only when the new deadline is earlier than the time the loop will
    wake anyway (its armed handle, or a wake-up already on its way). Timers
    that are (re)started often therefore cost the caller no cross-thread call
    and the loop no extra wake-up. Callbacks run on the loop thread, in
    deadline order; an exception is logged and the others still run.
    """

    def __init__(self, owner: _BackgroundLoop) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._heap: list[tuple[float, int, Callable[..., object], tuple[Any, ...]]] = []
        self._seq = itertools.count()  # ties run in scheduling order
        # the loop wakes by _wake_at (its armed handle, or a rearm on its way to it);
        # only valid while _wake_loop is the running loop
        self._wake_at: float | None = None
        self._wake_loop: Any = None
        self._handle: Any = None  # loop thread only

    def schedule(self, deadline: float, callback: Callable[..., object], *args: Any) -> None:
        with self._lock:
            heapq.heappush(self._heap, (deadline, next(self._seq), callback, args))
            loop = self._owner._loop
            wake_at = self._wake_at
            if loop is not None and self._wake_loop is loop and wake_at is not None and wake_at <= deadline:
                return  # the loop wakes before this is due and will arm for it
            self._wake_at, self._wake_loop = deadline, loop
        self._owner.call_soon_threadsafe(self.rearm)

    def rearm(self) -> None:
        """On the loop: arm the handle for the earliest deadline."""
        loop = self._owner._loop
        if loop is None:  # stopping: the next loop re-arms when it starts
            return
        with self._lock:
            deadline = self._heap[0][0] if self._heap else None
            self._wake_at, self._wake_loop = deadline, loop
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        if deadline is not None:
            self._handle = loop.call_at(loop.time() + (deadline - time.monotonic()), self._run_due)

    def _run_due(self) -> None:
        self._handle = None
        now = time.monotonic()
        due = []
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                due.append(heapq.heappop(heap))
        for _deadline, _seq, callback, args in due:
            try:
                callback(*args)
            except Exception:
                logger.exception("timer callback %r raised", callback)
        self.rearm()


_LOOP = _BackgroundLoop()


def get_loop() -> asyncio.AbstractEventLoop:
    """The background asyncio loop (starting its thread on first use)."""
    return _LOOP.get_loop()


def call_soon_threadsafe(callback: Callable[..., object], *args: Any) -> None:
    """Queue ``callback(*args)`` for the loop thread (starting it if needed) without waiting."""
    _LOOP.call_soon_threadsafe(callback, *args)


def schedule(deadline: float, callback: Callable[..., object], *args: Any) -> None:
    """Run ``callback(*args)`` on the loop thread at ``deadline`` (``time.monotonic()``).

    Cheap from any thread: the loop is woken only if it would otherwise sleep
    past ``deadline``. Not cancellable: a callback checks whether it is still wanted.
    """
    _LOOP.timers.schedule(deadline, callback, *args)


def is_running() -> bool:
    """Whether the loop thread is running (never starts it)."""
    return _LOOP.is_running()


def in_loop_thread() -> bool:
    """Whether the caller runs on the loop thread."""
    return _LOOP.in_loop_thread()


def call(func: Callable[..., Awaitable[T] | T], *args: Any) -> T:
    """Run ``func(*args)`` (sync or async) on the loop and return its result.

    Raises :class:`~rpl_noqt.errors.LoopThreadError` from the loop thread.
    """
    return _LOOP.call(func, *args)


def run_coroutine(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Schedule ``coro`` on the loop from any thread; returns a concurrent Future."""
    return _LOOP.run_coroutine(coro)


def at_shutdown(callback: Callable[[], object]) -> None:
    """Run ``callback`` (once) before the loop stops at exit or :func:`shutdown`."""
    _LOOP.at_shutdown(callback)


def shutdown(timeout: float = 5.0) -> None:
    """Flush (shutdown callbacks), stop the loop, join its thread."""
    _LOOP.shutdown(timeout)
