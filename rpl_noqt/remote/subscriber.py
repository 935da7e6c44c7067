"""A client's end of the LECO data protocol: one SUB socket, one reader thread, handlers by topic.

A :class:`~rpl_noqt.remote.client.RemoteSession` opens one subscriber to
its server's data proxy (address from the server's description) and routes
what arrives by topic: attribute changes to ``rpl_noqt.events``, stream
acquisitions to their :class:`~rpl_noqt.remote.streams_client.RemoteStream`,
call progress to the waiting call. The socket belongs to the reader thread;
other threads change subscriptions through a queue the reader applies
between polls (ZeroMQ sockets are not thread-safe).

Handlers run in the reader thread: they must be short (a stream's handler
only queues the curve).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import zmq
from pyleco.core.data_message import DataMessage

__all__ = ("DataSubscriber",)

logger = logging.getLogger(__name__)

_POLL_MS = 50

Handler = Callable[[DataMessage], None]


class DataSubscriber:
    """Subscribes to topics at the proxy ``address`` and calls each topic's handlers with its messages."""

    def __init__(self, address: str, context: zmq.Context) -> None:
        self.address = address
        self._context = context
        self._handlers: dict[bytes, list[Handler]] = {}
        self._handlers_lock = threading.Lock()
        self._changes: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        #: time.monotonic() of the last message received (the server's heartbeats included)
        self.last_message = time.monotonic()
        self._thread = threading.Thread(target=self._read, name="rpl-noqt-leco-subscriber", daemon=True)
        self._thread.start()
        self._ready.wait(2.0)

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Call ``handler`` for every message whose topic is exactly ``topic``."""
        key = topic.encode()
        with self._handlers_lock:
            first = key not in self._handlers
            self._handlers.setdefault(key, []).append(handler)
        if first:
            self._changes.put((zmq.SUBSCRIBE, key))

    def unsubscribe(self, topic: str, handler: Handler) -> None:
        key = topic.encode()
        with self._handlers_lock:
            handlers = self._handlers.get(key, [])
            if handler in handlers:
                handlers.remove(handler)
            last = key in self._handlers and not handlers
            if last:
                del self._handlers[key]
        if last:
            self._changes.put((zmq.UNSUBSCRIBE, key))

    def _read(self) -> None:
        sock: zmq.Socket = self._context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 64
        try:
            sock.connect(self.address)
        except zmq.ZMQError:
            logger.exception("cannot subscribe at %s", self.address)
            sock.close(linger=0)
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                while True:
                    try:
                        option, key = self._changes.get_nowait()
                    except queue.Empty:
                        break
                    sock.setsockopt(option, key)
                if not sock.poll(_POLL_MS):
                    continue
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    if len(frames) < 2:
                        continue
                    self.last_message = time.monotonic()
                    self._deliver(DataMessage.from_frames(*frames))
        except zmq.ZMQError:
            if not self._stop.is_set():
                logger.exception("the subscriber at %s stopped", self.address)
        finally:
            sock.close(linger=0)

    def _deliver(self, message: DataMessage) -> None:
        with self._handlers_lock:
            handlers = list(self._handlers.get(message.topic, ()))
        for handler in handlers:
            try:
                handler(message)
            except Exception:  # a handler's bug must not end the reader for every other topic
                logger.exception("a handler of topic %r failed", message.topic)

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
