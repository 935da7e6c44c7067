"""Stress: a coordinator, a board server and 4 client processes on one simulated board.

Each process is real and talks over loopback sockets on free ports: the
coordinator runs alone in its own process (the server finds it and does not
embed one), the server is ``rpl-noqt serve``, and 4 clients do a random mix
of gets, sets and ``scope.single()`` for a fixed time. Each client owns
different attributes (nobody else writes them), so every value it reads
back must be the one the board took at its own last write, exactly, and
that value must be the written one up to the register's resolution. A reply
that belongs to another request (a desync) would show up as a wrong value,
a wrong type or a curve where a number was due: none may happen.

The 20 s run of the issue is marked ``slow``; a 4 s run is in the default suite.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("pyleco", reason="remote sessions need the [remote] extra (pyleco)")

import rpl_noqt  # noqa: E402
from rpl_noqt.sim import Simulator  # noqa: E402

from test_remote import START_TIMEOUT_S, ServerProcess, _env, _free_port  # noqa: E402

#: what each client owns: (module, attribute, low, high, tolerance of the register)
OWNED = [
    [("pid0", "setpoint", -0.9, 0.9, 2e-4), ("pid0", "p", 0.0, 10.0, 1e-3)],
    [("pid1", "setpoint", -0.9, 0.9, 2e-4), ("asg0", "frequency", 1e3, 1e6, 1.0)],
    [("pid2", "setpoint", -0.9, 0.9, 2e-4), ("pid2", "i", 0.0, 100.0, 1e-1)],
    [("asg1", "offset", -0.5, 0.5, 2e-4), ("asg1", "amplitude", 0.0, 0.5, 2e-4)],
]

CLIENT = r"""
import json, random, sys, time
import numpy as np
import rpl_noqt
url, index, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
owned = json.loads(sys.argv[4])
rng = random.Random(index)
counts = {"set": 0, "get": 0, "single": 0}
bad = []
board_value = {}  # path -> what the board took at this client's last write
with rpl_noqt.connect(url, io_timeout=5) as r:
    modules = {m: getattr(r.rp, m) for m, *_ in owned}
    for m, a, lo, hi, tol in owned:  # start from a known value
        v = round(rng.uniform(lo, hi), 4)
        setattr(modules[m], a, v)
        board_value[f"{m}.{a}"] = getattr(modules[m], a)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        m, a, lo, hi, tol = rng.choice(owned)
        path = f"{m}.{a}"
        op = rng.random()
        if op < 0.4:
            v = round(rng.uniform(lo, hi), 4)
            setattr(modules[m], a, v)
            took = getattr(modules[m], a)
            counts["set"] += 1
            if not isinstance(took, float) or abs(took - v) > tol:
                bad.append(f"set {path}={v!r} read back {took!r}")
            board_value[path] = took
        elif op < 0.92:
            got = getattr(modules[m], a)
            counts["get"] += 1
            if got != board_value[path]:
                bad.append(f"get {path} = {got!r}, its owner last saw {board_value[path]!r}")
        else:
            curve = r.rp.scope.single(timeout=10)
            counts["single"] += 1
            if not (isinstance(curve, np.ndarray) and curve.shape == (2, 16384) and curve.dtype == np.float64
                    and np.isfinite(curve).all()):
                bad.append(f"single returned {type(curve).__name__} {getattr(curve, 'shape', None)}")
    final = {p: getattr(modules[p.split('.')[0]], p.split('.')[1]) for p in board_value}
    bad += [f"final {p} = {final[p]!r} != {board_value[p]!r}" for p in final if final[p] != board_value[p]]
print(json.dumps({"name": r.name, "counts": counts, "bad": bad[:20], "n_bad": len(bad), "final": final}),
      flush=True)
"""

COORDINATOR = r"""
import sys, threading, zmq
from rpl_noqt.remote.coordinator import EmbeddedCoordinator
coordinator = EmbeddedCoordinator("127.0.0.1", int(sys.argv[1]), zmq.Context())
print("routing", flush=True)
sys.stdin.read()  # until the test closes our stdin
coordinator.close()
"""


@pytest.mark.parametrize("duration", [pytest.param(20.0, marks=[pytest.mark.slow, pytest.mark.timeout(240)]), 4.0],
                         ids=["20s", "4s"])
def test_four_clients_mixed_load_no_desync(duration, tmp_path):
    port = _free_port()
    coordinator = subprocess.Popen([sys.executable, "-c", COORDINATOR, str(port)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(tmp_path))
    clients: list[subprocess.Popen[str]] = []
    try:
        assert coordinator.stdout is not None and coordinator.stdout.readline().strip() == "routing"
        with Simulator() as sim:
            server = ServerProcess(sim, "rpstress", port, tmp_path).start()
            try:
                assert f"coordinator at 127.0.0.1:{port}" in server.line, server.line  # not an embedded one
                with rpl_noqt.connect(server.url, io_timeout=5) as r:
                    r.rp.scope.setup(duration=0.001, trigger_source="immediately", input1="in1", input2="in2")
                clients = [subprocess.Popen([sys.executable, "-c", CLIENT, server.url, str(i), str(duration),
                                             json.dumps(OWNED[i])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True, env=_env(tmp_path)) for i in range(4)]
                results = []
                for proc in clients:
                    out, err = proc.communicate(timeout=START_TIMEOUT_S + duration + 60)
                    assert proc.returncode == 0, err[-3000:]
                    results.append(json.loads(out.strip().splitlines()[-1]))
                assert len({res["name"] for res in results}) == 4
                for i, res in enumerate(results):
                    assert res["n_bad"] == 0, (i, res["bad"])
                    c = res["counts"]
                    assert c["set"] >= 5 and c["get"] >= 5 and c["single"] >= 1, (i, c)
                # what each owner last saw is what the board holds now, seen from a fifth client
                with rpl_noqt.connect(server.url, io_timeout=5) as r:
                    for res in results:
                        for path, value in res["final"].items():
                            module, attribute = path.split(".")
                            assert getattr(getattr(r.rp, module), attribute) == value, path
                total = {k: sum(res["counts"][k] for res in results) for k in ("set", "get", "single")}
                print(f"\n{duration:g} s, 4 clients: {total} (0 desyncs)")
            finally:
                server.kill()
    finally:
        for proc in clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        if coordinator.poll() is None:
            coordinator.stdin.close()
            try:
                coordinator.wait(10)
            except subprocess.TimeoutExpired:
                coordinator.kill()
                coordinator.wait(10)
        for stream in (coordinator.stdin, coordinator.stdout, coordinator.stderr):
            if stream is not None and not stream.closed:
                stream.close()
