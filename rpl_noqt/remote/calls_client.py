"""Client side of long calls: progress while a sweep runs, and cancel from the client.

``remote.pyrpl.networkanalyzer.single()`` blocks as in-process; Ctrl-C
(KeyboardInterrupt) while it waits cancels it on the server too, so the
board is left stopped. To watch or cancel it from elsewhere, submit it::

    call = remote.pyrpl.networkanalyzer.single.submit(on_progress=print)
    ...
    call.progress        # {"done": 120, "total": 400, "fraction": 0.3, ...} as last reported
    call.cancel()        # the server stops the sweep as PyRPL's stop() does
    call.result()        # raises rpl_noqt.CallCancelledError after a cancel

Progress comes from the server on the LECO data protocol (``NAME/calls``),
at most every 50 ms, and once with fraction 1.0 when it completes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .client import RemoteSession

__all__ = ("RemoteCall",)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]


class RemoteCall:
    """One long call on the board server: its result, its progress, a way to cancel it."""

    def __init__(self, session: RemoteSession, action: str, on_progress: ProgressCallback | None = None) -> None:
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be callable, got {on_progress!r}")
        self.id = uuid.uuid4().hex
        self.action = action
        self._session = session
        self._on_progress = on_progress
        self._future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        #: the last progress report (``done``, ``total``, ``fraction``, ``elapsed``...), None before the first
        self.progress: dict[str, Any] | None = None
        self._cancel_requested = False

    # -- what a user calls ---------------------------------------------------------------
    def result(self, timeout: float | None = None) -> Any:
        """The call's return value; raises what the call raised (CallCancelledError after a cancel)."""
        return self._future.result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._future.exception(timeout)

    def done(self) -> bool:
        return self._future.done()

    def add_done_callback(self, fn: Callable[[RemoteCall], None]) -> None:
        self._future.add_done_callback(lambda _f: fn(self))

    def cancel(self) -> bool:
        """Ask the server to stop the call; True if it was running there (it then ends in CallCancelledError).

        A cancel that overtakes the call (still on its way, or waiting for
        a server worker) is kept by the server, and the call starts cancelled.
        """
        if self._future.done():
            return False
        self._cancel_requested = True
        return bool(self._session._request("cancel_call", {"call_id": self.id})[0])

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        fraction = f" {self.progress.get('fraction', 0):.0%}" if self.progress else ""
        return f"<RemoteCall {self.action} {state}{fraction}>"

    # -- run by the session --------------------------------------------------------------
    def _execute(self, request: Callable[[RemoteCall], Any]) -> Any:
        """Run ``request`` (the blocking call_action, sent with our id) in this thread, settle the future."""
        self._session._track_call(self)
        try:
            value = request(self)
        except KeyboardInterrupt:
            self._cancel_on_interrupt()
            self._future.set_exception(KeyboardInterrupt())
            raise
        except BaseException as exc:
            self._future.set_exception(exc)
            raise
        else:
            self._future.set_result(value)
            return value
        finally:
            # progress travels apart from the reply (LECO's data protocol) and may come after it: the
            # session keeps the call for a grace period so the last report still reaches it
            self._session._call_finished(self)

    def _start(self, request: Callable[[RemoteCall], Any]) -> RemoteCall:
        def run() -> None:
            try:
                self._execute(request)
            except BaseException:  # noqa: BLE001  kept in the future for result()
                pass
        threading.Thread(target=run, name=f"rpl-noqt-call-{self.action}", daemon=True).start()
        return self

    def _cancel_on_interrupt(self) -> None:
        try:
            if self.cancel():
                logger.warning("%s: %s interrupted; cancelled on the server", self._session.url, self.action)
        except Exception:  # noqa: BLE001  the server may be gone: nothing left to stop then
            logger.debug("cancel after an interrupt failed", exc_info=True)

    def _progress(self, progress: dict[str, Any]) -> None:
        self.progress = progress
        if self._on_progress is not None:
            try:
                self._on_progress(progress)
            except Exception:  # a user's callback must not end the subscriber
                logger.exception("on_progress callback of %s failed", self.action)
