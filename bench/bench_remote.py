"""Remote sessions over LECO against their floor and against the earlier designs, in one run.

Processes (loopback only, free ports; three simulators run in this process,
one per board owner, same seed):

* ``rpl-noqt serve`` of simulator A, with its embedded coordinator: the board
  server every remote client talks to;
* an echo server: a bare pyleco ``MessageHandler`` named ``echo``, signed in
  to the same coordinator, answering ``echo(value)`` (the transport's floor:
  pyleco on both ends, the same coordinator, no board);
* 4 remote client workers (``rpl_noqt.connect("leco://...")``); worker 0 also
  asks the echo server with pyleco's own ``Communicator``;
* a local worker: an in-process session on simulator B (``connect(host, port)``);
* a multiprocessing-queue worker: the earlier attempts' design, a child process
  that owns a session on simulator C and answers ``(id, op, arg)`` requests
  from one ``multiprocessing.Queue`` on another, curves as Python lists.

Measured, interleaved round by round (ratios are medians of per-round ratios):

1. latency of one call, in us: bare pyleco echo, remote get and set
   (``remote.rp.pid0.setpoint``), the queue design's echo and get, the local get;
2. ``scope.single()`` curves/s (16384 samples x 2 channels, trigger immediately):
   remote, local (in-process), and the queue design; and, as a reference for the
   transport, stock pyleco's round trip with a curve-sized (256 kB) reply;
3. aggregate throughput of 4 remote clients at once against 1 alone, for gets
   (each client reads its own attribute) and for ``scope.single()``;
4. curves/s of ``remote.rp.scope.stream()`` (the server's acquisition loop,
   published on LECO's data protocol) against in-process ``single()``;
5. attribute-change events: from a set in one client process to
   ``rpl_noqt.events.attribute_changed`` in another, p50 and p99.

Goals: remote get p50 <= 1.5x the bare pyleco echo; remote curves/s >= 0.8x
in-process; 4 clients' aggregate >= 0.9x one client's (gets and curves);
events within 100 ms.

Run: python bench/bench_remote.py [--rounds N]   (about a minute on an idle machine)
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from _util import Ratio, Worker, goal, interleave, median, serve, table

GOAL_GET_VS_ECHO = 1.5
GOAL_CURVES_VS_LOCAL = 0.8
GOAL_FOUR_VS_ONE = 0.9
GOAL_EVENT_MS = 100.0
#: a reply the size of a scope curve (2 x 16384 float64), for the transport's floor for curves
CURVE_BYTES = bytes(2 * 16384 * 8)
SCOPE_SETUP = {"input1": "in1", "input2": "in2", "trigger_source": "immediately", "duration": 0,
               "trace_average": 1, "rolling_mode": False}
#: what each remote client reads and writes (its own: the board has 3 PIDs)
OWN_ATTRIBUTES = [("pid0", "setpoint"), ("pid1", "setpoint"), ("pid2", "setpoint"), ("asg1", "offset")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latencies(func):
    """A worker operation: ``n`` calls of ``func``, each timed (us)."""
    def run(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            func()
            out.append((time.perf_counter_ns() - t0) / 1e3)
        return out
    return run


def _rate(func):
    """A worker operation: calls of ``func`` per second over ``n`` calls."""
    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            func()
        return n / (time.perf_counter() - t0)
    return run


def _count_for(funcs):
    """A worker operation: how many calls of ``funcs[what]`` complete in [start_at, start_at + duration]
    (``start_at`` on the wall clock, so workers told at once start together)."""
    def run(what: str, start_at: float, duration: float) -> int:
        func = funcs[what]
        time.sleep(max(0.0, start_at - time.time()))
        end = time.monotonic() + duration
        n = 0
        while time.monotonic() < end:
            func()
            n += 1
        return n
    return run


# -- workers ------------------------------------------------------------------------------------
def echo_worker(host: str, port: int) -> int:
    from pyleco.utils.message_handler import MessageHandler

    class Echo(MessageHandler):
        def register_rpc_methods(self) -> None:
            super().register_rpc_methods()
            self.register_rpc_method(self.echo)

        def echo(self, value=None):
            return value

        def curve_sized(self, additional_payload=None):
            return None, [CURVE_BYTES]

    handler = Echo("echo", host=host, port=port)
    handler.register_binary_rpc_method(handler.curve_sized, return_binary_output=True)
    stop = threading.Event()
    thread = threading.Thread(target=handler.listen, kwargs={"stop_event": stop, "waiting_time": 20}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while handler.namespace is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if handler.namespace is None:
        raise RuntimeError("the echo server could not sign in")
    try:
        return serve({}, hello={"echo": handler.full_name})
    finally:
        stop.set()
        thread.join(5)
        handler.close()


def remote_worker(url: str, host: str, port: int, index: int) -> int:
    import rpl_noqt

    r = rpl_noqt.connect(url, io_timeout=5)
    module_name, attribute = OWN_ATTRIBUTES[index]
    module = getattr(r.rp, module_name)
    scope = r.rp.scope
    flip = [0.125, -0.125]

    def set_once() -> None:
        flip.reverse()
        setattr(module, attribute, flip[0])

    def get_once() -> float:
        return getattr(module, attribute)

    heard: list[tuple[float, float]] = []

    def on_change(sender, name, value) -> None:
        if name == "setpoint":
            heard.append((value, time.time()))

    def stamped_sets(n: int) -> list[tuple[float, float]]:
        """n sets of pid0.setpoint to distinct values: [(value the board took, wall time before the set)]."""
        sent = []
        for i in range(n):
            t = time.time()
            r.rp.pid0.setpoint = round(-0.1 + 0.001 * (i % 200), 3)
            sent.append((r.rp.pid0.setpoint, t))
        return sent

    def listen(on: bool) -> list[tuple[float, float]]:
        from rpl_noqt import events

        if on:
            heard.clear()
            events.attribute_changed.connect(on_change, sender=r.rp.pid0)
            return []
        events.attribute_changed.disconnect(on_change, sender=r.rp.pid0)
        return list(heard)

    def stream_rate(n: int) -> float:
        with scope.stream(maxlen=n + 4) as stream:
            stream.get(timeout=10)
            t0 = time.perf_counter()
            for _ in range(n):
                stream.get(timeout=10)
            return n / (time.perf_counter() - t0)

    ops = {"get": _latencies(get_once), "set": _latencies(set_once), "single": _rate(scope.single),
           "stream": stream_rate, "stamped_sets": stamped_sets, "listen": listen,
           "count_for": _count_for({"get": get_once, "single": scope.single}),
           "setup_scope": lambda: scope.setup(**SCOPE_SETUP),
           "check": lambda: list(scope.single().shape)}
    comm = None
    if index == 0:
        from pyleco.utils.communicator import Communicator

        comm = Communicator(name=f"benchecho-{os.getpid()}", host=host, port=port, timeout=5)
        comm.open()
        ops["echo"] = _latencies(lambda: comm.ask_rpc("echo", "echo", value=0.125))
        from pyleco.core.message import Message, MessageTypes
        from pyleco.json_utils.rpc_generator import RPCGenerator

        curve_request = RPCGenerator().build_request_str(method="curve_sized")

        def echo_curve() -> None:
            reply = comm.ask_message(Message("echo", sender=comm.full_name, message_type=MessageTypes.JSON,
                                             data=curve_request))
            if len(reply.payload) < 2 or len(reply.payload[1]) != len(CURVE_BYTES):
                raise RuntimeError("the echo server sent no curve-sized frame")

        ops["echo_curve"] = _rate(echo_curve)
    try:
        return serve(ops, hello={"name": r.name})
    finally:
        if comm is not None:
            comm.close()
        r.close()


def local_worker(host: str, port: int) -> int:
    import rpl_noqt

    s = rpl_noqt.connect(host, port, ssh=False)
    scope, pid = s.rp.scope, s.rp.pid0
    scope.setup(**SCOPE_SETUP)
    try:
        return serve({"get": _latencies(lambda: pid.setpoint), "single": _rate(scope.single),
                      "check": lambda: list(scope.single().shape)})
    finally:
        s.close()


def _queue_child(host: str, port: int, requests, replies) -> None:
    """The earlier attempts' design: the child owns PyRPL, commands come with ids on a queue."""
    import rpl_noqt

    s = rpl_noqt.connect(host, port, ssh=False)
    scope, pid = s.rp.scope, s.rp.pid0
    scope.setup(**SCOPE_SETUP)
    replies.put((0, "ready"))
    try:
        while True:
            message = requests.get()
            if message is None:
                return
            cid, op, arg = message
            if op == "echo":
                result = arg
            elif op == "get":
                result = pid.setpoint
            else:  # "single": arrays as Python lists, as those designs shipped them
                result = scope.single().tolist()
            replies.put((cid, result))
    finally:
        s.close()


def queue_worker(host: str, port: int) -> int:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    requests, replies = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_queue_child, args=(host, port, requests, replies), daemon=True)
    child.start()
    if replies.get(timeout=120) != (0, "ready"):
        raise RuntimeError("the queue child did not start")
    ids = iter(range(1, 1 << 62))

    def ask(op: str, arg=None):
        cid = next(ids)
        requests.put((cid, op, arg))
        rid, result = replies.get(timeout=30)
        if rid != cid:
            raise RuntimeError(f"reply {rid} to request {cid}")
        return result

    import numpy as np

    try:
        return serve({"echo": _latencies(lambda: ask("echo", 0.125)), "get": _latencies(lambda: ask("get")),
                      "single": _rate(lambda: np.asarray(ask("single"))),
                      "check": lambda: list(np.asarray(ask("single")).shape)})
    finally:
        requests.put(None)
        child.join(10)
        if child.is_alive():
            child.kill()


# -- the server process -------------------------------------------------------------------------
class Server:
    """``rpl-noqt serve`` of one simulator, with its embedded coordinator on a free loopback port."""

    def __init__(self, sim, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"leco://benchrp@127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile("w+", prefix="bench-remote-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rpl_noqt.cli", "serve", sim.host, "--port", str(sim.port), "--no-ssh",
             "--name", "benchrp", "--coordinator", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout] + [lines.put("")],
                         daemon=True).start()
        try:
            self.line = lines.get(timeout=120).strip()
        except queue.Empty:
            self.line = ""
        if not self.line.startswith("rpl-noqt: serving"):
            self.close()
            raise RuntimeError(f"the board server did not start: {self.line!r}\n{self._tail()}")

    def _tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        os.unlink(self._log.name)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--calls", type=int, default=200, help="calls per latency sample")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per throughput sample")
    parser.add_argument("--worker", nargs="+")
    args = parser.parse_args(argv)
    if args.worker:
        role, *rest = args.worker
        if role == "echo":
            return echo_worker(rest[0], int(rest[1]))
        if role == "remote":
            return remote_worker(rest[0], rest[1], int(rest[2]), int(rest[3]))
        if role == "local":
            return local_worker(rest[0], int(rest[1]))
        return queue_worker(rest[0], int(rest[1]))

    from rpl_noqt.sim import Simulator

    with tempfile.TemporaryDirectory() as user_dir, Simulator(seed=0) as sim_a, Simulator(seed=0) as sim_b, \
            Simulator(seed=0) as sim_c:
        env = {"PYRPL_USER_DIR": user_dir}
        server = Server(sim_a, {**os.environ, **env})
        workers: list[Worker] = []
        try:
            print(f"  {server.line}", flush=True)
            echo = Worker("echo", __file__, ["echo", "127.0.0.1", str(server.port)], env)
            workers.append(echo)
            remotes = [Worker(f"remote{i}", __file__, ["remote", server.url, "127.0.0.1", str(server.port), str(i)],
                              env) for i in range(4)]
            workers += remotes
            local = Worker("local", __file__, ["local", sim_b.host, str(sim_b.port)], env)
            workers.append(local)
            mpq = Worker("queue", __file__, ["queue", sim_c.host, str(sim_c.port)], env)
            workers.append(mpq)
            r0 = remotes[0]
            r0.call("setup_scope")
            for w in (r0, local, mpq):
                if w.call("check") != [2, 16384]:
                    raise RuntimeError(f"{w.name}: scope.single() did not return 2 x 16384")
            _run(args, r0, remotes, local, mpq)
        except BaseException:
            print(f"the board server's log ends with:\n{server._tail()}", file=sys.stderr)
            raise
        finally:
            for w in reversed(workers):
                w.close()
            server.close()
    return 0


def _run(args, r0: Worker, remotes: list[Worker], local: Worker, mpq: Worker) -> None:
    n = args.calls
    lat = interleave({
        "echo": lambda: r0.call("echo", n=n), "get": lambda: r0.call("get", n=n),
        "set": lambda: r0.call("set", n=n), "queue echo": lambda: mpq.call("echo", n=n),
        "queue get": lambda: mpq.call("get", n=n), "local get": lambda: local.call("get", n=n),
    }, args.rounds)
    p50 = {k: [median(s) for s in v] for k, v in lat.items()}
    rows = []
    for name, label in [("echo", "bare pyleco echo through the coordinator"),
                        ("get", "remote get  (remote.rp.pid0.setpoint)"),
                        ("set", "remote set  (remote.rp.pid0.setpoint = x)"),
                        ("queue echo", "multiprocessing queue echo (earlier design)"),
                        ("queue get", "multiprocessing queue get (earlier design)"),
                        ("local get", "in-process get (no remote)")]:
        pooled = [x for s in lat[name] for x in s]
        q = statistics.quantiles(p50[name], n=4, method="inclusive") if len(p50[name]) >= 4 else None
        q1, q3 = (q[0], q[2]) if q else (min(p50[name]), max(p50[name]))
        rows.append((label, f"p50 {median(p50[name]):.0f} us",
                     f"p50 per round IQR {q1:.0f}-{q3:.0f}; p99 {_p(pooled, 0.99):.0f} us "
                     f"({len(pooled)} calls)"))
    table(f"latency of one call (loopback; {n} calls per round, {args.rounds} rounds)", rows)
    get_vs_echo = Ratio.of(p50["get"], p50["echo"])
    print(f"  remote set / echo p50: {Ratio.of(p50['set'], p50['echo'])}")
    print(f"  remote get / queue get p50: {Ratio.of(p50['get'], p50['queue get'])}")
    print(f"  bare echo / queue echo p50: {Ratio.of(p50['echo'], p50['queue echo'])}")

    curves = interleave({"remote": lambda: r0.call("single", n=10), "local": lambda: local.call("single", n=10),
                         "queue": lambda: mpq.call("single", n=5),
                         "echo curve": lambda: r0.call("echo_curve", n=20)}, args.rounds)
    remote_vs_local = Ratio.of(curves["remote"], curves["local"])
    # a reference for the curve transport: the in-process curve plus a round trip of stock pyleco (its
    # Communicator and MessageHandler, which format messages into debug strings) with a curve-sized reply
    floor = [1.0 / (1.0 / lo + 1.0 / e) for lo, e in zip(curves["local"], curves["echo curve"])]
    table("scope.single() curves/s (16384 samples x 2 channels, trigger immediately)", [
        ("remote (binary LECO frames)", f"{median(curves['remote']):.0f} /s", f"remote/local {remote_vs_local}"),
        ("in-process", f"{median(curves['local']):.0f} /s", ""),
        ("multiprocessing queue, lists", f"{median(curves['queue']):.0f} /s",
         f"remote/queue {Ratio.of(curves['remote'], curves['queue'])}"),
        ("stock pyleco request, 256 kB reply (no board)", f"{median(curves['echo curve']):.0f} /s",
         f"{1e3 / median(curves['echo curve']):.2f} ms per round trip"),
        ("reference: in-process curve + that round trip", f"{median(floor):.0f} /s",
         f"reference/local {Ratio.of(floor, curves['local'])}; remote/reference "
         f"{Ratio.of(curves['remote'], floor)}"),
    ])

    streams = interleave({"stream": lambda: r0.call("stream", n=20), "local": lambda: local.call("single", n=10)},
                         args.rounds)
    stream_vs_local = Ratio.of(streams["stream"], streams["local"])
    table("scope curves/s: remote stream() against in-process single()", [
        ("remote stream (one loop on the server, data protocol)", f"{median(streams['stream']):.0f} /s",
         f"stream/local {stream_vs_local}"),
        ("in-process single()", f"{median(streams['local']):.0f} /s", ""),
    ])

    delays: list[float] = []
    for _ in range(args.rounds):
        r1 = remotes[1]
        r1.call("listen", on=True)
        time.sleep(0.05)
        sent = r0.call("stamped_sets", n=100)
        time.sleep(0.5)
        heard = r1.call("listen", on=False)
        for value, t_sent in sent:
            arrivals = [t for v, t in heard if abs(v - value) < 1e-6 and t >= t_sent]
            delays.append((min(arrivals) - t_sent) * 1e3 if arrivals else float("inf"))
    lost = sum(d == float("inf") for d in delays)
    seen = sorted(d for d in delays if d != float("inf"))
    event_p99 = _p(seen, 0.99) if seen else float("inf")
    table("attribute-change events, set in one client process -> attribute_changed in another", [
        ("set -> event delivered", f"p50 {_p(seen, 0.5):.2f} ms" if seen else "none",
         f"p99 {event_p99:.2f} ms, max {seen[-1] if seen else float('inf'):.2f} ms; {len(delays)} changes, "
         f"{lost} lost"),
    ])

    def together(op: str, clients: list[Worker]) -> float:
        start_at = time.time() + 0.2
        for w in clients:
            w.submit("count_for", what=op, start_at=start_at, duration=args.duration)
        return sum(w.result() for w in clients) / args.duration

    rows, four_vs_one = [], {}
    for op in ("get", "single"):
        agg = interleave({"1 client": lambda op=op: together(op, remotes[:1]),
                          "4 clients": lambda op=op: together(op, remotes)}, max(5, args.rounds // 2))
        ratio = four_vs_one[op] = Ratio.of(agg["4 clients"], agg["1 client"])
        rows.append((f"{op}: 1 client", f"{median(agg['1 client']):.0f} /s", ""))
        rows.append((f"{op}: 4 clients", f"{median(agg['4 clients']):.0f} /s", f"4/1 {ratio}"))
    table(f"aggregate throughput, clients in parallel ({args.duration:g} s per sample)", rows)

    print()
    goal("remote get p50 / bare pyleco echo p50", get_vs_echo, GOAL_GET_VS_ECHO)
    goal("remote single() curves/s / in-process curves/s", remote_vs_local, GOAL_CURVES_VS_LOCAL, at_most=False)
    goal("remote stream() curves/s / in-process single() curves/s", stream_vs_local, GOAL_CURVES_VS_LOCAL,
         at_most=False)
    verdict = "MET" if lost == 0 and event_p99 <= GOAL_EVENT_MS else "MISSED"
    print(f"  goal: attribute-change event p99 <= {GOAL_EVENT_MS:g} ms, none lost -> {verdict} "
          f"({event_p99:.2f} ms, {lost} lost)")
    goal("4 clients' gets/s / 1 client's", four_vs_one["get"], GOAL_FOUR_VS_ONE, at_most=False)
    goal("4 clients' curves/s / 1 client's", four_vs_one["single"], GOAL_FOUR_VS_ONE, at_most=False)


if __name__ == "__main__":
    sys.exit(main())
