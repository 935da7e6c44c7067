"""A minimal monitor_server client on a plain socket (protocol tests only)."""

from __future__ import annotations

import socket
import struct


class RawClient:
    """A minimal monitor_server client on a plain socket (for protocol tests)."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @staticmethod
    def header(cmd: str, length: int, address: int) -> bytes:
        return struct.pack("<BBHI", ord(cmd), 0, length, address)

    def recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} of {n} bytes")
            data += chunk
        return data

    def read(self, address: int, length: int = 1) -> tuple[bytes, list[int]]:
        h = self.header("r", length, address)
        self.sock.sendall(h)
        echo = self.recv_exactly(8)
        data = self.recv_exactly(4 * length)
        return echo, list(struct.unpack(f"<{length}I", data))

    def write(self, address: int, values: list[int]) -> bytes:
        h = self.header("w", len(values), address)
        self.sock.sendall(h + struct.pack(f"<{len(values)}I", *values))
        return self.recv_exactly(8)

    def is_closed(self, timeout: float = 2.0) -> bool:
        """True if the server closed the connection (EOF or reset) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
