"""Framing of the monitor_server protocol (``monitor_server.c``).

Request header, 8 bytes: ``cmd`` (``'r'``, ``'w'`` or ``'c'``), one reserved
byte, the number of 32-bit words as uint16 little-endian, the absolute address
as uint32 little-endian.  A read is answered with the header echoed plus the
words; a write carries the words after the header and is answered with the
header echoed.  The C server ignores any header whose length is 0 (that check
comes first, so even ``'c'`` with length 0 is ignored), leaves on ``'c'`` and
terminates on any other command byte ("server and client out of sync").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEADER_SIZE = 8
#: largest word count a header can carry (the C server caps at MAX_LENGTH = 65535)
MAX_WORDS = 65535
READ, WRITE, CLOSE = ord("r"), ord("w"), ord("c")

_HEADER = struct.Struct("<BBHI")


@dataclass(frozen=True)
class Header:
    command: int
    reserved: int
    length: int
    address: int
    raw: bytes

    @property
    def name(self) -> str:
        return chr(self.command) if 32 <= self.command < 127 else f"0x{self.command:02x}"


def parse_header(data: bytes) -> Header:
    """Decode an 8-byte request header."""
    if len(data) != HEADER_SIZE:
        raise ValueError(f"a header is {HEADER_SIZE} bytes, got {len(data)}")
    command, reserved, length, address = _HEADER.unpack(data)
    return Header(command, reserved, min(length, MAX_WORDS), address, bytes(data))


def build_header(command: str, length: int, address: int) -> bytes:
    """Encode a request header (used by tests and the benchmark)."""
    if command not in ("r", "w", "c"):
        raise ValueError(f"command must be 'r', 'w' or 'c', got {command!r}")
    if not 0 <= length <= MAX_WORDS:
        raise ValueError(f"length must be in [0, {MAX_WORDS}], got {length!r}")
    if not 0 <= address < 2**32:
        raise ValueError(f"address must be a uint32, got {address!r}")
    return _HEADER.pack(ord(command), 0, length, address)
