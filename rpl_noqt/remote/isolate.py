"""``rpl_noqt.connect(host, port, isolate=True)``: the board's server in a child process of this one.

The child owns the board (its one socket, PyRPL, the config file) and serves
it as a LECO actor on its own embedded coordinator, bound to a free
loopback port; this process gets a :class:`~rpl_noqt.remote.client.RemoteSession`
to it. A crash in PyRPL or the board's client then cannot take this process
down, and this process's GIL, threads and Qt are none of PyRPL's business.

Lifetime, both ways:

* the child exits when this process dies or drops it, whatever the way: it
  watches its stdin, a pipe whose only writer is this process (end of file:
  the parent closed it or died), and its parent's pid (a parent that died
  while a forked process held a copy of the pipe). It then closes the board
  session (config flushed, board socket closed) and exits: no orphan keeps
  the board. Ctrl-C in a terminal does not reach it: the parent decides.
* a child that crashed or was killed is noticed at the next poll slice of a
  call in progress (50 ms), not after a silence limit: the call raises
  :class:`~rpl_noqt.errors.BoardConnectionError` naming the exit code, and so
  does every later call (nobody restarts it: connect again).

Closing the session's last user closes the child's stdin and waits for it
to exit (terminated, then killed, if it does not within a few seconds).
The start-up handshake is one JSON line each way: the settings down the
child's stdin, and "ready" (or the error, with the fields of a
BoardConnectionError) up a private copy of its stdout; the child's own
stdout is redirected to its stderr, which is this process's.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import BoardConnectionError, BoardTimeoutError

__all__ = ("connect_isolated",)

logger = logging.getLogger(__name__)

#: seconds a child may take to import PyRPL and connect (on top of connect_timeout)
START_TIMEOUT_S = 60.0
#: seconds a child is given to close its session and exit once told to
STOP_TIMEOUT_S = 5.0
_READY = "rpl-noqt-isolated "
_PARENT_POLL_S = 0.5

_names = itertools.count(1)
_ISOLATED: dict[tuple[str, int], Any] = {}
_LOCK = threading.Lock()


class _Child:
    """The server process: its liveness (for the link) and its orderly stop (for the session's close)."""

    def __init__(self, proc: subprocess.Popen[str], board: str) -> None:
        self.proc = proc
        self.board = board

    def liveness(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"the isolated server process (pid {self.proc.pid}) of {self.board} {how}"

    def stop(self) -> None:
        proc = self.proc
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()  # end of file on its stdin: the child closes the board and exits
            except OSError:
                pass
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("isolated server of %s did not exit within %g s; terminating it", self.board,
                           STOP_TIMEOUT_S)
            proc.terminate()
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def connect_isolated(hostname: str, port: int, key: tuple[str, int], *, config: Any, ssh: Any, strict: Any,
                     connect_timeout: float | None, io_timeout: float | None, **pyrpl_kwargs: Any) -> Any:
    """Start (or join) the isolated server of the board ``key`` and return a RemoteSession to it.

    ``config``, ``ssh`` and ``strict`` are passed on only if given (``None``
    config: in memory). Called by :func:`rpl_noqt.connect` with ``isolate=True``.
    """
    from ._deps import require_pyleco

    require_pyleco()
    from ..board.policy import LinkPolicy
    from ..session import SessionConfigError
    from .client import RemoteSession, publish_session
    from .wire import LecoAddress

    with _LOCK:
        session = _ISOLATED.get(key)
        if session is not None and not session.closed:
            session._users += 1
            return session
    policy = LinkPolicy.from_env(connect_timeout=connect_timeout, io_timeout=io_timeout)
    spec: dict[str, Any] = {"host": hostname, "port": port, "parent": os.getpid(),
                            "name": f"iso{os.getpid()}-{next(_names)}", "pyrpl_kwargs": pyrpl_kwargs,
                            "connect_timeout": connect_timeout, "io_timeout": io_timeout}
    if config is not None:
        spec["config"] = {"path": str(config)} if isinstance(config, Path) else {"name": config}
    for name, value in (("ssh", ssh), ("strict", strict)):
        if value is not None:
            spec[name] = value
    try:
        line = json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SessionConfigError(f"isolate=True passes the settings to a child process as JSON: {exc}") from None
    board = f"{hostname}:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "rpl_noqt.remote.isolate"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    child = _Child(proc, board)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        status = _read_status(proc, START_TIMEOUT_S + policy.connect_timeout)
    except BaseException:
        child.stop()
        raise
    if status is None:
        child.stop()
        gone = child.liveness()
        raise BoardConnectionError(board, "start the isolated server",
                                   gone or f"no answer within {START_TIMEOUT_S + policy.connect_timeout:g} s")
    if "error" in status:
        child.stop()
        raise _rebuild(status["error"], board)
    address = LecoAddress(status["name"], "127.0.0.1", int(status["port"]))
    session = RemoteSession(address, connect_timeout=policy.connect_timeout, io_timeout=policy.io_timeout,
                            registry_hash=None, lock_timeout=10.0, liveness=child.liveness, on_close=child.stop)
    session.isolated_pid = proc.pid
    return publish_session(_ISOLATED, _LOCK, key, session)  # a race lost: join the winner's child


def _read_status(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        try:
            for text in proc.stdout:
                if text.startswith(_READY):
                    lines.put(text[len(_READY):])
                    return
        except (OSError, ValueError):
            pass
        lines.put("")

    threading.Thread(target=read, name="rpl-noqt-isolate-start", daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = lines.get(timeout=0.1)
            break
        except queue.Empty:
            if time.monotonic() > deadline:
                return None
    if not text:
        return None
    status = json.loads(text)
    return status if isinstance(status, dict) else None


def _rebuild(error: dict[str, Any], board: str) -> Exception:
    kind = error.get("type")
    message = str(error.get("message", "?"))
    if kind in ("BoardConnectionError", "BoardTimeoutError"):
        cls = BoardTimeoutError if kind == "BoardTimeoutError" else BoardConnectionError
        address = error.get("address")
        return cls(str(error.get("board", board)), str(error.get("operation", "?")), str(error.get("cause", message)),
                   address=address if isinstance(address, int) else None)
    if kind == "SessionConfigError":
        from ..session import SessionConfigError

        return SessionConfigError(message)
    if kind in ("ValueError", "TypeError"):
        return (ValueError if kind == "ValueError" else TypeError)(message)
    return BoardConnectionError(board, "start the isolated server", f"{kind}: {message}")


# -- the child ------------------------------------------------------------------------------------
def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_main() -> int:
    status = os.fdopen(os.dup(1), "w")  # the handshake's private copy of stdout
    os.dup2(2, 1)  # anything PyRPL prints goes to stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent to handle
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def report(message: dict[str, Any]) -> None:
        status.write(_READY + json.dumps(message) + "\n")
        status.flush()

    spec = json.loads(sys.stdin.readline() or "null")
    if not isinstance(spec, dict):
        return 2
    parent = spec["parent"]
    server = None
    try:
        server = _start(spec)
    except Exception as exc:  # reported to the parent, which raises it
        error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, BoardConnectionError):
            error.update(board=exc.board, operation=exc.operation, cause=exc.cause, address=exc.address)
        report({"error": error})
        return 1
    report({"name": server.name, "port": server.coordinator_port, "pid": os.getpid()})
    status.close()

    def watch_stdin() -> None:
        try:
            while sys.stdin.read(4096):
                pass
        except (OSError, ValueError):
            pass
        stop.set()  # end of file: the parent closed us or died

    threading.Thread(target=watch_stdin, name="rpl-noqt-isolate-lifeline", daemon=True).start()
    try:
        while not stop.wait(_PARENT_POLL_S):
            if os.getppid() != parent:
                logger.warning("isolated server: parent %d is gone; closing the board", parent)
                break
            if server.wait(0):
                logger.error("isolated server stopped on its own")
                return 1
    finally:
        server.close()  # config flushed, board socket closed, coordinator stopped
    return 0


def _start(spec: dict[str, Any]) -> Any:
    from .server import serve

    kwargs: dict[str, Any] = {k: spec[k] for k in ("ssh", "strict") if k in spec}
    config = spec.get("config")
    if config is not None:
        kwargs["config"] = Path(config["path"]) if "path" in config else config["name"]
    for attempt in range(5):
        port = _free_loopback_port()
        try:
            server = serve(spec["host"], spec["port"], name=spec["name"], coordinator=("127.0.0.1", port),
                           connect_timeout=spec.get("connect_timeout"), io_timeout=spec.get("io_timeout"),
                           **kwargs, **spec["pyrpl_kwargs"])
        except BoardConnectionError as exc:
            if exc.operation.startswith(("find the LECO coordinator", "sign in")) and attempt < 4:
                continue  # the free port was taken meanwhile: another one
            raise
        if server.embedded is not None:
            return server
        server.close()  # someone else's coordinator answered there: ours must be private
    raise BoardConnectionError(f"{spec['host']}:{spec['port']}", "start the isolated server",
                               "no free loopback port for its coordinator after 5 attempts")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="rpl-noqt isolated server: %(levelname)s %(message)s")
    sys.exit(_child_main())
