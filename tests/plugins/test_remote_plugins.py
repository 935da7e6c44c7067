"""Two PyMoDAQ processes sharing one board through ``leco://`` (issue 14, item 7).

A board server (``rpl-noqt serve``, its own process, embedded coordinator on
a free loopback port) owns the simulated board. This test process runs one
set of real control modules (pytest-qt); a child process runs another
DAQ_Move headless (its own QApplication, offscreen). Both use the host
``leco://NAME@127.0.0.1:PORT``; what each one moves lands on the one board
and the other reads it back.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading

import numpy as np
import pytest
from pmd_helpers import free_port, move_abs, snap

import rpl_noqt
from pymodaq_plugins_rplnoqt.hardware.board import Board

pytestmark = pytest.mark.qt
pytest.importorskip("pyleco", reason="leco:// hosts need the [remote] extra (pyleco)")

START_TIMEOUT_S = 60.0

OTHER_DASHBOARD = r"""
import json, os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qtpy import QtCore, QtWidgets
app = QtWidgets.QApplication([])
from pymodaq.control_modules.daq_move import DAQ_Move

url = sys.argv[1]

def wait(signal, action, timeout_ms=20000):
    loop, box = QtCore.QEventLoop(), []
    def got(*args):
        box.append(args)
        loop.quit()
    signal.connect(got)
    QtCore.QTimer.singleShot(timeout_ms, loop.quit)
    action()
    if not box:
        loop.exec_()
    signal.disconnect(got)
    return box[0] if box else None

move = DAQ_Move(None, title="other-pid1")
try:
    move.actuator = "RplPid"
    move.axis_name = "pid1"
    move.settings.child("actuator_settings", "board", "host").setValue(url)
    ok = wait(move.init_signal, lambda: move.init_hardware(True))
    out = {"init": bool(ok and ok[0])}
    if out["init"]:
        done = wait(move.move_done_signal, lambda: move.move_abs(0.25))
        out["moved"] = None if done is None else float(done[0].value())
        print("MOVED " + json.dumps(out), flush=True)
        sys.stdin.readline()  # the test moved pid0 meanwhile: read it back through our own plugin's board
        board = move.controller_and_thread.controller
        out["pid0_seen"] = float(board.rp.pid0.setpoint)
        out["board"] = repr(board)
finally:
    move.quit_fun()
print("DONE " + json.dumps(out), flush=True)
"""


class _Lines:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put("<eof>")

    def expect(self, prefix: str, timeout: float) -> str:
        while True:
            line = self.q.get(timeout=timeout)
            if line.startswith(prefix) or line == "<eof>":
                assert line.startswith(prefix), f"expected {prefix!r}, the process ended"
                return line[len(prefix):]


@pytest.fixture
def served(tmp_path):
    from rpl_noqt.sim import Simulator

    env = dict(os.environ, PYRPL_USER_DIR=str(tmp_path))
    env.pop("RPL_NOQT_STRICT_SIGNALS", None)
    port = free_port()
    with Simulator() as sim:
        log = open(tmp_path / "server.log", "w")  # noqa: SIM115
        server = subprocess.Popen([sys.executable, "-m", "rpl_noqt.cli", "serve", sim.host, "--port", str(sim.port),
                                   "--no-ssh", "--name", "rppmd", "--coordinator", f"127.0.0.1:{port}"],
                                  stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        try:
            _Lines(server).expect("rpl-noqt: serving board", START_TIMEOUT_S)
            yield f"leco://rppmd@127.0.0.1:{port}", env
        finally:
            server.kill()
            server.wait(10)
            server.stdout.close()
            log.close()


def test_two_pymodaq_processes_share_one_board_through_leco(qtbot, modules, statuses, served):
    url, env = served
    other = subprocess.Popen([sys.executable, "-c", OTHER_DASHBOARD, url], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        lines = _Lines(other)
        board_settings = {("board", "host"): url}
        pid = modules.move("RplPid", "pid0", axis="pid0", settings=board_settings)
        scope = modules.viewer("RplScope", "DAQ1D", "scope", settings=board_settings)
        asg = modules.move("RplAsg", "asg0", axis="asg0", settings=board_settings)
        board = pid.controller_and_thread.controller
        assert isinstance(board, Board) and board.remote and board.users == 3 and "remote leco://rppmd" in repr(board)

        first = json.loads(lines.expect("MOVED ", START_TIMEOUT_S))
        assert first["init"] and first["moved"] == pytest.approx(0.25, abs=1e-3), first
        assert move_abs(qtbot, pid, -0.125) == pytest.approx(-0.125, abs=1e-3)
        assert move_abs(qtbot, asg, 2000.0) == pytest.approx(2000.0, abs=0.5)
        assert board.rp.pid1.setpoint == pytest.approx(0.25, abs=1e-3)  # the other dashboard's move
        dte = snap(qtbot, scope)  # a curve through the board server, as binary frames
        curves = dte[0].data
        assert len(curves) == 2 and all(isinstance(c, np.ndarray) and c.shape == (2**14,) for c in curves)

        assert other.stdin is not None
        other.stdin.write("go\n")
        other.stdin.flush()
        done = json.loads(lines.expect("DONE ", 60))
        assert done["pid0_seen"] == pytest.approx(-0.125, abs=1e-3) and "remote leco://rppmd" in done["board"], done
        assert other.wait(30) == 0
        with rpl_noqt.connect(url) as r:  # a third client sees both dashboards' moves
            assert r.rp.pid0.setpoint == pytest.approx(-0.125, abs=1e-3)
            assert r.rp.pid1.setpoint == pytest.approx(0.25, abs=1e-3)
            assert r.rp.asg0.frequency == pytest.approx(2000.0, abs=0.5)

        # another client takes the board's lock: a move is refused, says who holds it, the axis stays
        from pyleco.utils.communicator import Communicator

        port = int(url.rsplit(":", 1)[1])
        with Communicator(name="holder", host="127.0.0.1", port=port, timeout=10) as holder:
            assert holder.ask_rpc("rppmd", "lock") is True
            messages = statuses(pid)
            assert move_abs(qtbot, pid, 0.3) == pytest.approx(-0.125, abs=1e-3)
            assert any("move to 0.3" in m and "holder" in m for m in messages), messages
            assert holder.ask_rpc("rppmd", "unlock") is True
        assert move_abs(qtbot, pid, 0.3) == pytest.approx(0.3, abs=1e-3)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(10)
        for stream in (other.stdin, other.stdout):
            if stream is not None:
                stream.close()
