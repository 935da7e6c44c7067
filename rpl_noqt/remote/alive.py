"""A board server's sign of life that a stalled board cannot hold up: ``NAME-alive``.

A client waiting for a reply must tell a server that is busy (its listener
may spend up to the board's I/O deadline on one access to a stalled board)
from one that is gone (killed, crashed, unreachable). Asking the board
actor itself for a ``pong`` cannot: a busy listener answers late, so the
client had to allow its own I/O timeout *plus* the board's deadline before
giving up. This second, tiny LECO component lives in the server process,
answers nothing but LECO's own RPCs (``pong``...), in its own thread, and
dies with the process. Clients probe it, so a dead server is noticed within
the client's own I/O timeout while a slow board still gets its full deadline.
"""

from __future__ import annotations

import logging
import threading

import zmq
from pyleco.utils.message_handler import MessageHandler

__all__ = ("AliveResponder",)

logger = logging.getLogger(__name__)


class AliveResponder(MessageHandler):
    """Signs in as ``name`` and answers ``pong`` until :meth:`stop`; ``full_name`` None if it could not sign in."""

    def __init__(self, name: str, *, host: str, port: int, context: zmq.Context) -> None:
        super().__init__(name=name, host=host, port=port, context=context,
                         log=logging.getLogger("rpl_noqt.remote.leco"))
        self.timeout = 1.0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rpl-noqt-leco-{name}", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)

    def register_rpc_methods(self) -> None:
        super().register_rpc_methods()
        self.rpc.unregister_method("shut_down")  # nobody on the network stops a server

    @property
    def signed_in_name(self) -> str | None:
        return self.full_name if self.namespace is not None else None

    def _listen_setup(self) -> zmq.Poller:
        try:
            return super()._listen_setup()
        finally:
            self._ready.set()

    def _run(self) -> None:
        try:
            self.listen(stop_event=self._stop, waiting_time=50)
        except Exception:  # noqa: BLE001  clients then probe the actor itself
            logger.warning("the liveness responder %r stopped", self.name, exc_info=True)
        finally:
            self._ready.set()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        try:
            self.close()
        except Exception:  # noqa: BLE001
            logger.debug("closing the liveness responder failed", exc_info=True)
