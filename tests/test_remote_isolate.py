"""``connect(host, port, isolate=True)``: the board's server in a child process, on real processes.

The simulated board runs in this process; the isolated server is a child
process (of this process, or of a throw-away parent process for the
parent-death test), with its own coordinator on a free loopback port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("pyleco", reason="remote sessions need the [remote] extra (pyleco)")

import rpl_noqt  # noqa: E402
from rpl_noqt.errors import BoardConnectionError  # noqa: E402
from rpl_noqt.remote.client import RemoteSession  # noqa: E402
from rpl_noqt.session import SessionConfigError  # noqa: E402


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float) -> float:
    t0 = time.monotonic()
    while not _gone(pid):
        assert time.monotonic() - t0 < timeout, f"process {pid} still runs after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_isolated_session_works_like_a_local_one_and_stops_its_child(sim):
    r = rpl_noqt.connect(sim.host, sim.port, ssh=False, isolate=True)
    pid = r.isolated_pid
    try:
        assert isinstance(r, RemoteSession) and pid != os.getpid() and r.server_info["pid"] == pid
        assert r.url.startswith("leco://iso") and "@127.0.0.1:" in r.url  # its own loopback coordinator
        r.rp.pid1.setpoint = 0.25
        assert r.rp.pid1.setpoint == pytest.approx(0.25, abs=1e-3)
        r.rp.scope.setup(duration=0.001, trigger_source="immediately", input1="in1", input2="in2")
        assert r.rp.scope.single(timeout=10).shape == (2, 16384)
        again = rpl_noqt.connect(sim.host, sim.port, ssh=False, isolate=True)
        assert again is r and r.users == 2  # one child per board, shared like a session
        again.close()
        assert not r.closed and not _gone(pid)
        with pytest.raises(SessionConfigError, match="isolate=True"):
            rpl_noqt.connect(r.url, isolate=True)
    finally:
        r.close()
    assert r.closed and _wait_gone(pid, 6) < 6
    with rpl_noqt.connect(sim.host, sim.port, ssh=False) as local:  # the board is free again
        assert local.rp.pid1.setpoint == pytest.approx(0.25, abs=1e-3)


def test_killed_child_raises_board_connection_error_at_once(sim):
    r = rpl_noqt.connect(sim.host, sim.port, ssh=False, isolate=True, io_timeout=2)
    try:
        box: dict = {}

        def long_call() -> None:
            try:
                r.rp.sampler.stats("in1", 20.0)  # 20 s on the server: a call in progress
            except BaseException as exc:  # noqa: BLE001
                box["error"] = exc
            box["t"] = time.monotonic()

        caller = threading.Thread(target=long_call)
        caller.start()
        time.sleep(0.5)
        killed = time.monotonic()
        os.kill(r.isolated_pid, signal.SIGKILL)
        caller.join(10)
        assert not caller.is_alive(), "the call hung after the child was killed"
        assert isinstance(box.get("error"), BoardConnectionError), box
        assert box["t"] - killed < 1.0, box["t"] - killed  # well within io_timeout: the exit is seen at once
        assert "killed by signal 9" in str(box["error"])
        t0 = time.monotonic()
        with pytest.raises(BoardConnectionError, match="killed by signal 9"):
            r.rp.pid0.setpoint  # and every later call, without waiting for anything
        assert time.monotonic() - t0 < 0.5
    finally:
        r.close()
    r = rpl_noqt.connect(sim.host, sim.port, ssh=False, isolate=True)  # connecting again starts a new child
    try:
        assert isinstance(r.rp.pid0.setpoint, float)
    finally:
        r.close()


PARENT = r"""
import sys, rpl_noqt
r = rpl_noqt.connect(sys.argv[1], int(sys.argv[2]), ssh=False, isolate=True, config="isocfg")
r.rp.pid2.setpoint = 0.375
print(r.isolated_pid, flush=True)
sys.stdin.read()  # until killed
"""


def test_child_exits_when_its_parent_dies(sim, tmp_path):
    env = dict(os.environ, PYRPL_USER_DIR=str(tmp_path))
    env.pop("RPL_NOQT_STRICT_SIGNALS", None)
    parent = subprocess.Popen([sys.executable, "-c", PARENT, sim.host, str(sim.port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), line
        child = int(line)
        assert not _gone(child)
        parent.kill()
        parent.wait(10)
        assert _wait_gone(child, 10) < 10  # no orphan keeps the board
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
        for stream in (parent.stdin, parent.stdout):
            stream.close()
    assert "setpoint: 0.375" in (tmp_path / "config" / "isocfg.yml").read_text()  # it closed cleanly
    with rpl_noqt.connect(sim.host, sim.port, ssh=False, connect_timeout=2) as local:
        assert local.rp.pid2.setpoint == pytest.approx(0.375, abs=1e-3)


def test_isolated_start_failures_are_the_usual_errors(sim):
    from rpl_noqt.sim import Simulator

    with Simulator() as gone:
        port = gone.port
    t0 = time.monotonic()
    with pytest.raises(BoardConnectionError) as info:
        rpl_noqt.connect("127.0.0.1", port, ssh=False, isolate=True, connect_timeout=1)
    assert f"127.0.0.1:{port}" in str(info.value) and time.monotonic() - t0 < 30
    with pytest.raises(SessionConfigError, match="config"):
        rpl_noqt.connect(sim.host, sim.port, ssh=False, isolate=True, config="../escape")
    with pytest.raises(SessionConfigError, match="isolate"):
        rpl_noqt.connect(sim.host, sim.port, isolate="yes")
    with pytest.raises(SessionConfigError, match="JSON"):
        rpl_noqt.connect(sim.host, sim.port, ssh=False, isolate=True, user=object())
    with rpl_noqt.connect(sim.host, sim.port, ssh=False) as local:
        with pytest.raises(SessionConfigError, match="open in this process"):
            rpl_noqt.connect(sim.host, sim.port, ssh=False, isolate=True)
        assert not local.closed
