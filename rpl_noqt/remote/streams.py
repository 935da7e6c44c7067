"""Server side of ``remote.rp.scope.stream()``: one acquisition loop per module, for every subscriber.

A client starts a stream with the ``stream_start`` request and then only
listens on the LECO data protocol (topic ``NAME/stream/MODULE``): the
server runs *one* loop of the module's ``single()`` and publishes each
result once, whatever the number of subscribers, so a second dashboard
watching the scope costs the board nothing.

Subscribers hold leases, renewed by their clients every second: a client
that died stops counting within :data:`LEASE_S`, and the loop ends when no
lease is left (it finishes the acquisition in progress, never leaves the
module half-set). The loop acquires with the module's current settings;
a client changes them with ordinary sets, so the same lock rules apply: a
lock held by a client that is not a subscriber pauses the stream (its
acquisitions would re-arm the module under the lock holder's feet), and a
paused or failing stream says so on its topic instead of going silent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import BoardConnectionError
from . import payloads
from .errors import RemoteNameError
from .publisher import BoardPublisher, acting_for
from .surface import BoardSurface

__all__ = ("LEASE_S", "STREAMABLE", "StreamHub")

logger = logging.getLogger(__name__)

#: module kinds that stream, and the method one acquisition calls
STREAMABLE: Mapping[str, str] = {"Scope": "single", "SpectrumAnalyzer": "single", "NetworkAnalyzer": "single"}
#: seconds a subscriber counts without renewing
LEASE_S = 5.0
_RETRY_S = 0.5
#: a stream's scope curve may take this long beyond its own length before it counts as "no trigger"
SCOPE_MARGIN_S = 5.0
_PAUSE_S = 0.2


class _Stream:
    """The acquisition loop of one module, while it has subscribers."""

    def __init__(self, hub: StreamHub, module: str) -> None:
        self.hub = hub
        self.module = module
        self.leases: dict[str, float] = {}
        self.seq = 0
        self.restarts = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"rpl-noqt-stream-{module}", daemon=True)

    def _run(self) -> None:
        hub, status = self.hub, None
        try:
            while True:
                with hub.mutex:
                    now = time.monotonic()
                    for requester in [r for r, t in self.leases.items() if now - t > LEASE_S]:
                        del self.leases[requester]
                        logger.info("stream %s: subscriber %s stopped renewing", self.module, requester)
                    if self.stopping or not self.leases:
                        hub.streams.pop(self.module, None)
                        return
                    subscribers = set(self.leases)
                holder = hub.surface.locks.holder_covering(f"{self.module}.single")
                if holder is not None and holder[1] not in subscribers:
                    status = self._status(status, "paused", f"{holder[1]} holds the lock on "
                                          f"{holder[0] or 'the board'}")
                    time.sleep(_PAUSE_S)
                    continue
                try:
                    value = hub.acquire(self.module)
                except asyncio.CancelledError:
                    # PyRPL restarts a running acquisition when one of its settings changes (a client set
                    # scope.duration) or another single() renews the run: take the next one, with the new settings
                    self.restarts += 1
                    continue
                except Exception as exc:  # noqa: BLE001  published to the subscribers, then retried
                    status = self._status(status, "error", str(exc), error=exc)
                    time.sleep(_RETRY_S)
                    continue
                if status is not None:
                    status = self._status(status, "running", "")
                self.seq += 1
                encoded, frames = payloads.encode(value)
                hub.publisher.publish(f"stream/{self.module}", {"seq": self.seq, "t": time.time(), "value": encoded},
                                      frames)
        except BaseException:
            logger.exception("stream %s stopped by an unexpected error; its subscribers will resubscribe", self.module)
            raise
        finally:
            with hub.mutex:  # never leave a dead loop registered: a later start() would join it and wait for ever
                if hub.streams.get(self.module) is self:
                    del hub.streams[self.module]
            logger.info("stream %s ended after %d acquisition(s) (%d restarted by a settings change)", self.module,
                        self.seq, self.restarts)

    def _status(self, previous: str | None, state: str, reason: str, error: BaseException | None = None) -> str:
        key = f"{state}:{reason}"
        if key != previous:  # once per change, not once per retry
            data: dict[str, Any] = {"status": state, "reason": reason, "seq": self.seq, "t": time.time()}
            if error is not None:
                data["error"] = self.hub.describe_error(error)
            self.hub.publisher.publish(f"stream/{self.module}", data)
            if state != "running":
                logger.warning("stream %s %s: %s", self.module, state, reason)
        return key


class StreamHub:
    """The streams of one board server (``stream_start`` / ``stream_renew`` / ``stream_stop``)."""

    def __init__(self, surface: BoardSurface, publisher: BoardPublisher, modules: Mapping[str, Any],
                 describe_error: Callable[[BaseException], dict[str, Any]]) -> None:
        self.surface = surface
        self.publisher = publisher
        self.describe_error = describe_error
        self._modules = {name: module for name, module in modules.items()
                         if type(module).__name__ in STREAMABLE}
        self.streams: dict[str, _Stream] = {}
        self.mutex = threading.Lock()
        self._closed = False

    @property
    def streamable(self) -> list[str]:
        """The modules a client may stream."""
        return sorted(self._modules)

    def _check(self, module: object) -> str:
        if not isinstance(module, str) or module not in self._modules:
            raise RemoteNameError(f"no stream for module {module!r} (streams: {', '.join(self.streamable)})")
        return module

    def start(self, module: object, requester: str) -> dict[str, Any]:
        """Subscribe ``requester`` to ``module``'s stream, starting its loop if it is the first."""
        name = self._check(module)
        self.surface.locks.check(requester, f"{name}.single", "stream")
        with self.mutex:
            if self._closed:
                raise BoardConnectionError(self.surface.board, "stream", "the server is shutting down")
            stream = self.streams.get(name)
            fresh = stream is None or stream.stopping or not stream.thread.is_alive()
            if fresh:
                stream = self.streams[name] = _Stream(self, name)
            assert stream is not None
            stream.leases[requester] = time.monotonic()
            if fresh:
                stream.thread.start()
                logger.info("stream %s started for %s", name, requester)
        return {"topic": f"stream/{name}", "lease": LEASE_S, "subscribers": len(stream.leases)}

    def renew(self, module: object, requester: str) -> bool:
        """Keep ``requester`` subscribed; False if it was not (its lease expired or the server restarted)."""
        name = self._check(module)
        with self.mutex:
            stream = self.streams.get(name)
            if stream is None or stream.stopping or requester not in stream.leases:
                return False
            stream.leases[requester] = time.monotonic()
            return True

    def stop(self, module: object, requester: str) -> bool:
        """Unsubscribe ``requester``; the loop ends after its current acquisition when nobody is left."""
        name = self._check(module)
        with self.mutex:
            stream = self.streams.get(name)
            if stream is None or stream.leases.pop(requester, None) is None:
                return False
            return True

    def subscribers(self, module: object) -> int:
        name = self._check(module)
        with self.mutex:
            stream = self.streams.get(name)
            return 0 if stream is None else len(stream.leases)

    def acquire(self, module: str) -> Any:
        """One acquisition, as the stream's own client (lock checks were done by the loop)."""
        obj = self._modules[module]
        acting_for(None)
        kind = type(obj).__name__
        method = getattr(obj, STREAMABLE[kind])
        if kind == "Scope":  # a trigger that never comes must not stall the loop for ever (but a busy
            # board or machine must not make a curve that does come a timeout either)
            return method(timeout=2.0 * float(obj.duration) * max(1, int(obj.trace_average)) + SCOPE_MARGIN_S)
        return method()

    def close(self, timeout: float = 1.0) -> None:
        """Stop every loop (each finishes its acquisition in progress, waited for at most ``timeout``)."""
        with self.mutex:
            self._closed = True
            streams = list(self.streams.values())
            for stream in streams:
                stream.stopping = True
        deadline = time.monotonic() + timeout
        for stream in streams:
            stream.thread.join(max(0.0, deadline - time.monotonic()))

