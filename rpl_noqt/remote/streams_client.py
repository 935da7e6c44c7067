"""Client side of streams: ``remote.rp.scope.stream()`` and the thread that keeps subscriptions alive.

A :class:`RemoteStream` subscribes to the server's one acquisition loop for
a module (:mod:`.streams`) and hands out its results as they come::

    with remote.rp.scope.stream(maxlen=4) as stream:
        for curve in stream:            # or stream.get(timeout=2.0)
            ...

It keeps the newest ``maxlen`` results (a slow reader loses the oldest,
counted in :attr:`RemoteStream.dropped`, and never slows the board or the
other subscribers). What goes wrong reaches the reader as an exception from
``get()``/the iteration, never as silence: the server's acquisition error
(``BoardConnectionError``, a scope that did not trigger...), and a server
that is gone (its lease renewal fails within the link's silence limit).

One :class:`StreamKeeper` per session renews every open stream's lease once
a second and resubscribes a stream the server forgot (it restarted).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from pyleco.core.data_message import DataMessage

from ..errors import BoardConnectionError
from . import payloads

if TYPE_CHECKING:  # pragma: no cover
    from .client import RemoteSession

__all__ = ("RemoteStream", "StreamClosedError", "StreamKeeper")

logger = logging.getLogger(__name__)

RENEW_EVERY_S = 1.0


class StreamClosedError(RuntimeError):
    """``get()`` on a stream that was closed (by its user or with its session)."""


class RemoteStream:
    """The acquisitions of one remote module, as the server publishes them."""

    def __init__(self, session: RemoteSession, module: str, *, maxlen: int = 8,
                 callback: Callable[[Any], None] | None = None) -> None:
        if not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1:
            raise ValueError(f"maxlen must be an int >= 1, got {maxlen!r}")
        self.module = module
        self._session = session
        self._callback = callback
        self._items: collections.deque[Any] = collections.deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self.topic: str | None = None
        #: results lost to a slow reader (or on the way)
        self.dropped = 0
        #: results received
        self.received = 0
        #: "running", "paused" (another client holds the lock) or "error", as the server last said
        self.status = "starting"
        self.reason = ""
        self.last_seq = 0

    # -- what a user calls ---------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Any:
        """The oldest result not yet taken; waits up to ``timeout`` s (None: until one comes or an error).

        Raises the stream's error (once), ``TimeoutError`` after ``timeout``,
        :class:`StreamClosedError` once closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._items:
                    return self._items.popleft()
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                if self._closed:
                    raise StreamClosedError(f"the stream of {self.module} from {self._session.url} is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"no result from the stream of {self.module} within {timeout:g} s "
                                       f"(status: {self.status}{': ' + self.reason if self.reason else ''})")
                self._cond.wait(remaining)

    def __iter__(self) -> Iterator[Any]:
        """Results until the stream is closed (an error ends the iteration by raising)."""
        while True:
            try:
                yield self.get()
            except StreamClosedError:
                return

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unsubscribe (the server's loop stops with its last subscriber). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._session._stream_closed(self)

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.status
        return f"<RemoteStream {self.module} of {self._session.url} {state}, {self.received} received>"

    # -- fed by the session's subscriber and keeper ---------------------------------------
    def _on_message(self, message: DataMessage) -> None:
        data = message.data
        if not isinstance(data, dict):
            return
        if "status" in data:
            self._on_status(data)
            return
        try:
            value = payloads.decode(data.get("value"), message.payload[1:])
        except payloads.PayloadError:
            logger.warning("stream %s: a malformed result was dropped", self.module)
            return
        seq = data.get("seq")
        with self._cond:
            if isinstance(seq, int):
                if self.last_seq and seq > self.last_seq + 1:
                    self.dropped += seq - self.last_seq - 1
                self.last_seq = seq
            self.received += 1
            self.status, self.reason = "running", ""
            if self._callback is None:
                if len(self._items) == self._items.maxlen:
                    self.dropped += 1
                self._items.append(value)
                self._cond.notify_all()
        if self._callback is not None:
            self._callback(value)

    def _on_status(self, data: dict[str, Any]) -> None:
        error = data.get("error")
        with self._cond:
            self.status = str(data.get("status", "?"))
            self.reason = str(data.get("reason", ""))
            if isinstance(error, dict):
                from .client import error_from_object

                self._error = error_from_object(error, self._session.url)
                self._cond.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self.status, self.reason = "error", str(error)
            self._error = error
            self._cond.notify_all()


class StreamKeeper:
    """A session's housekeeping thread, once a second: renew the open streams' leases, and check that
    the server's publications still arrive (:meth:`RemoteSession._check_data` reconnects if not).

    It runs for the session's life (one wake-up a second), so a client that only listens for
    events notices a restarted server (and resubscribes) instead of going quiet for good.
    """

    def __init__(self, session: RemoteSession) -> None:
        self._session = session
        self._streams: list[RemoteStream] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def add(self, stream: RemoteStream) -> None:
        with self._lock:
            self._streams.append(stream)
        self.ensure_running()

    def ensure_running(self) -> None:
        """Start the thread if it is not running (and the keeper was not closed)."""
        with self._lock:
            if self._stop or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name="rpl-noqt-session-keeper", daemon=True)
            self._thread.start()

    def remove(self, stream: RemoteStream) -> bool:
        """Forget ``stream``; True if it was the last one of its module."""
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)
            return not any(s.module == stream.module for s in self._streams)

    def streams(self) -> list[RemoteStream]:
        with self._lock:
            return list(self._streams)

    def _run(self) -> None:
        failed: set[str] = set()
        while True:
            self._wake.wait(RENEW_EVERY_S)
            self._wake.clear()
            with self._lock:
                if self._stop:
                    self._thread = None
                    return
                modules = sorted({s.module for s in self._streams})
            if self._session._wants_events() or modules:
                self._session._check_data()
            for module in modules:
                try:
                    if not self._session._request("stream_renew", {"module": module})[0]:
                        self._session._request("stream_start", {"module": module})
                        logger.info("%s: stream %s resubscribed", self._session.url, module)
                    failed.discard(module)
                except BoardConnectionError as exc:
                    if module not in failed:  # once per outage, to every stream of that module
                        failed.add(module)
                        for stream in self.streams():
                            if stream.module == module:
                                stream._fail(exc)
                except Exception as exc:  # noqa: BLE001  e.g. refused after the server restarted differently
                    if module not in failed:
                        failed.add(module)
                        for stream in self.streams():
                            if stream.module == module:
                                stream._fail(exc)

    def close(self, timeout: float = 1.0) -> None:
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
