"""A board server's outgoing data: LECO data-protocol messages on one PUB socket, sent by one thread.

Three kinds of messages leave a server this way, each on its own topic
under the actor's full name (so a subscriber picks with a prefix):

* ``NAME/events``: an attribute changed on the board, whoever changed it
  (``{"module", "name", "value", "by"}``; arrays in binary frames), and a
  ``{"heartbeat"}`` each second the server has nothing else to say;
* ``NAME/stream/MODULE``: one acquisition of a stream (:mod:`.streams`);
* ``NAME/calls``: progress of a long call (``{"call", "progress"}``).

The board's threads only queue (a blinker receiver runs while the board
lock is held, so it must not wait on a socket); one daemon thread owns the
PUB socket. The queue is bounded: when subscribers cannot keep up the
oldest *stream* frames are the ones lost (PUB/SUB drops by design), and the
count is logged, never the events.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import zmq
from pyleco.core.data_message import DataMessage
from pyleco.core.serialization import MessageTypes

from ..events import attribute_changed
from . import payloads

__all__ = ("BoardPublisher", "EventBridge")

logger = logging.getLogger(__name__)

_QUEUE_LIMIT = 256
#: a quiet server publishes ``{"heartbeat": t}`` on NAME/events this often (s)
HEARTBEAT_S = 1.0


class BoardPublisher:
    """Publishes ``(topic suffix, JSON data, frames)`` under ``prefix`` to the proxy at ``address``."""

    def __init__(self, address: str, context: zmq.Context, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.prefix = ""
        self._heartbeat_s = heartbeat_s
        self._queue: queue.Queue[tuple[str, Any, list[bytes]] | None] = queue.Queue(_QUEUE_LIMIT)
        self._dropped = 0
        self._socket: zmq.Socket = context.socket(zmq.PUB)
        self._socket.linger = 0
        self._socket.sndhwm = 64
        self._socket.connect(address)
        self._thread = threading.Thread(target=self._send_loop, name="rpl-noqt-leco-publisher", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Messages dropped because the queue was full."""
        return self._dropped

    def publish(self, suffix: str, data: Any, frames: list[bytes] | None = None) -> None:
        """Queue one message (any thread; never blocks: a full queue drops it and counts it)."""
        try:
            self._queue.put_nowait((suffix, data, frames or []))
        except queue.Full:
            self._dropped += 1
            if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                logger.warning("board server publisher: %d message(s) dropped, subscribers are too slow",
                               self._dropped)

    def _send_loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._heartbeat_s)
            except queue.Empty:  # quiet: say we are here, so listening clients can tell quiet from gone
                item = ("events", {"heartbeat": time.time()}, [])
            if item is None:
                break
            suffix, data, frames = item
            message = DataMessage(f"{self.prefix}/{suffix}", data=data, message_type=MessageTypes.JSON,
                                  additional_payload=frames)
            try:
                self._socket.send_multipart(message.to_frames(), zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self._dropped += 1  # the proxy is not reading: PUB semantics, dropped
            except zmq.ZMQError:
                break
        self._socket.close(linger=0)

    def close(self, timeout: float = 0.5) -> None:
        """Send what is queued (for at most ``timeout`` s) and stop."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        try:
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        self._thread.join(max(0.05, deadline - time.monotonic()))


_acting = threading.local()


def acting_for(requester: str | None) -> None:
    """Record which client the current thread is working for (a change it makes names that client)."""
    _acting.name = requester


class EventBridge:
    """Forwards :data:`rpl_noqt.events.attribute_changed` of one board's modules to ``NAME/events``.

    ``modules`` maps the registry's module names to the PyRPL objects; only
    attributes the registry offers are published (the rest are internal).
    """

    def __init__(self, publisher: BoardPublisher, modules: Mapping[str, Any],
                 attributes: Mapping[str, frozenset[str]]) -> None:
        self._publisher = publisher
        self._names = {id(module): name for name, module in modules.items()}
        self._attributes = attributes
        self._seq = 0
        attribute_changed.connect(self._on_change, weak=False)

    def _on_change(self, sender: Any, *, name: str, value: Any, **_: Any) -> None:
        module = self._names.get(id(sender))
        if module is None or name not in self._attributes.get(module, ()):
            return
        try:
            encoded, frames = payloads.encode(value)
        except (TypeError, ValueError):
            logger.debug("attribute %s.%s changed to a value that does not travel: %r", module, name, value)
            return
        self._seq += 1
        self._publisher.publish("events", {"module": module, "name": name, "value": encoded, "seq": self._seq,
                                           "by": getattr(_acting, "name", None), "t": time.time()}, frames)

    def close(self) -> None:
        attribute_changed.disconnect(self._on_change)
