"""Issue 11's fault matrix: what a script sees when the board link fails.

Runs each scenario in its own interpreter (a hung one is killed at
``--timeout`` and reported as such) against an in-process simulator, on
loopback only, and prints one row per scenario: the longest call, how the
calls ended, whether the board lock was free afterwards, how long
``close()`` took, writes that returned but never reached the board, and
whether values set before the fault read back.

    python tools/fault_matrix.py            # this checkout
    python tools/fault_matrix.py --json     # machine-readable

Only APIs that older rpl-noqt versions have too are used, so the same script
measures a checkout from before the transport (run it with that checkout
first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SCENARIOS = ("drop during single()", "drop during write loop", "server restart", "server gone 3 s and back",
             "reset every 0.3 s", "garbage reply", "reply 1 s late", "connect: closed port",
             "connect: unreachable host")

_CHILD = r'''
import contextlib, json, logging, socket, sys, threading, time
logging.disable(logging.CRITICAL)
import rpl_noqt
from rpl_noqt.sim import Simulator

name = sys.argv[1]
out = {"calls": 0, "errors": {}, "max_call_s": 0.0, "lock_free": None, "close_s": None,
       "writes_lost": None, "values_intact": None}

def call(fn):
    t0 = time.monotonic()
    try:
        fn()
        ok = True
    except Exception as exc:
        out["errors"][type(exc).__name__] = out["errors"].get(type(exc).__name__, 0) + 1
        ok = False
    out["calls"] += 1
    out["max_call_s"] = max(out["max_call_s"], time.monotonic() - t0)
    return ok

def lock_free(session):
    got = []
    def probe():
        ok = session.lock.acquire(timeout=3)
        got.append(ok)
        if ok:
            session.lock.release()
    t = threading.Thread(target=probe, daemon=True)
    t.start(); t.join(5)
    return bool(got and got[0])

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def report():
    print("RESULT " + json.dumps(out), flush=True)

if name.startswith("connect"):
    port = free_port()
    listener = fillers = None
    if "unreachable" in name:
        listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(0)
        port = listener.getsockname()[1]; fillers = []
        for _ in range(8):
            c = socket.socket(); c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
            fillers.append(c)
    call(lambda: rpl_noqt.connect("127.0.0.1", port, ssh=False))
    with Simulator(port=port if listener is None else 0) as sim:
        t0 = time.monotonic()
        ok = call(lambda: rpl_noqt.connect(sim.host, sim.port, ssh=False).close())
        out["values_intact"] = ok
        out["close_s"] = time.monotonic() - t0
    report(); sys.exit(0)

sim = Simulator(port=free_port()); sim.start()
s = rpl_noqt.connect(sim.host, sim.port, ssh=False)
asg = s.rp.asg0
asg.frequency = 4321.0
if name == "drop during single()":
    s.rp.scope.setup(duration=0.01, trigger_source="immediately")
    for n in (1, 2, 3, 5):
        sim.faults.drop_after = n
        call(lambda: s.rp.scope.single(timeout=5))
elif name == "drop during write loop":
    lost = 0
    for i in range(60):
        if i % 10 == 3:
            sim.faults.drop_after = 1 + i % 4
        v = 1000.0 + 17 * i
        if call(lambda: setattr(s.rp.asg1, "frequency", v)):
            sim.faults.clear()
            on_board = s.rp.asg1.frequency
            if abs(on_board - v) > 1:
                lost += 1
    out["writes_lost"] = lost
elif name == "server restart":
    for _ in range(5):
        sim.restart()
        call(lambda: asg.frequency)
elif name == "server gone 3 s and back":
    sim.stop()
    t_end = time.monotonic() + 3
    lost = 0
    while time.monotonic() < t_end:
        v = 100.0 + out["calls"]
        if call(lambda: setattr(s.rp.asg1, "frequency", v)):
            lost += 1  # nothing listened: a write that returned cannot have reached the board
    out["writes_lost"] = lost
    sim.start()
    call(lambda: asg.frequency)
elif name == "reset every 0.3 s":
    stop = threading.Event()
    def restarter():
        while not stop.wait(0.3):
            sim.restart()
    t = threading.Thread(target=restarter, daemon=True); t.start()
    t_end = time.monotonic() + 3
    while time.monotonic() < t_end:
        call(lambda: setattr(s.rp.asg1, "frequency", 50.0 + out["calls"]))
    stop.set(); t.join(2)
elif name == "garbage reply":
    sim.faults.garble = 1
    call(lambda: asg.frequency)
    sim.faults.garble = 1000
    call(lambda: asg.frequency)
    sim.faults.clear()
elif name == "reply 1 s late":
    sim.faults.latency = 1.0 + 2.0  # later than a 2 s deadline (upstream's socket timeout is 1 s)
    call(lambda: asg.frequency)
    sim.faults.clear()
    time.sleep(3.5)

out["lock_free"] = lock_free(s)
sim.faults.clear()
if not sim.running:
    sim.start()
got = []
t = threading.Thread(target=lambda: got.append(asg.frequency), daemon=True); t.start(); t.join(15)
out["values_intact"] = bool(got) and abs(got[0] - 4321.0) < 1
t0 = time.monotonic()
t = threading.Thread(target=s.close, daemon=True); t.start(); t.join(20)
out["close_s"] = None if t.is_alive() else time.monotonic() - t0
report()
sys.stdout.flush()
os_exit = __import__("os")._exit
os_exit(0)
'''


def run(name: str, timeout: float) -> dict:
    env = dict(os.environ)
    env.setdefault("PYRPL_USER_DIR", tempfile.mkdtemp(prefix="rpl-noqt-fault-matrix-"))
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, name], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        result = next((json.loads(line[7:]) for line in lines.splitlines() if line.startswith("RESULT ")), {})
        return {"scenario": name, "hung": True, "wall_s": time.monotonic() - t0, **result}
    line = next((line for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        return {"scenario": name, "crashed": proc.returncode, "stderr": proc.stderr[-500:],
                "wall_s": time.monotonic() - t0}
    return {"scenario": name, "wall_s": time.monotonic() - t0, **json.loads(line[7:])}


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a scenario counts as hung")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args(argv)
    rows = [run(name, args.timeout) for name in args.scenarios]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'scenario':28} {'longest call s':>14} {'errors':30} {'lock free':>9} {'close s':>8} "
          f"{'writes lost':>11} {'values intact':>13}")
    for r in rows:
        if r.get("hung"):
            errors = f"HUNG (killed after {r['wall_s']:.0f} s)"
        elif "crashed" in r:
            errors = f"crashed rc={r['crashed']}"
        else:
            errors = ", ".join(f"{k} x{v}" for k, v in r["errors"].items()) or "none"
        print(f"{r['scenario']:28} {_cell(r.get('max_call_s')):>14} {errors:30} {_cell(r.get('lock_free')):>9} "
              f"{_cell(r.get('close_s')):>8} {_cell(r.get('writes_lost')):>11} {_cell(r.get('values_intact')):>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
