"""One session per board: ``rpl_noqt.connect(hostname, port)``.

A board (host, port) has at most one PyRPL instance and one monitor-server
connection in the process, however many threads or plugins use it. Every
``connect`` for the same board returns the same :class:`Session` and counts
one more user; each user calls ``close()`` (or uses ``with``) and the board is
disconnected when the last one does. Asking for the same board with
different settings is an error naming both, never a silent reuse.

Threading rules, in short: any thread may use ``session.pyrpl`` / ``session.rp``
at any time; each attribute access and module method is atomic on its board;
hold ``session.lock`` for a multi-step transaction; a thread waiting for an
acquisition (``scope.single()``) does not hold the board meanwhile.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .board import policy as link_policy
from .board import values
from .board.configfile import ConfigNameError, check_writable, resolve_config
from .board.policy import LinkPolicy
from .errors import BoardConnectionError
from .runtime.locks import DeviceLock

if TYPE_CHECKING:  # pragma: no cover
    from .remote.client import RemoteSession

__all__ = ("Session", "SessionConfigError", "connect", "open_sessions")

logger = logging.getLogger(__name__)

_UNSET: Any = object()
_FAKE_HOSTS = ("_FAKE_REDPITAYA_", "_FAKE_")
_RESERVED_KWARGS = {"hostname", "port", "gui", "config", "rpl_noqt_direct"}


class SessionConfigError(ValueError):
    """A connect() call's settings are invalid or conflict with an open session."""


def _normalise_host(hostname: str) -> str:
    if not isinstance(hostname, str) or not hostname.strip():
        raise SessionConfigError(f"hostname must be a non-empty string, got {hostname!r}")
    hostname = hostname.strip()
    if hostname in _FAKE_HOSTS:
        return "_FAKE_REDPITAYA_"
    try:
        return str(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    try:  # localhost and names in /etc/hosts resolve without a network
        return str(socket.getaddrinfo(hostname, None, socket.AF_INET)[0][4][0])
    except OSError:
        return hostname.lower()


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise SessionConfigError(f"port must be an integer from 1 to 65535, got {port!r}")
    return port


class Session:
    """The one PyRPL instance of a board, shared by all its users in the process."""

    def __init__(self, key: tuple[str, int], hostname: str, settings: dict[str, Any]) -> None:
        self.key = key
        self.hostname = hostname
        self.port = key[1]
        self.settings = settings
        #: timeouts and reconnects of this board's link
        self.policy: LinkPolicy = settings.get("policy") or LinkPolicy.from_env()
        self._users = 0
        self._closed = False
        self._pyrpl: Any = None

    # -- public --------------------------------------------------------------------------
    @property
    def pyrpl(self) -> Any:
        """The ``pyrpl.Pyrpl`` instance (``gui=False``)."""
        self._check_open()
        return self._pyrpl

    @property
    def rp(self) -> Any:
        """The board's ``RedPitaya`` object (hardware modules: ``rp.asg0`` ...)."""
        return self.pyrpl.rp

    @property
    def lock(self) -> DeviceLock:
        """The board's reentrant lock: ``with session.lock:`` makes a transaction."""
        from .runtime.threadsafe import board_lock

        lock = board_lock(self.pyrpl.rp)
        assert lock is not None
        return lock

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def link_up(self) -> bool:
        """False while the board does not answer (an outage the client is riding out)."""
        client = self._client()
        return bool(getattr(client, "link_up", client is not None))

    @property
    def state_lost(self) -> bool:
        """True once the board came back from an outage with its FPGA reloaded.

        Its registers then hold reset values, not what the configuration says:
        :meth:`restore` writes the configuration back. Nothing does it silently.
        """
        return bool(getattr(self._client(), "state_lost", False))

    def restore(self) -> int:
        """Write the configuration back to the board (after :attr:`state_lost`); returns modules restored.

        As PyRPL does at start-up, every module that no other module owns
        loads its setup attributes from the config tree (software modules
        first, an owner sets up what it owns), under the board lock.
        """
        self._check_open()
        p = self._pyrpl
        restored = 0
        with self.lock:
            for module in list(p.software_modules) + list(p.hardware_modules):
                if module.owner is None:
                    module._load_setup_attributes()
                    restored += 1
            client = self._client()
            if client is not None and hasattr(client, "state_lost"):
                client.state_lost = False
        logger.info("restored the configuration of %d module(s) on %s:%d", restored, self.hostname, self.port)
        return restored

    @property
    def users(self) -> int:
        return self._users

    def close(self) -> None:
        """Release this user's hold; the last close disconnects the board.

        The config is flushed, timers stopped, acquisitions cancelled and the
        socket closed. Closing an already closed session does nothing.
        """
        with _REGISTRY_LOCK:
            if self._closed:
                return
            self._users -= 1
            if self._users > 0:
                return
            self._closed = True
            _SESSIONS.pop(self.key, None)
        self._shutdown()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._users} user(s)"
        return f"<rpl_noqt.Session {self.hostname}:{self.port} {state}>"

    # -- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"session {self.hostname}:{self.port} is closed; call rpl_noqt.connect() again")

    def _client(self) -> Any:
        p = self._pyrpl
        return None if p is None else getattr(p.rp, "client", None)

    def _start(self) -> None:
        import pyrpl

        kwargs = dict(self.settings["pyrpl_kwargs"])
        direct = not self.settings["ssh"] and self.hostname not in _FAKE_HOSTS
        if direct:
            kwargs.update(reloadfpga=False, reloadserver=False, autostart=True, leds_off=False)
        check_writable(self.settings["config"] or None)  # refused now, not at the first save or close()
        # direct: the whole connect within the connect timeout; over SSH the login and upload
        # come first, with PyRPL's own timeouts, and the client's timeout counts from its start
        deadline = time.monotonic() + self.policy.connect_timeout if direct else None
        try:
            with link_policy.using(self.policy, deadline=deadline):
                self._pyrpl = pyrpl.Pyrpl(
                    config=self.settings["config"],
                    hostname=self.hostname,
                    port=self.port,
                    gui=False,
                    rpl_noqt_direct=direct,
                    **kwargs,
                )
        except BoardConnectionError:
            raise
        except OSError as exc:  # SSH login, upload or server start (paramiko, socket)
            raise BoardConnectionError(f"{self.hostname}:{self.port}", "connect over SSH",
                                       f"{type(exc).__name__}: {exc}") from exc
        values.set_strict(self._pyrpl.rp, self.settings["strict"])
        logger.info("connected to %s:%d (%s)", self.hostname, self.port, "direct" if direct else "ssh")

    def _shutdown(self) -> None:
        p = self._pyrpl
        if p is None:
            return
        from .runtime.threadsafe import board_lock

        client = getattr(p.rp, "client", None)
        if client is not None and hasattr(client, "closing"):
            client.closing()  # a board that is down now is not waited for again
        lock = board_lock(p.rp)
        try:
            with lock if lock is not None else _null():
                try:
                    p._clear()  # stops timers and acquisitions, flushes the config
                except (BoardConnectionError, TimeoutError) as exc:
                    logger.warning("board %s:%d did not answer while closing (%s); stopping its modules and "
                                   "writing its config without it", self.hostname, self.port, exc)
                    self._clear_offline(p)
        finally:
            if client is not None:
                client.__dict__["_rpl_noqt_closed"] = True
                try:
                    client.close()
                except Exception:  # already gone
                    logger.debug("closing the client of %s:%d failed", self.hostname, self.port, exc_info=True)
        logger.info("disconnected from %s:%d", self.hostname, self.port)

    @staticmethod
    def _clear_offline(p: Any) -> None:
        """What ``Pyrpl._clear`` does, module by module, for a board that no longer answers."""
        for module in list(p.modules):
            try:
                module._clear()
            except (BoardConnectionError, TimeoutError):
                logger.debug("module %s could not be cleared on the board", getattr(module, "name", module))
        p.c._write_to_file()


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_SESSIONS: dict[tuple[str, int], Session] = {}
_CONNECTING: dict[tuple[str, int], _Connecting] = {}
_REGISTRY_LOCK = threading.RLock()  # held briefly: never while a board connects


def open_sessions() -> list[Session]:
    """The sessions open in this process."""
    with _REGISTRY_LOCK:
        return list(_SESSIONS.values())


def connect(hostname: str, port: int = 2222, *, config: str | os.PathLike[str] | None = _UNSET,
            ssh: bool = _UNSET, connect_timeout: float | None = None, io_timeout: float | None = None,
            strict: bool = _UNSET, isolate: bool = False, **pyrpl_kwargs: Any) -> Session | RemoteSession:
    """Open (or join) the session of the board at ``hostname:port``.

    ``hostname="leco://NAME"`` (or ``"leco://NAME@HOST:PORT"``) instead joins a
    board that ``rpl-noqt serve`` serves, and returns a
    :class:`~rpl_noqt.remote.client.RemoteSession` (see docs/remote.md).

    Parameters
    ----------
    hostname, port
        The board's address and its monitor-server port. ``"_FAKE_REDPITAYA_"``
        is PyRPL's dummy board.
    config
        A PyRPL config name (kept in ``$PYRPL_USER_DIR/config/<name>.yml``;
        ``..``, separators and absolute paths are refused), a
        ``pathlib.Path`` to use that exact file on purpose, or None (the
        default) for an in-memory config that is never written. A config
        that could not be saved is refused here, not at ``close()``.
    ssh
        True (default): PyRPL logs in over SSH, uploads the FPGA image and
        starts the monitor server, as upstream does. False: connect straight
        to a monitor server that already runs (our simulator, or a board whose
        server you started), skipping SSH and the upload.
    connect_timeout, io_timeout
        Seconds a connect may take (default 3, ``$RPL_NOQT_CONNECT_TIMEOUT``)
        and the deadline of one register request, its reconnects included
        (default 2, ``$RPL_NOQT_IO_TIMEOUT``). Past them a call raises
        :class:`~rpl_noqt.errors.BoardConnectionError` (a
        :class:`~rpl_noqt.errors.BoardTimeoutError` when the board did not
        answer in time). See :class:`~rpl_noqt.board.policy.LinkPolicy`.
    strict
        False (default): an out-of-range number is clamped to what the
        register holds, as upstream does, with one WARNING naming the value the
        board took. True: it raises ``ValueError`` instead. Values that are
        never valid (NaN, inf, ``True`` for a frequency, ...) always raise.
    isolate
        True: run the board's session in a child process of this one (a
        board server on its own loopback coordinator) and return a
        :class:`~rpl_noqt.remote.client.RemoteSession` to it. The child exits
        when this process dies; a child that crashed or was killed makes
        calls raise :class:`~rpl_noqt.errors.BoardConnectionError` at once.
        Needs pyleco (``pip install "rpl-noqt[remote]"``); see docs/remote.md.
    **pyrpl_kwargs
        Further ``Pyrpl``/``RedPitaya`` settings (user, password, sshport, ...).

    A second call for the same board returns the same session if its explicit
    settings agree, and raises :class:`SessionConfigError` naming both if not.
    Calls for a board that another thread is still connecting wait for that
    one attempt: they join its session, or raise :class:`ConnectionError`
    chained to its failure. Connecting one board never holds up joining,
    listing or closing the others.
    """
    if isinstance(hostname, str) and hostname.startswith("leco://"):  # served by another process
        if isolate:
            raise SessionConfigError(f"{hostname} is already served by another process: isolate=True is for a board")
        return _connect_leco(hostname, port, config=config, ssh=ssh, strict=strict, connect_timeout=connect_timeout,
                             io_timeout=io_timeout, **pyrpl_kwargs)
    if not isinstance(isolate, bool):
        raise SessionConfigError(f"isolate must be True or False, got {isolate!r}")
    if isolate:
        return _connect_isolated(hostname, port, config=config, ssh=ssh, strict=strict,
                                 connect_timeout=connect_timeout, io_timeout=io_timeout, **pyrpl_kwargs)
    from .runtime.activation import activate

    activate()  # idempotent; refuses if pyrpl already runs on real Qt
    key = (_normalise_host(hostname), _check_port(port))
    reserved = _RESERVED_KWARGS & set(pyrpl_kwargs)
    if reserved:
        raise SessionConfigError(f"connect() sets {sorted(reserved)} itself; pass hostname/port/config/ssh instead")
    if ssh is not _UNSET and not isinstance(ssh, bool):
        raise SessionConfigError(f"ssh must be True or False, got {ssh!r}")
    if strict is not _UNSET and not isinstance(strict, bool):
        raise SessionConfigError(f"strict must be True or False, got {strict!r}")
    try:
        config = config if config is _UNSET else (resolve_config(config) or "")
    except ConfigNameError as exc:
        raise SessionConfigError(str(exc)) from exc
    try:
        policy = LinkPolicy.from_env(connect_timeout=connect_timeout, io_timeout=io_timeout)
    except ValueError as exc:
        raise SessionConfigError(str(exc)) from None
    asked = {"config": config, "ssh": ssh, "strict": strict, "pyrpl_kwargs": pyrpl_kwargs,
             "timeouts": {k: v for k, v in (("connect_timeout", connect_timeout), ("io_timeout", io_timeout))
                          if v is not None}}
    while True:
        with _REGISTRY_LOCK:
            session = _SESSIONS.get(key)
            if session is not None:
                _check_compatible(session, asked)
                session._users += 1
                return session
            pending = _CONNECTING.get(key)
            if pending is None:
                settings = {
                    "config": "" if config is _UNSET else config,
                    "ssh": True if ssh is _UNSET else ssh,
                    "strict": False if strict is _UNSET else strict,
                    "pyrpl_kwargs": dict(pyrpl_kwargs),
                    "policy": policy,
                }
                session = Session(key, key[0] if key[0] != "_FAKE_REDPITAYA_" else hostname.strip(), settings)
                pending = _CONNECTING[key] = _Connecting(session)
                break  # this thread connects
            _check_compatible(pending.session, asked)  # refused at once, not after the wait
        # Another thread is connecting this board: wait for it (the registry stays free for the
        # other boards meanwhile), then join its session, or share its failure.
        pending.done.wait()
        if pending.error is not None:
            raise ConnectionError(
                f"connecting to {pending.session.hostname}:{pending.session.port} failed in thread "
                f"{pending.thread_name!r}: {pending.error!r}") from pending.error
        # else: loop and join (or, if its last user already closed it, connect anew)
    try:
        session._start()  # outside the registry lock: other boards connect, join and close meanwhile
    except BaseException as exc:
        pending.error = exc
        raise
    else:
        with _REGISTRY_LOCK:
            session._users = 1
            _SESSIONS[key] = session
        return session
    finally:
        with _REGISTRY_LOCK:
            _CONNECTING.pop(key, None)
        pending.done.set()


def _connect_isolated(hostname: str, port: int, *, config: Any, ssh: Any, strict: Any, **kwargs: Any
                      ) -> RemoteSession:
    key = (_normalise_host(hostname), _check_port(port))
    reserved = _RESERVED_KWARGS & set(kwargs)
    if reserved:
        raise SessionConfigError(f"connect() sets {sorted(reserved)} itself; pass hostname/port/config/ssh instead")
    for name, value in (("ssh", ssh), ("strict", strict)):
        if value is not _UNSET and not isinstance(value, bool):
            raise SessionConfigError(f"{name} must be True or False, got {value!r}")
    if config is not _UNSET and config is not None:
        try:
            resolve_config(config)  # refused here, with the in-process message, before a child starts
        except ConfigNameError as exc:
            raise SessionConfigError(str(exc)) from exc
    with _REGISTRY_LOCK:
        if key in _SESSIONS or key in _CONNECTING:
            raise SessionConfigError(f"{key[0]}:{key[1]} is open in this process already; a board serves one "
                                     "client, so it cannot also be opened with isolate=True")
    from .remote.isolate import connect_isolated

    return connect_isolated(hostname.strip(), key[1], key, config=None if config is _UNSET else config,
                            ssh=None if ssh is _UNSET else ssh, strict=None if strict is _UNSET else strict, **kwargs)


def _connect_leco(url: str, port: int, *, config: Any, ssh: Any, strict: Any, **kwargs: Any) -> RemoteSession:
    from .remote.client import connect_remote

    board_side = sorted(n for n, v in (("config", config), ("ssh", ssh), ("strict", strict)) if v is not _UNSET)
    if board_side or port != 2222:
        raise SessionConfigError(f"{url}: {', '.join(board_side or ['port'])} belong(s) to the board server "
                                 "(rpl-noqt serve), not to a leco:// client")
    return connect_remote(url, **kwargs)


class _Connecting:
    """A board being connected: threads asking for it meanwhile wait for this one attempt."""

    __slots__ = ("session", "done", "error", "thread_name")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.thread_name = threading.current_thread().name


def _check_compatible(session: Session, asked: dict[str, Any]) -> None:
    conflicts = []
    if asked["config"] is not _UNSET and asked["config"] != session.settings["config"]:  # both resolved
        conflicts.append(f"config={session.settings['config'] or None!r} (open) vs "
                         f"config={asked['config'] or None!r} (asked)")
    for name in ("ssh", "strict"):
        if asked[name] is not _UNSET and asked[name] != session.settings[name]:
            conflicts.append(f"{name}={session.settings[name]!r} (open) vs {name}={asked[name]!r} (asked)")
    for name, value in asked["timeouts"].items():
        if getattr(session.policy, name) != value:
            conflicts.append(f"{name}={getattr(session.policy, name)!r} (open) vs {name}={value!r} (asked)")
    for name, value in asked["pyrpl_kwargs"].items():
        if name in session.settings["pyrpl_kwargs"] and session.settings["pyrpl_kwargs"][name] != value:
            conflicts.append(f"{name}={session.settings['pyrpl_kwargs'][name]!r} (open) vs {name}={value!r} (asked)")
        elif name not in session.settings["pyrpl_kwargs"]:
            conflicts.append(f"{name} not set (open) vs {name}={value!r} (asked)")
    if conflicts:
        raise SessionConfigError(
            f"board {session.hostname}:{session.port} is already open with other settings: "
            + "; ".join(conflicts) + ". Close it first, or connect with the same settings."
        )
