"""What client and server agree on besides LECO itself: names, error codes, addresses.

The RPC methods are those of a LECO locking actor (``get_parameters``,
``set_parameters``, ``call_action``, ``lock``, ``unlock``, ``force_unlock``),
so pyleco's own directors can talk to a board server, plus ``describe``
(the registry) and ``locks`` (who holds what). Failures travel as JSON-RPC
errors with codes from the implementation-defined range below (LECO keeps
-32090..-32099 for routing) and a ``data`` object a client turns back into
the same exception type, with the same facts, as in-process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ("DEFAULT_COORDINATOR_HOST", "DEFAULT_COORDINATOR_PORT", "NAME_PATTERN", "PROTOCOL", "ErrorCode", "LecoAddress",
           "parse_host_port", "parse_leco_url")

#: Bumped when a message's meaning changes; a client refuses a server with another one.
PROTOCOL = 1

#: pyleco's default Coordinator port; a test must never use it.
DEFAULT_COORDINATOR_PORT = 12300
DEFAULT_COORDINATOR_HOST = "127.0.0.1"


class ErrorCode:
    """JSON-RPC error codes of a board server (implementation-defined server-error range)."""

    LOCKED = -32010  # data: holder, resource, board, operation
    REFUSED = -32011  # a name outside the registry, a bad argument shape
    BOARD_CONNECTION = -32012  # data: board, operation, cause, address, timeout
    VALUE = -32013  # data: type ("ValueError"/"TypeError"), message
    CALL_FAILED = -32014  # data: type, message
    CLOSING = -32015  # the server is shutting down
    CANCELLED = -32016  # a long call was cancelled; data: module, method, done, total, elapsed, unit, detail


# A LECO component name: letters, digits, '_' and '-'; optionally "namespace.name".
_NAME = r"[A-Za-z0-9_-]{1,64}"
_URL = re.compile(rf"leco://(?P<name>(?:{_NAME}\.)?{_NAME})(?:@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
                  rf"(?::(?P<port>[0-9]{{1,5}}))?)?/?\Z")
NAME_PATTERN = re.compile(rf"{_NAME}\Z")


@dataclass(frozen=True)
class LecoAddress:
    """Where a board server is: its LECO name and the Coordinator it signed in to."""

    name: str
    host: str = DEFAULT_COORDINATOR_HOST
    port: int = DEFAULT_COORDINATOR_PORT

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"leco://{self.name}@{host}:{self.port}"

    def __str__(self) -> str:
        return self.url


def parse_leco_url(url: str) -> LecoAddress:
    """``leco://NAME`` or ``leco://NAME@HOST[:PORT]`` -> :class:`LecoAddress` (ValueError if malformed)."""
    match = _URL.match(url) if isinstance(url, str) else None
    if match is None:
        raise ValueError(f"not a board server address: {url!r}; expected leco://NAME or leco://NAME@HOST:PORT "
                         "(NAME: letters, digits, '_' and '-')")
    host = match["host"] or DEFAULT_COORDINATOR_HOST
    port = int(match["port"]) if match["port"] else DEFAULT_COORDINATOR_PORT
    if not 0 < port < 65536:
        raise ValueError(f"coordinator port must be 1..65535, got {port} in {url!r}")
    return LecoAddress(match["name"], host.strip("[]"), port)


def parse_host_port(text: str, default_port: int = DEFAULT_COORDINATOR_PORT) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"HOST"`` or ``"[::1]:PORT"`` -> (host, port)."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::([0-9]{1,5}))?", text.strip())
    if match is None:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(match[2]) if match[2] else default_port
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, got {port}")
    return match[1].strip("[]"), port
