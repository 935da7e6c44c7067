"""Small helpers shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


def free_port() -> int:
    """A TCP port free on loopback right now (tests never use fixed ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` s passed; its last truth value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
