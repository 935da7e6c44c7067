"""Scope curves per second through PyRPL on the simulator: rpl_noqt vs upstream with PyQt5.

Two worker interpreters drive the scope of their own simulator (both
simulators run in this process, same seed, loopback only), commanded round by
round so only one of them works at a time:

* upstream: unmodified PyRPL with real PyQt5 (offscreen, ``RPL_NOQT_DISABLE=1``).
  It cannot skip SSH, so *in that worker only* a benchmark-local stub makes
  ``RedPitaya``'s SSH login, OS query, FPGA upload and server install/start/stop
  no-ops; its own ``MonitorClient`` then talks to the simulator;
* rpl_noqt: ``rpl_noqt.connect(host, port, ssh=False)``, i.e. whatever client
  the shim uses for a board (measured as it is, not chosen here).

Measured: ``scope.single()`` (one 16384-sample trace, trigger immediately,
shortest duration) and ``scope._get_trace()`` (reading both full 16384-word
buffers and converting them: the transport alone).

Run: python bench/bench_curves.py [--rounds N]
Goal: rpl_noqt >= 1.5x upstream curves/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import types

from _util import UPSTREAM_ENV, Ratio, Worker, goal, interleave, median, serve, table

GOAL = 1.5
OPS = [  # (label, op, curves per sample)
    ("scope.single() (16384 samples x 2 ch)", "single", 10),
    ("scope._get_trace() (read + convert 2 x 16384 words)", "trace", 10),
]


def _stub_ssh_for_upstream() -> None:
    """Benchmark-local: upstream RedPitaya without SSH (this worker process only)."""
    from pyrpl import redpitaya

    cls = redpitaya.RedPitaya

    def start_ssh(self, attempt=0):
        self.ssh = types.SimpleNamespace(hostname=self.parameters["hostname"], ask=lambda *a, **k: "",
                                         startscp=lambda: None, channel=types.SimpleNamespace(close=lambda: None))
        return True

    def get_os_version(self):
        self.os_version = "benchmark stub"

    def startserver(self, *args, **kwargs):
        return self.parameters["port"]

    cls.start_ssh = start_ssh
    cls.get_os_version = get_os_version
    cls.startserver = startserver
    cls.restartserver = startserver
    cls._update_fpga = lambda self, *a, **k: None
    cls.installserver = lambda self: None
    cls.endserver = lambda self: None


def worker(variant: str, host: str, port: int) -> int:
    if variant == "shim":
        import rpl_noqt

        session = rpl_noqt.connect(host, port, ssh=False)
        rp = session.rp
    else:
        import pyrpl

        _stub_ssh_for_upstream()
        p = pyrpl.Pyrpl(config="", hostname=host, port=port, gui=False, reloadfpga=False, reloadserver=False,
                        leds_off=False)
        rp = p.rp
    scope = rp.scope
    scope.setup(input1="in1", input2="in2", trigger_source="immediately", duration=0, trace_average=1,
                rolling_mode=False, running_state="stopped")
    scope.single()  # warm up

    def timed(func):
        def run(n: int) -> dict[str, float]:  # seconds per curve: wall clock, and this process's CPU
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                func()
            c1, w1 = time.process_time(), time.perf_counter()
            return {"wall": (w1 - w0) / n, "cpu": (c1 - c0) / n}

        return run

    def check() -> list[int]:
        return list(scope.single().shape)

    client = rp.client
    hello = {"variant": variant, "client": f"{type(client).__module__}.{type(client).__qualname__}",
             "duration_s": scope.duration}
    return serve({"single": timed(scope.single), "trace": timed(scope._get_trace), "check": check}, hello=hello)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "HOST", "PORT"))
    args = parser.parse_args(argv)
    if args.worker:
        variant, host, port = args.worker
        return worker(variant, host, int(port))

    from rpl_noqt.sim import Simulator

    with tempfile.TemporaryDirectory() as user_dir, Simulator(seed=0) as sim_up, Simulator(seed=0) as sim_shim:
        env = {"PYRPL_USER_DIR": user_dir}
        with Worker("upstream", __file__, ["upstream", sim_up.host, str(sim_up.port)], env | UPSTREAM_ENV) as up, \
                Worker("shim", __file__, ["shim", sim_shim.host, str(sim_shim.port)], env) as shim:
            for w in (up, shim):
                shape = w.call("check")
                if shape != [2, 16384]:
                    raise RuntimeError(f"{w.name}: scope.single() returned shape {shape}, expected [2, 16384]")
            rows, ratios = [], {}
            for label, op, n in OPS:
                samples = interleave({"upstream": lambda op=op, n=n: up.call(op, n=n),
                                      "shim": lambda op=op, n=n: shim.call(op, n=n)}, args.rounds)
                rate = {k: [1 / x["wall"] for x in v] for k, v in samples.items()}
                cpu = {k: [x["cpu"] for x in v] for k, v in samples.items()}
                ratio = ratios[label] = Ratio.of(rate["shim"], rate["upstream"])
                rows.append((label, f"{median(rate['shim']):.0f} /s",
                             f"upstream {median(rate['upstream']):.0f} /s; shim/upstream {ratio}"))
                rows.append(("", "", f"client CPU per curve: shim {median(cpu['shim']) * 1e3:.2f} ms, upstream "
                                     f"{median(cpu['upstream']) * 1e3:.2f} ms; upstream/shim "
                                     f"{Ratio.of(cpu['upstream'], cpu['shim'])}"))
            table("curves/s through PyRPL on the simulator (wall-clock medians; loopback; trace "
                  f"{shim.info['duration_s'] * 1e6:.0f} us)", rows)
            print(f"  clients: upstream {up.info['client']}; shim {shim.info['client']}")
            print("  (client CPU: CPU time of the worker process, all threads; the simulator's share is not in it)")
            for label, ratio in ratios.items():
                goal(f"{label}: shim curves/s", ratio, GOAL, at_most=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
