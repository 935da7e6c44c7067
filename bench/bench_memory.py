"""What the shim adds to a PyRPL attribute get/set, with no socket: rpl_noqt vs upstream with PyQt5.

Two worker interpreters run the same PyRPL code on the dummy board
(``hostname="_FAKE_REDPITAYA_"``, in-memory config) whose register file is
made a plain dict lookup (``DummyClient.read_fpgamemory``, a benchmark-local
change in both workers), so only PyRPL and what wraps it are timed: upstream
with real PyQt5 (offscreen, ``RPL_NOQT_DISABLE=1``) in one, the shim (board
locks, signal stand-ins, timers on the background loop) in the other. The
parent commands them round by round (one runs at a time) and reports the
median of the per-round ratios with its spread.

Run: python bench/bench_memory.py [--rounds N]
Goals: attribute get <= 1.1x upstream, attribute set <= 1.2x upstream.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from _util import UPSTREAM_ENV, Ratio, Worker, goal, interleave, median, serve, table, timed_op

# (label, operation, calls per batch)
OPS = [
    ("get pid0.setpoint (float register)", "get_float", 5000),
    ("set pid0.setpoint (float register)", "set_float", 1000),
    ("get asg0.output_direct (select register)", "get_select", 2000),
    ("set asg0.output_direct (select register)", "set_select", 1000),
    ("set pid0.setpoint, save timer idle (1st set of a burst)", "set_idle", 1000),
    ("pid0.ival read (module property)", "get_property", 5000),
]
GOALS = {"get": 1.1, "set": 1.2}
CLOCKS = ("wall", "cpu")


def worker(variant: str) -> int:
    if variant == "shim":
        import rpl_noqt

        rpl_noqt.activate()
    import pyrpl
    from pyrpl import redpitaya_client

    # benchmark-local: the dummy board's register file becomes a plain dict lookup
    # (upstream's read_fpgamemory walks the DSP address map on every read)
    redpitaya_client.DummyClient.read_fpgamemory = lambda self, addr: self.fpgamemory[str(addr)]
    p = pyrpl.Pyrpl(config="", hostname="_FAKE_REDPITAYA_", gui=False)
    pid, asg = p.rp.pid0, p.rp.asg0

    def set_float() -> None:
        pid.setpoint = 0.25

    def set_select() -> None:
        asg.output_direct = "off"

    save_timer = p.c._savetimer

    def set_idle() -> None:  # the first change after a save: MemoryTree._save starts the timer
        save_timer.stop()
        pid.setpoint = 0.25

    ops = {
        "get_float": timed_op(lambda: pid.setpoint),
        "set_float": timed_op(set_float),
        "get_select": timed_op(lambda: asg.output_direct),
        "set_select": timed_op(set_select),
        "set_idle": timed_op(set_idle),
        "get_property": timed_op(lambda: pid.ival),
    }
    qt = "none" if variant == "shim" else type(pyrpl.APP).__module__.split(".")[0]
    return serve(ops, hello={"variant": variant, "qt": qt})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--worker", choices=("shim", "upstream"))
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)

    with tempfile.TemporaryDirectory() as user_dir:
        env = {"PYRPL_USER_DIR": user_dir}
        with Worker("upstream", __file__, ["upstream"], env | UPSTREAM_ENV) as up, \
                Worker("shim", __file__, ["shim"], env) as shim:
            rows, ratios = [], {}
            for label, op, n in OPS:
                samples = interleave({"upstream": lambda op=op, n=n: up.call(op, n=n),
                                      "shim": lambda op=op, n=n: shim.call(op, n=n)}, args.rounds)
                by_clock = {clock: {k: [s[clock] for s in v] for k, v in samples.items()} for clock in CLOCKS}
                ratio = Ratio.of(by_clock["wall"]["shim"], by_clock["wall"]["upstream"])
                cpu = Ratio.of(by_clock["cpu"]["shim"], by_clock["cpu"]["upstream"])
                ratios[label] = {"wall": ratio, "cpu": cpu}
                u, s = (median(by_clock["wall"][k]) for k in ("upstream", "shim"))
                rows.append((label, f"{s / 1e3:.2f} us", f"upstream {u / 1e3:.2f} us ({(s - u) / 1e3:+.2f} us)"))
                rows.append(("", "", f"shim/upstream wall {ratio}"))
                rows.append(("", "", f"shim/upstream cpu  {cpu}"))
            table(f"attribute access on an in-memory register file (wall-clock medians; upstream on "
                  f"{up.info['qt']})", rows)
            print("  (cpu: CPU time of the whole worker process, all threads; less disturbed by other load)")
            for label, by in ratios.items():
                kind = label.split()[0]
                if kind in GOALS and "idle" not in label:
                    for clock in CLOCKS:
                        goal(f"{label}: shim ({clock})", by[clock], GOALS[kind])
    return 0


if __name__ == "__main__":
    sys.exit(main())
