"""Benchmark the simulated Red Pitaya against a minimal echo server.

Run: ``python bench/bench_sim.py [--seconds 2]``.

Both servers run in a thread of this process on 127.0.0.1 and speak the
monitor_server framing; the echo server answers every request with zeros and
does nothing else, so it is the physical limit of this loopback + asyncio +
Python client.  The same raw-socket client (what PyRPL's MonitorClient does,
minus its logging) measures:

* register round trips per second (one 1-word read per round trip),
* scope curves per second (arm, software trigger, read the trigger pointer,
  read 2 x 16384 words: what ``scope.single()`` costs on the wire).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rpl_noqt.sim import Simulator  # noqa: E402

SCOPE = 0x40100000
ASG0_FREQ = 0x40200010


class EchoServer:
    """monitor_server framing, no model: reads return zeros, writes are acknowledged."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="bench-echo", daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()

    @staticmethod
    async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        zeros = bytes(4 * 65535)
        try:
            while True:
                header = await reader.readexactly(8)
                n = header[2] | header[3] << 8
                if n == 0:
                    continue
                if header[0] == ord("r"):
                    writer.write(header + zeros[: 4 * n])
                elif header[0] == ord("w"):
                    await reader.readexactly(4 * n)
                    writer.write(header)
                else:
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return bytes(buf)

    def read(self, address: int, n: int = 1) -> bytes:
        header = struct.pack("<BBHI", ord("r"), 0, n, address)
        self.sock.sendall(header)
        data = self._recv(8 + 4 * n)
        assert data[:8] == header, "header echo mismatch"
        return data[8:]

    def write(self, address: int, value: int) -> None:
        header = struct.pack("<BBHI", ord("w"), 0, 1, address)
        self.sock.sendall(header + struct.pack("<I", value))
        assert self._recv(8) == header, "header echo mismatch"

    def close(self) -> None:
        self.sock.close()


def register_round_trips(port: int, seconds: float) -> float:
    c = Client(port)
    try:
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(100):
                c.read(ASG0_FREQ)
            n += 100
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def scope_curves(port: int, seconds: float) -> float:
    c = Client(port)
    try:
        c.write(SCOPE + 0x14, 1)  # decimation 1: a 131 us trace
        c.write(SCOPE + 0x10, 2**14)
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            c.write(SCOPE, 2)  # reset
            c.write(SCOPE, 1)  # arm
            c.write(SCOPE + 0x4, 1)  # software trigger
            c.read(SCOPE + 0x1C)
            c.read(SCOPE + 0x10000, 2**14)
            c.read(SCOPE + 0x20000, 2**14)
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with EchoServer() as echo:
        results["echo"] = {
            "register round trips/s": register_round_trips(echo.port, args.seconds),
            "scope curves/s": scope_curves(echo.port, args.seconds),
        }
    with Simulator(seed=0) as sim:
        results["simulator"] = {
            "register round trips/s": register_round_trips(sim.port, args.seconds),
            "scope curves/s": scope_curves(sim.port, args.seconds),
        }
    print(f"{'metric':<26}{'simulator':>12}{'echo':>12}{'sim/echo':>10}")
    for metric in results["echo"]:
        s, e = results["simulator"][metric], results["echo"][metric]
        print(f"{metric:<26}{s:>12.0f}{e:>12.0f}{s / e:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
