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
the per-round ratios, with its spread.  Then, on the simulator alone (issue 13,
part 4):

* a scope read that crosses the end of channel 1's buffer by one word, against
  the same read inside the buffer (12.4 s against 1.8 ms before);
* every access of a busy session with every module running (both ASGs on the
  outputs, two integrating PIDs, one in a loop, an IQ sweeping as PyRPL's
  network analyzer does, another demodulating, the scope averaging in1 and in2
  at decimation 1024, 1 mV of noise on the inputs): the round-trip time
  of each access over the wire, p50/p99/max per round, and the model's own
  time for each (the server thread's CPU time inside the model); then the
  same with the Fabry-Perot plant behind the outputs instead of the cables
  (drift and acoustic noise), both PIDs integrating (through the plant
  pid1's input, in2, hears pid0's output: pid0 is stepped first, pid1 after
  it on pid0's trajectory); and once more with pid1 also driving out2, so
  that each PID's output reaches the other's input (stepped together,
  ``pid.advance_coupled``; before, each access stepped both in up to 64
  chunks through the plant, about 0.5 s);
* a scope curve read through the plant (2 x 2^14 words of 134 ms of
  averaged samples, both PIDs integrating): about 2 s before.

Last (``stepped``), the busy session's sequence of accesses on a hand-stepped
clock, 1.5 ms of model time apart, called directly: the model's CPU time per
access, the same work on every run (a live session's work depends on how
long its accesses took, and this shared machine's speed moves by up to 40 %
between runs), for the cables, the plant and the coupled PIDs.

In the live sessions the two PIDs wind to their rails (the cavity's
transmission and reflection never reach their setpoint of 0): a locked
loop's PID in its linear range also costs the second pass through the
optics and its input's tones in the phasor view, which a railed one skips
(``Pid._railed``); the ``stepped`` session also runs the plant with both
PIDs held in their linear range (slow integrators from 0.1 V).

Goals (issue 13): round trips >= 0.9x the echo, curves >= 0.5x the echo,
p99 of the busy session <= 5 ms.  ``--sessions`` picks some of
``echo,boundary,cables,plant,coupled,curve,stepped`` (default: all).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import Ratio, goal, interleave, median, table  # noqa: E402

from rpl_noqt.sim import Simulator  # noqa: E402

SCOPE = 0x40100000
ASG = 0x40200000
DSP = 0x40300000
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

    def write_words(self, address: int, values: list[int]) -> None:
        header = struct.pack("<BBHI", ord("w"), 0, len(values), address)
        self.sock.sendall(header + struct.pack(f"<{len(values)}I", *values))
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


def boundary_read(port: int) -> tuple[float, float]:
    """Seconds for 2^14 words of ch1 read inside the buffer, and from its second word on
    (one word into ch2): a block read across the boundary instead of a per-word fallback."""
    c = Client(port)
    try:
        c.write(SCOPE + 0x14, 1)
        c.write(SCOPE, 1)
        c.write(SCOPE + 0x4, 1)
        t0 = time.perf_counter()
        c.read(SCOPE + 0x10000, 2**14)
        inside = time.perf_counter() - t0
        t0 = time.perf_counter()
        c.read(SCOPE + 0x10004, 2**14)
        return inside, time.perf_counter() - t0
    finally:
        c.close()


def _everything_running(c: Client) -> None:
    """Both ASGs on the outputs, two integrating PIDs (pid0 in a loop through
    out1 -> in1, pid1 on in2), iq0 as the network analyzer (in1, out1), iq1
    demodulating in1 (read by the sampler), the scope averaging in1 and in2 at
    decimation 1024 (134 ms traces); the caller sets 1 mV of noise on both inputs.

    Not in it, because the model does not keep up with real time there
    (docs/simulator.md, Speed): PIDs coupled over the bus (one's output another's
    input: each step of each costs a routing evaluation), and an IQ output on
    the scope with noise on its input (the noise goes through the IQ chain
    cycle by cycle).  A scope that acquires all the time costs in proportion to
    its sample rate: 8 sub-samples per averaged sample per channel, about real
    time at decimation 64."""
    sine = [int(round(math.sin(2 * math.pi * i / 2**14) * 8191)) & 0x3FFF for i in range(2**14)]
    c.write_words(ASG + 0x10000, sine)
    c.write_words(ASG + 0x20000, [4000 if i < 2**13 else (-4000) & 0x3FFF for i in range(2**14)])
    for address, value in (
        (ASG + 0x04, 0x1000), (ASG + 0x24, 0x0800), (ASG + 0x08, 2**30 - 1), (ASG + 0x28, 2**30 - 1),
        (ASG + 0x10, int(1e3 / 125e6 * 2**30)), (ASG + 0x30, int(5e3 / 125e6 * 2**30)),
        (ASG, (1 << 16) | 1 | (1 << 20) | (1 << 4)), (DSP + 0x80004, 1), (DSP + 0x90004, 2),
        (DSP + 0x00000, 10), (DSP + 0x00108, 400), (DSP + 0x0010C, int(628 / 125e6 * 2**32)), (DSP + 0x00004, 1),
        (DSP + 0x10000, 11), (DSP + 0x1010C, int(63 / 125e6 * 2**32)),
        (DSP + 0x60000, 10), (DSP + 0x60108, int(25e3 / 125e6 * 2**32)),
        (DSP + 0x60124, (0x80 | 10) | ((0x80 | 10) << 8)), (DSP + 0x60118, 1000),
        (DSP + 0x50000, 10), (DSP + 0x50114, 2**13), (DSP + 0x50130, 12500), (DSP + 0x50134, 100),
        (DSP + 0x50004, 1), (DSP + 0x80000, 10), (DSP + 0x90000, 11),
        (SCOPE + 0x14, 1024), (SCOPE + 0x28, 1), (SCOPE + 0x10, 2**13),
    ):
        c.write(address, value)


def _point_accesses(c, point: int) -> list[tuple[Any, tuple[int, ...]]]:
    """The accesses of the busy session's NA point number ``point``, in order, as
    ``(function, args)`` on client ``c``: the point's frequency and its result, a scope
    curve every fifth point while the sweep goes on, then the PIDs and the sampler."""
    accesses: list[tuple[Any, tuple[int, ...]]] = [
        (c.write, (DSP + 0x50108, int((1e4 + 3e4 * (point % 30)) / 125e6 * 2**32))),  # NA point
        (c.read, (DSP + 0x50140, 4)),
    ]
    if point % 5 == 0:
        accesses += [(c.write, (SCOPE, 2)), (c.write, (SCOPE, 1)), (c.write, (SCOPE + 0x4, 1)),
                     (c.read, (SCOPE,)), (c.read, (SCOPE + 0x1C,)),
                     (c.read, (SCOPE + 0x10000, 2**14)), (c.read, (SCOPE + 0x20000, 2**14))]
    accesses += [(c.read, (DSP + 0x100,)), (c.read, (DSP + 0x10100,)),  # pid ivals
                 (c.read, (DSP + 0x60010,))]  # sampler: iq1
    return accesses


def busy_session(port: int, seconds: float) -> list[float]:
    """Round-trip times (s) of every access of a session that sweeps the NA point by
    point, takes scope curves and reads PIDs and the sampler, for ``seconds``."""
    c = Client(port)
    times: list[float] = []
    try:
        point = 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            point += 1
            for i, (func, args) in enumerate(_point_accesses(c, point)):
                t0 = time.perf_counter()
                func(*args)
                times.append(time.perf_counter() - t0)
                if i == 0:
                    time.sleep(1.1e-4)  # the NA point's 100 sleep cycles + 12500 averages
        return times
    finally:
        c.close()


class _ModelTime:
    """The server thread's CPU time inside each model access (wraps the model's entry points)."""

    def __init__(self, model) -> None:
        self.samples: list[float] = []
        for name in ("read", "write", "read_word"):
            setattr(model, name, self._timed(getattr(model, name)))

    def _timed(self, func):
        def run(*args):
            t0 = time.thread_time()
            try:
                return func(*args)
            finally:
                self.samples.append(time.thread_time() - t0)
        return run


def plant_curve_read(rounds: int) -> list[float]:
    """Seconds for one scope curve read (arm, trigger, then 2 x 2^14 words once the
    134 ms trace is full) with the Fabry-Perot plant and every module running."""
    times = []
    with Simulator(seed=0, plant="fabry-perot") as sim:
        c = Client(sim.port)
        try:
            _everything_running(c)
            time.sleep(1.0)
            for _ in range(rounds):
                c.write(SCOPE, 2)
                c.write(SCOPE, 1)
                c.write(SCOPE + 0x4, 1)
                time.sleep(0.15)
                t0 = time.perf_counter()
                c.read(SCOPE + 0x1C)
                c.read(SCOPE + 0x10000, 2**14)
                c.read(SCOPE + 0x20000, 2**14)
                times.append(time.perf_counter() - t0)
        finally:
            c.close()
    return times


def stepped_session(plant: str | None, coupled: bool, points: int = 150, gap: float = 1.5e-3,
                    linear: bool = False) -> list[float]:
    """The model's CPU time (s) for each access of ``busy_session``'s sequence on a hand-stepped
    clock (``gap`` of model time after each access), called in this thread: the same work
    on every run, so it shows what the model costs free of the machine's timing noise
    (a live session's work depends on how long its accesses took).  ``linear``: both
    PIDs start at 0.1 V and integrate at 1/s, so they stay in their linear range (a
    locked loop's cost: the P term's pass through the optics, the input's tones
    through the phasor view) instead of winding to their rails."""
    from rpl_noqt.sim import FpgaModel, ManualClock
    from rpl_noqt.sim.plants import make_plant

    clock = ManualClock(1.0)
    model = FpgaModel(seed=0, clock=clock)
    if plant is None:
        for ch in (1, 2):
            model.set_loopback(ch, noise=1e-3)
    else:
        model.attach_plant(make_plant(plant))

    class Direct:
        write = staticmethod(model.write_word)
        write_words = staticmethod(model.write)

        @staticmethod
        def read(address: int, count: int = 1):
            return model.read(address, count) if count > 1 else model.read_word(address)

    c = Direct()
    _everything_running(c)
    if coupled:
        c.write(DSP + 0x10004, 2)
    if linear:
        for n in range(2):
            c.write(DSP + 0x10000 * n + 0x10C, int(1.0 / 125e6 * 2**32))  # 1/s: a few mV over the session
            c.write(DSP + 0x10000 * n + 0x100, round(0.1 * 2**13))
    clock.advance(0.5)
    model.advance()
    times: list[float] = []

    def timed(func, *args):
        t0 = time.thread_time()
        func(*args)
        times.append(time.thread_time() - t0)
        clock.advance(gap)

    for point in range(1, points + 1):
        for func, args in _point_accesses(c, point):
            timed(func, *args)
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


SESSIONS = ("echo", "boundary", "cables", "plant", "coupled", "curve", "stepped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="duration of each sample")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sessions", default=",".join(SESSIONS), help=f"some of {','.join(SESSIONS)}")
    args = parser.parse_args(argv)
    sessions = set(args.sessions.split(","))
    unknown = sessions - set(SESSIONS)
    if unknown:
        parser.error(f"unknown session(s) {sorted(unknown)}; allowed: {', '.join(SESSIONS)}")
    if "echo" in sessions:
        rows = []
        ratios = {}
        with EchoServer() as echo, Simulator(seed=0) as sim:
            for metric, func in (("register round trips/s", register_round_trips), ("scope curves/s", scope_curves)):
                rates = interleave({"echo": lambda f=func: f(echo.port, args.seconds),
                                    "simulator": lambda f=func: f(sim.port, args.seconds)}, args.rounds)
                ratio = ratios[metric] = Ratio.of(rates["simulator"], rates["echo"])
                rows.append((f"{metric}: simulator", f"{median(rates['simulator']):.0f}",
                             f"echo {median(rates['echo']):.0f}; sim/echo {ratio}"))
        table("simulator vs echo server (same transport; medians, interleaved)", rows)
        goal("register round trips, simulator/echo", ratios["register round trips/s"], 0.9, at_most=False)
        goal("scope curves/s, simulator/echo", ratios["scope curves/s"], 0.5, at_most=False)

    if "boundary" in sessions:
        with Simulator(seed=0) as sim:
            reads = [boundary_read(sim.port) for _ in range(3)]
        inside, across = (median([r[i] for r in reads]) for i in (0, 1))
        table("a scope read of 2^14 words (median of 3)", [
            ("inside ch1's buffer", f"{inside * 1e3:.2f} ms", ""),
            ("crossing into ch2 by one word", f"{across * 1e3:.2f} ms", "12.4 s before (a per-word loop)"),
        ])

    goals = []
    for name, label, plant in (
        ("cables", "the cables out -> in", None),
        ("plant", "a Fabry-Perot plant behind the outputs, both PIDs integrating", "fabry-perot"),
        ("coupled", "the Fabry-Perot plant, pid1 also on out2 (each PID reaches the other)", "fabry-perot"),
    ):
        if name not in sessions:
            continue
        rows, p99s = [], []
        with Simulator(seed=0, plant=plant) as sim:
            if plant is None:
                for ch in (1, 2):
                    sim.model.set_loopback(ch, noise=1e-3)
            setup = Client(sim.port)
            _everything_running(setup)
            if name == "coupled":
                setup.write(DSP + 0x10004, 2)  # pid1 -> out2: the EOM's drive (its DC does not modulate)
            setup.close()
            time.sleep(2.0)  # the server's warm-up (scipy.signal, BLAS libraries) is not part of an access
            model_time = _ModelTime(sim.model)
            for r in range(args.rounds):
                times = busy_session(sim.port, max(1.0, 5 * args.seconds))
                p99s.append(_pct(times, 99))
                rows.append((f"round {r + 1}: {len(times)} accesses", f"p99 {_pct(times, 99) * 1e3:.2f} ms",
                             f"p50 {_pct(times, 50) * 1e3:.2f} ms, max {max(times) * 1e3:.1f} ms"))
            model = model_time.samples
            rows.append(("model time per access (server thread CPU)", f"p99 {_pct(model, 99) * 1e3:.2f} ms",
                         f"p50 {_pct(model, 50) * 1e3:.3f} ms, max {max(model) * 1e3:.1f} ms"))
        table(f"every module running, {label}: round trip of each access (scope, ASGs, NA sweep, PIDs, IQ)", rows)
        goals.append((label, Ratio.of(p99s, [5e-3] * len(p99s))))
    for label, ratio in goals:
        goal(f"p99 of an access with every module running ({label}) / 5 ms", ratio, 1.0)

    if "stepped" in sessions:
        rows, ratios = [], []
        for label, plant, coupled, linear in (
                ("cables", None, False, False), ("Fabry-Perot plant", "fabry-perot", False, False),
                ("plant, PIDs coupled", "fabry-perot", True, False),
                ("plant, PIDs in their linear range", "fabry-perot", False, True),
                ("plant, coupled PIDs in their linear range", "fabry-perot", True, True)):
            runs = [stepped_session(plant, coupled, linear=linear) for _ in range(min(args.rounds, 3))]
            p99s = [_pct(r, 99) for r in runs]
            best = min(runs, key=sum)  # the least disturbed run
            rows.append((f"{label}: {len(best)} accesses", f"p99 {_pct(best, 99) * 1e3:.2f} ms",
                         f"p50 {_pct(best, 50) * 1e3:.2f} ms, total {sum(best):.2f} s (least of {len(runs)})"))
            ratios.append((label, Ratio.of(p99s, [5e-3] * len(p99s))))
        table("the busy session's sequence on a hand-stepped clock, 1.5 ms apart: the model's CPU time per access", rows)
        for label, ratio in ratios:
            goal(f"model CPU p99 of an access, hand-stepped ({label}) / 5 ms", ratio, 1.0)

    if "curve" in sessions:
        reads = plant_curve_read(args.rounds)
        table("a scope curve read through the Fabry-Perot plant (every module running, both PIDs integrating)", [
            (f"{len(reads)} reads", f"median {median(reads) * 1e3:.1f} ms",
             f"min {min(reads) * 1e3:.1f} ms, max {max(reads) * 1e3:.1f} ms; about 2 s before"),
        ])
        goal("a scope curve read through the plant / 100 ms", Ratio.of(reads, [0.1] * len(reads)), 1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
