"""The controller object that all plugins on one Red Pitaya share.

PyMoDAQ hands a plugin's ``controller`` to its slaves; here that controller is
a :class:`Board`, a thin holder of the board's one ``rpl_noqt`` session plus
what PyRPL does not know about the board (the input jumpers, HV or LV).

Plugins that are not master/slave find the same Board too: :meth:`Board.open`
returns the Board already open for that session. Every ``open``/``attach``
is one *user*: it holds one ``rpl_noqt`` session user (and, for the on-demand
simulator, one simulator lease), and the plugin's ``close()`` gives both back
with one :meth:`Board.release`. The last release disconnects the board and
stops the on-demand simulator.

No PyMoDAQ import here: this module only knows rpl_noqt and PyRPL.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from . import simulator
from .options import INPUT_RANGES, SettingError, check_choice, check_number

__all__ = ("Board", "BoardSettings")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoardSettings:
    """How to reach a board: the plugin settings of the ``board`` group.

    ``host="simulator"`` starts the in-process simulator on demand (``port``
    and ``ssh`` are then ignored); ``host="leco://NAME[@HOST:PORT]"`` joins a
    board that ``rpl-noqt serve`` serves to several processes or PCs (``port``
    and ``ssh`` are the server's). ``in1_range``/``in2_range`` say where the
    input jumpers are; they initialise a Board that is not open yet and are
    otherwise read back from it. ``connect_timeout``/``io_timeout`` (s) bound
    a connect and each register request (rpl_noqt's link policy), so an
    unreachable board fails an initialisation in seconds instead of hanging it;
    the first plugin to open a board sets them.
    """

    host: str = simulator.SIMULATOR_HOST
    port: int = 2222
    ssh: bool = True
    in1_range: str = "LV"
    in2_range: str = "LV"
    demo_signals: bool = True
    simulator_noise: float = 0.0
    connect_timeout: float = 3.0
    io_timeout: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise SettingError(f"host = {self.host!r} is not allowed; give the board's hostname or IP, "
                               f"or {simulator.SIMULATOR_HOST!r} for the built-in simulator")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise SettingError(f"port = {self.port!r} is not allowed; allowed: an integer from 1 to 65535")
        if not isinstance(self.ssh, bool):
            raise SettingError(f"ssh = {self.ssh!r} is not allowed; allowed values: True, False")
        check_choice("in1_range", self.in1_range, INPUT_RANGES)
        check_choice("in2_range", self.in2_range, INPUT_RANGES)
        check_number("simulator_noise", self.simulator_noise, 0.0, 0.1, "V")
        check_number("connect_timeout", self.connect_timeout, 0.1, 120.0, "s")
        check_number("io_timeout", self.io_timeout, 0.1, 120.0, "s")

    @property
    def on_demand(self) -> bool:
        """True if this asks for the in-process simulator."""
        return self.host.strip().lower() == simulator.SIMULATOR_HOST

    @property
    def remote(self) -> bool:
        """True if the host is a board server, ``leco://NAME[@HOST:PORT]`` (``rpl-noqt serve``)."""
        return self.host.strip().startswith("leco://")


_REGISTRY: dict[tuple[str, int], Board] = {}
_REGISTRY_LOCK = threading.RLock()


def _key(session: Any) -> tuple[str, int]:
    """The registry key of a session: (host, port) of a local one, (url, 0) of a remote one."""
    key = getattr(session, "key", None)
    return key if key is not None else (session.url, 0)


class Board:
    """One Red Pitaya as the plugins see it: its session, modules and input ranges.

    Create with :meth:`open`; a slave plugin joins with :meth:`attach`; every
    user calls :meth:`release` once. Thread-safe: plugins call it from their
    own PyMoDAQ threads.
    """

    def __init__(self, session: Any, settings: BoardSettings, connect_kwargs: dict[str, Any]) -> None:
        self._session = session
        self._connect_kwargs = connect_kwargs
        self._on_demand = settings.on_demand
        self._remote = settings.remote
        self._ranges = {"in1": settings.in1_range, "in2": settings.in2_range}
        self._users = 0
        self._lock = threading.RLock()

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def open(cls, settings: BoardSettings) -> Board:
        """Connect (or join) the board described by ``settings`` and count one user."""
        lease = simulator.acquire(settings.simulator_noise) if settings.on_demand else None
        try:
            import rpl_noqt

            if lease is not None:
                kwargs: dict[str, Any] = {"hostname": lease.host, "port": lease.port, "ssh": False}
            elif settings.remote:  # a board served by another process or PC: port and ssh are the server's
                kwargs = {"hostname": settings.host.strip()}
            else:
                kwargs = {"hostname": settings.host.strip(), "port": settings.port, "ssh": settings.ssh}
            kwargs.update(connect_timeout=float(settings.connect_timeout), io_timeout=float(settings.io_timeout))
            session = rpl_noqt.connect(**kwargs)
        except BaseException:
            if lease is not None:
                simulator.release()
            raise
        with _REGISTRY_LOCK:
            board = _REGISTRY.get(_key(session))
            if board is None or board._session is not session:
                board = cls(session, settings, kwargs)
                _REGISTRY[_key(session)] = board
                if lease is not None and lease.fresh and settings.demo_signals:
                    simulator.apply_demo_signals(session.rp)
            board._users += 1
        logger.info("plugin joined %r", board)
        return board

    def attach(self) -> Board:
        """Join this board as one more user (a PyMoDAQ slave plugin); returns ``self``."""
        with _REGISTRY_LOCK:
            if self._users <= 0:
                raise RuntimeError(f"{self!r} is closed: initialise its master plugin again")
            lease = simulator.acquire() if self._on_demand else None
            try:
                import rpl_noqt

                session = rpl_noqt.connect(**self._connect_kwargs)
            except BaseException:
                if lease is not None:
                    simulator.release()
                raise
            assert session is self._session, "an open board's session must still be registered"
            self._users += 1
        return self

    def release(self) -> None:
        """Give back one user's hold; the last one disconnects (and stops the on-demand simulator)."""
        with _REGISTRY_LOCK:
            if self._users <= 0:
                logger.warning("%r released more often than opened; ignored", self)
                return
            self._users -= 1
            if self._users == 0 and _REGISTRY.get(_key(self._session)) is self:
                del _REGISTRY[_key(self._session)]
            self._session.close()
            if self._on_demand:
                simulator.release()

    # -- access --------------------------------------------------------------------------
    @property
    def session(self) -> Any:
        """The ``rpl_noqt.Session`` of this board (a ``RemoteSession`` for a ``leco://`` host)."""
        return self._session

    @property
    def rp(self) -> Any:
        """PyRPL's ``RedPitaya`` object (hardware modules ``rp.scope``, ``rp.asg0`` ...)."""
        return self._session.rp

    @property
    def lock(self) -> Any:
        """The board's reentrant lock, for multi-step transactions.

        For a ``leco://`` board it is this process's lock: the plugins of this
        process do not interleave their steps, while other processes sharing
        the board go on (taking the board's LECO lock, ``session.lock``, here
        would refuse their writes for as long as a plugin step lasts).
        """
        return self._lock if self._remote else self._session.lock

    @property
    def users(self) -> int:
        return self._users

    @property
    def on_demand(self) -> bool:
        """True if this board is the in-process simulator."""
        return self._on_demand

    @property
    def remote(self) -> bool:
        """True if this board is served by another process (a ``leco://`` host)."""
        return self._remote

    # -- input ranges ----------------------------------------------------------------------
    def input_range(self, channel: str) -> str:
        """"LV" or "HV" for ``channel`` "in1" or "in2"."""
        return self._ranges[check_choice("input channel", channel, ("in1", "in2"))]

    def set_input_range(self, channel: str, value: str) -> None:
        """Say where the jumper of ``channel`` is ("LV": +-1 V, "HV": +-20 V)."""
        channel = check_choice("input channel", channel, ("in1", "in2"))
        with self._lock:
            self._ranges[channel] = check_choice(f"{channel}_range", value, INPUT_RANGES)

    def scale(self, signal: str) -> float:
        """Volts at the connector per volt PyRPL reports for DSP ``signal``.

        20 for in1/in2 behind an HV jumper, 1 for everything else (outputs and
        internal signals are not affected by the jumpers).
        """
        return INPUT_RANGES[self._ranges[signal]] if signal in self._ranges else 1.0

    def __repr__(self) -> str:
        s = self._session
        if self._remote:
            return f"<Board remote {s.url}, {self._users} plugin(s)>"
        where = "simulator" if self._on_demand else "board"
        return f"<Board {where} {s.hostname}:{s.port}, {self._users} plugin(s)>"
