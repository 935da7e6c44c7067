"""Benchmark the simulated Red Pitaya against a minimal echo server.

Run: ``python bench/bench_sim.py [--seconds 0.3] [--rounds 7]``.

Both servers run in a thread of this process on 127.0.0.1 and speak the
monitor_server framing; the echo server answers every request with zeros and
does nothing else on the same transport (a thread per connection), so it is the limit of this loopback +
Python client.  The same raw-socket client (what PyRPL's MonitorClient does,
minus its logging) measures:

* register round trips per second (one 1-word read per round trip),
* scope curves per second (arm, software trigger, read the trigger pointer,
  read 2 x 16384 words: what ``scope.single()`` costs on the wire).

Echo and simulator samples alternate in rounds; the ratio is the median of
the per-round ratios, with its spread.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import Ratio, interleave, median, table  # noqa: E402

from rpl_noqt.sim import Simulator  # noqa: E402

SCOPE = 0x40100000
ASG0_FREQ = 0x40200010


class EchoServer:
    """monitor_server framing, no model: reads return zeros, writes are acknowledged.

    The same transport as the simulator (a blocking thread per connection), so
    the ratio is what the model costs on top of the wire.
    """

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, name="bench-echo", daemon=True)

    def __enter__(self) -> EchoServer:
        self._accept.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for t in [self._accept, *self._threads]:
            t.join(5)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="bench-echo-conn", daemon=True)
            self._threads.append(t)
            t.start()

    @staticmethod
    def _recv(conn: socket.socket, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    @classmethod
    def _serve(cls, conn: socket.socket) -> None:
        zeros = bytes(4 * 65535)
        try:
            while True:
                header = cls._recv(conn, 8)
                if header is None:
                    return
                n = header[2] | header[3] << 8
                if n == 0:
                    continue
                if header[0] == ord("r"):
                    conn.sendall(header + zeros[: 4 * n])
                elif header[0] == ord("w"):
                    if cls._recv(conn, 4 * n) is None:
                        return
                    conn.sendall(header)
                else:
                    return
        except OSError:
            return


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
    parser.add_argument("--seconds", type=float, default=0.3, help="duration of each sample")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    rows = []
    with EchoServer() as echo, Simulator(seed=0) as sim:
        for metric, func in (("register round trips/s", register_round_trips), ("scope curves/s", scope_curves)):
            rates = interleave({"echo": lambda f=func: f(echo.port, args.seconds),
                                "simulator": lambda f=func: f(sim.port, args.seconds)}, args.rounds)
            ratio = Ratio.of(rates["simulator"], rates["echo"])
            rows.append((f"{metric}: simulator", f"{median(rates['simulator']):.0f}",
                         f"echo {median(rates['echo']):.0f}; sim/echo {ratio}"))
    table("simulator vs echo server (same transport; medians, interleaved)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
