"""Session + board lock: cost per register, scaling with threads, and why it exists.

Against the simulator on loopback, measured in the same run:
1. per-register read cost: raw upstream MonitorClient (unpatched functions)
   vs the session's client (lock taken) vs a module register read
   (goal: session <= 1.05x raw);
2. aggregate register reads/s of 8 threads vs 1 thread on one board
   (goal: >= 0.9x);
3. the comparison that motivates the lock: 4 threads sharing one *unpatched*
   upstream MonitorClient desynchronise the stream (counted, not asserted).

1 and 2 interleave their variants in rounds and report the median of the
per-round ratios with its spread.

Run: python bench/bench_session.py [--rounds N]
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time

from _util import Ratio, goal, interleave, median, per_call_ns, table

import rpl_noqt

ADDR = 0x40200010  # asg0 frequency step register
READS = 3000


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.desyncs = 0
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "control sequence" in message:
            self.desyncs += 1
        elif "attempt" in message:
            self.retries += 1


def _per_read_us(read, n: int = READS // 3) -> float:
    return per_call_ns(read, number=n) / 1e3


def _aggregate(read, threads: int, total: int) -> float:
    per_thread = total // threads
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            read()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join(120)
    return per_thread * threads / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    from rpl_noqt.sim import Simulator

    rpl_noqt.activate()
    from pyrpl import redpitaya_client

    record = rpl_noqt.patch_record()
    # upstream's own class and functions, whatever the shim put in their place
    # (rpl_noqt.board.client.BoardClient replaces redpitaya_client.MonitorClient)
    MonitorClient = record.get_original(redpitaya_client, "MonitorClient")  # noqa: N806
    raw_reads = record.get_original(MonitorClient, "reads")
    raw_writes = record.get_original(MonitorClient, "writes")

    with Simulator(client_policy="share") as sim:
        session = rpl_noqt.connect(sim.host, sim.port, ssh=False)
        raw = MonitorClient(sim.host, sim.port, restartserver=None)
        try:
            client = session.rp.client
            asg0 = session.rp.asg0
            variants = {
                "raw": lambda: _per_read_us(lambda: raw_reads(raw, ADDR, 1)),
                "session": lambda: _per_read_us(lambda: client.reads(ADDR, 1)),
                "module": lambda: _per_read_us(lambda: asg0._read(0x10)),
                "attr": lambda: _per_read_us(lambda: asg0.frequency, n=READS // 3),
            }
            us = interleave(variants, args.rounds)
            r = {k: median(v) for k, v in us.items()}
            ratio = {k: Ratio.of(us[k], us["raw"]) for k in us}
            table("per register read on the simulator (us; medians, variants interleaved)", [
                ("raw upstream MonitorClient", f"{r['raw']:.1f} us", "reference"),
                (f"session client ({type(client).__name__})", f"{r['session']:.1f} us", f"/raw {ratio['session']}"),
                ("module register read (_read)", f"{r['module']:.1f} us", f"/raw {ratio['module']}"),
                ("attribute get (asg0.frequency)", f"{r['attr']:.1f} us",
                 f"/raw {ratio['attr']} (one read + conversion)"),
            ])
            goal("session client / raw MonitorClient", ratio["session"], 1.05)

            total = 8000
            rates = interleave({"1 thread": lambda: _aggregate(lambda: asg0._read(0x10), 1, total),
                                "8 threads": lambda: _aggregate(lambda: asg0._read(0x10), 8, total)},
                               args.rounds)
            scaling = Ratio.of(rates["8 threads"], rates["1 thread"])
            table("aggregate register reads/s on one board (medians, interleaved)", [
                ("1 thread", f"{median(rates['1 thread']):.0f} /s", "reference"),
                ("8 threads", f"{median(rates['8 threads']):.0f} /s", f"/1 thread {scaling}"),
            ])
            goal("8 threads / 1 thread aggregate reads/s", scaling, 0.9, at_most=False)
        finally:
            raw.close()
            session.close()

    # 3. the problem the lock solves: one unpatched client, 4 threads
    counter = _Count()
    log = logging.getLogger("pyrpl.redpitaya_client")
    log.addHandler(counter)
    propagate, log.propagate = log.propagate, False  # counted here, not printed
    errors = []
    with Simulator(client_policy="share") as sim:
        shared = MonitorClient(sim.host, sim.port, restartserver=None)
        deadline = time.monotonic() + 3.0

        def hammer(index: int) -> None:
            addr = 0x40300104 + 0x10000 * index  # pidN setpoint (distinct per thread)
            while time.monotonic() < deadline:
                try:
                    raw_writes(shared, addr, [index + 1])
                    value = raw_reads(shared, addr, 1)
                    if value is None or int(value[0]) != index + 1:
                        errors.append("wrong read-back")
                except Exception as exc:  # desync shows as exceptions too
                    errors.append(type(exc).__name__)

        workers = [threading.Thread(target=hammer, args=(i,)) for i in range(3)] + [
            threading.Thread(target=hammer, args=(0,))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        shared.close()
    log.removeHandler(counter)
    log.propagate = propagate
    table("unpatched upstream MonitorClient shared by 4 threads, 3 s (documented comparison)", [
        ("protocol desyncs logged", str(counter.desyncs), "'Wrong control sequence from server'"),
        ("retry attempts logged", str(counter.retries), ""),
        ("wrong read-backs / exceptions", str(len(errors)), ", ".join(sorted(set(errors)))[:80]),
    ])
    print("  (the same load through a session: 0 of each; see tests/test_torture.py)")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.CRITICAL)
    sys.exit(main())
