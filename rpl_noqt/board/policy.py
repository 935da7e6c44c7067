"""Timeouts and reconnects of a board link, as one policy object.

A :class:`LinkPolicy` says how long a connect may take, how long one request
may take in all (its deadline covers the reconnects and retries it needs),
how reconnect attempts back off during an outage and how much an outage may
log. It is set per board (``rpl_noqt.connect(..., connect_timeout=,
io_timeout=)``) or process-wide from the environment
(``RPL_NOQT_CONNECT_TIMEOUT``, ``RPL_NOQT_IO_TIMEOUT``, in seconds). Call
sites never loop on their own: they ask the policy.

The policy reaches the client PyRPL constructs through :func:`using`: the
session (and a ``RedPitaya`` restarting its client) makes it current around
the construction, so PyRPL's own call ``MonitorClient(host, port, restart)``
needs no new argument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ("CONNECT_TIMEOUT_ENV", "IO_TIMEOUT_ENV", "LinkPolicy", "current", "using")

CONNECT_TIMEOUT_ENV = "RPL_NOQT_CONNECT_TIMEOUT"
IO_TIMEOUT_ENV = "RPL_NOQT_IO_TIMEOUT"
_MAX_TIMEOUT_S = 3600.0


def _seconds(name: str, value: object, *, low: float = 0.0, high: float = _MAX_TIMEOUT_S) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low < value <= high:
        raise ValueError(f"{name} must be a number of seconds in ({low:g}, {high:g}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LinkPolicy:
    """How a board link waits, retries and reports.

    connect_timeout
        Longest time (s) establishing the connection may take, reconnect
        attempts to a closed port included.
    io_timeout
        Deadline (s) of one register request, from its start to its reply,
        covering the reconnects and the one retry a dropped link needs.
    backoff_initial, backoff_factor, backoff_max
        Reconnect attempts in an outage: the first at once, then after
        ``backoff_initial * backoff_factor**k`` seconds, at most
        ``backoff_max`` apart, so a returning board is found within
        ``backoff_max``.
    log_lines
        Most log lines one outage (fault episode) writes; one more line
        says when the link is back.
    """

    connect_timeout: float = 3.0
    io_timeout: float = 2.0
    backoff_initial: float = 0.05
    backoff_factor: float = 2.0
    backoff_max: float = 1.0
    log_lines: int = 10

    def __post_init__(self) -> None:
        _seconds("connect_timeout", self.connect_timeout)
        _seconds("io_timeout", self.io_timeout)
        _seconds("backoff_initial", self.backoff_initial, high=60.0)
        _seconds("backoff_max", self.backoff_max, high=60.0)
        if isinstance(self.backoff_factor, bool) or not isinstance(self.backoff_factor, (int, float)) \
                or not math.isfinite(self.backoff_factor) or not 1.0 <= self.backoff_factor <= 10.0:
            raise ValueError(f"backoff_factor must be a number in [1, 10], got {self.backoff_factor!r}")
        if isinstance(self.log_lines, bool) or not isinstance(self.log_lines, int) or not 1 <= self.log_lines <= 1000:
            raise ValueError(f"log_lines must be an integer in [1, 1000], got {self.log_lines!r}")

    @classmethod
    def from_env(cls, **overrides: float | int | None) -> LinkPolicy:
        """The defaults, then the environment, then ``overrides`` (None = not given)."""
        values: dict[str, float | int] = {}
        for field_name, env in (("connect_timeout", CONNECT_TIMEOUT_ENV), ("io_timeout", IO_TIMEOUT_ENV)):
            raw = os.environ.get(env, "").strip()
            if raw:
                try:
                    values[field_name] = _seconds(env, float(raw))
                except ValueError:
                    raise ValueError(f"{env}={raw!r}: must be a number of seconds in (0, {_MAX_TIMEOUT_S:g}]") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: float | int) -> LinkPolicy:
        return dataclasses.replace(self, **changes)

    def backoff(self, attempt: int) -> float:
        """Pause (s) before reconnect attempt number ``attempt`` (0 = the first, at once)."""
        if attempt <= 0:
            return 0.0
        return min(self.backoff_max, self.backoff_initial * self.backoff_factor ** (attempt - 1))


_current = threading.local()


def current() -> LinkPolicy:
    """The policy made current by :func:`using` in this thread, else the environment's."""
    policy = getattr(_current, "policy", None)
    return policy if policy is not None else LinkPolicy.from_env()


def connect_deadline() -> float | None:
    """The ``time.monotonic()`` by which the connect under way in this thread must be done, if any."""
    return getattr(_current, "deadline", None)


@contextlib.contextmanager
def using(policy: LinkPolicy | None, *, deadline: float | None = None) -> Iterator[None]:
    """Make ``policy`` (and a connect ``deadline``) current in this thread; None leaves each as is.

    The deadline lets ``rpl_noqt.connect()`` bound the whole connect, PyRPL's
    set-up before it builds its client included, by the connect timeout.
    """
    previous = getattr(_current, "policy", None), getattr(_current, "deadline", None)
    if policy is not None:
        _current.policy = policy
    if deadline is not None:
        _current.deadline = deadline
    try:
        yield
    finally:
        _current.policy, _current.deadline = previous
