"""RplIq's lock-in over ``leco://``: the same data as in-process, and a server killed mid-grab (issue 14, item 7).

The simulator runs in this process (so the test can inject a tone locked to
the IQ module's oscillator); the in-process plugin reaches it over TCP, a
board server (``rpl-noqt serve``, its own process, embedded coordinator on a
free loopback port) reaches it the same way, and a second plugin goes through
that server. A monitor server serves one client at a time, so the in-process
plugin closes before the server connects. Real DAQ_Viewer control modules,
each plugin in its PyMoDAQ QThread.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pmd_helpers import free_port, set_setting, snap, timed

pytestmark = [pytest.mark.qt, pytest.mark.timeout(180)]
pytest.importorskip("pyleco", reason="leco:// hosts need the [remote] extra (pyleco)")

START_TIMEOUT_S = 60.0
CLOSE_WITHIN_S = 2.0
TONE_V, TONE_DEG, FREQUENCY = 0.2, 40.0, 20e3
#: X and Y of one reading agree with the other path's within this (V): 1 % of the tone
AGREE_V = 2e-3


class _Server:
    """``rpl-noqt serve`` for a simulator, in its own process; killed (SIGKILL) by the test or at the end."""

    def __init__(self, sim: Any, tmp_path: Any) -> None:
        env = dict(os.environ, PYRPL_USER_DIR=str(tmp_path))
        env.pop("RPL_NOQT_STRICT_SIGNALS", None)
        port = free_port()
        self.url = f"leco://rpiq@127.0.0.1:{port}"
        self._log = open(tmp_path / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rpl_noqt.cli", "serve", sim.host, "--port", str(sim.port), "--no-ssh",
             "--name", "rpiq", "--coordinator", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:  # the one line it prints once it serves
            line = self.proc.stdout.readline()
            if line.startswith("rpl-noqt: serving board") or not line:
                break
        assert line.startswith("rpl-noqt: serving board"), (tmp_path / "server.log").read_text()[-2000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def sim() -> Iterator[Any]:
    """A simulator of the test's own: in2 carries only the tones the test injects."""
    from rpl_noqt.sim import Simulator

    with Simulator() as s:
        s.model.set_loopback(2, gain=0.0)
        yield s


@pytest.fixture
def server_for(tmp_path) -> Iterator[Any]:
    started: list[_Server] = []

    def start(sim: Any) -> _Server:
        started.append(_Server(sim, tmp_path))
        return started[-1]

    yield start
    for server in started:
        server.close()


def _direct(sim: Any) -> dict[tuple[str, ...], Any]:
    return {("board", "host"): sim.host, ("board", "port"): sim.port, ("board", "ssh"): False}


def _configure(qtbot: Any, iq: Any, integration_time: float) -> None:
    """The lock-in settings, through the plugin's tree (each reaches the board in order)."""
    board = iq.controller_and_thread.controller
    for path, value in {("integration_time",): integration_time, ("quantities",): "X/Y", ("input",): "in2",
                        ("amplitude",): 0.0, ("output_direct",): "off", ("bandwidth",): 500.0}.items():
        iq.settings.child("detector_settings", *path).setValue(value)
    set_setting(qtbot, iq, ("frequency",), FREQUENCY, until=lambda: abs(board.rp.iq0.frequency - FREQUENCY) < 0.1)


def _quantities(qtbot: Any, iq: Any, quantities: str) -> Any:
    """Switch X/Y <-> R/phase and return the first grab that shows it (the setting travels on its own path)."""
    iq.settings.child("detector_settings", "quantities").setValue(quantities)
    labels = ["X", "Y"] if quantities == "X/Y" else ["R"]
    for _ in range(20):
        dte = snap(qtbot, iq)
        if dte[0].labels == labels:
            return dte
    raise AssertionError(f"the plugin did not switch to {quantities}")


def _record(dte: Any) -> dict[str, Any]:
    """Names, labels, units, shapes and values of one grab."""
    return {d.name: {"labels": list(d.labels), "units": d.units, "dim": str(d.dim),
                     "shapes": [np.asarray(a).shape for a in d.data], "values": [float(a[0]) for a in d.data]}
            for d in dte}


def _grabs(qtbot: Any, iq: Any, n: int) -> list[dict[str, Any]]:
    return [_record(snap(qtbot, iq)) for _ in range(n)]


def _describe(grabs: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything but the values (which must agree within noise, not exactly)."""
    return {name: {k: v for k, v in d.items() if k != "values"} for name, d in grabs[0].items()}


def _measure(qtbot: Any, sim: Any, iq: Any) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Set the lock-in up, put the tone on in2, grab 5 X/Y and one R/phase through the plugin.

    The module is set up with the plugin's own driver from this thread, not
    through the tree: every ``setup()`` re-synchronises the IQ oscillators,
    and a tree change could reach the board after the tone was locked to
    iq0. The tone is injected afresh, locked to iq0's oscillator as it runs
    now (a server that connects sets the board up from its own config).
    """
    from pymodaq_plugins_rplnoqt.hardware.iq import IqDriver

    for name, value in (("integration_time", 0.01), ("quantities", "X/Y")):  # plugin-side settings only
        iq.settings.child("detector_settings", name).setValue(value)
    board = iq.controller_and_thread.controller
    shown = IqDriver(board, "iq0").configure(input="in2", frequency=FREQUENCY, bandwidth=500.0, amplitude=0.0,
                                             output_direct="off")
    sim.model.remove_tone()
    sim.model.inject_tone(2, shown["frequency"], TONE_V, phase_deg=TONE_DEG, reference="iq0")
    return _grabs(qtbot, iq, 5), _record(_quantities(qtbot, iq, "R/phase")), shown


def test_rpliq_over_leco_gives_the_in_process_data(qtbot, modules, sim, server_for, statuses) -> None:
    # in-process: the plugin's own connection to the board
    local = modules.viewer("RplIq", "DAQ0D", "local", settings=_direct(sim))
    local_xy, local_polar, local_shown = _measure(qtbot, sim, local)
    modules.close(local)  # the monitor server serves one client: the board server connects next

    server = server_for(sim)
    remote = modules.viewer("RplIq", "DAQ0D", "remote", settings={("board", "host"): server.url})
    board = remote.controller_and_thread.controller
    assert board.remote and "remote leco://rpiq" in repr(board)
    messages = statuses(remote)
    remote_xy, remote_polar, remote_shown = _measure(qtbot, sim, remote)
    assert not [m for m in messages if "failed" in m], messages
    # the board took the same settings, read back through the server
    assert remote_shown == local_shown and local_shown["bandwidth"] == pytest.approx(607.1, rel=0.01)
    frequency = local_shown["frequency"]

    # the same data: names, labels, units, shapes ...
    assert _describe(remote_xy) == _describe(local_xy) == {
        "RplIq": {"labels": ["X", "Y"], "units": "V", "dim": "DataDim.Data0D", "shapes": [(1,), (1,)]}}
    assert {n: {k: v for k, v in d.items() if k != "values"} for n, d in remote_polar.items()} == \
           {n: {k: v for k, v in d.items() if k != "values"} for n, d in local_polar.items()} == {
        "RplIq_R": {"labels": ["R"], "units": "V", "dim": "DataDim.Data0D", "shapes": [(1,)]},
        "RplIq_phase": {"labels": ["phase"], "units": "deg", "dim": "DataDim.Data0D", "shapes": [(1,)]}}
    # ... and the same values: the injected tone, as in-process, grab by grab
    pipeline = 360 * frequency * 3 * 8e-9
    expected = TONE_V * np.exp(1j * math.radians(TONE_DEG - pipeline))
    for grab in local_xy + remote_xy:
        x, y = grab["RplIq"]["values"]
        assert x == pytest.approx(expected.real, abs=AGREE_V) and y == pytest.approx(expected.imag, abs=AGREE_V)
    local_mean = np.mean([g["RplIq"]["values"] for g in local_xy], axis=0)
    remote_mean = np.mean([g["RplIq"]["values"] for g in remote_xy], axis=0)
    assert remote_mean == pytest.approx(local_mean, abs=AGREE_V / 2)
    for polar in (local_polar, remote_polar):
        assert polar["RplIq_R"]["values"][0] == pytest.approx(TONE_V, rel=0.01)
        assert polar["RplIq_phase"]["values"][0] == pytest.approx(TONE_DEG - pipeline, abs=0.5)
    print(f"\nRplIq X/Y in-process {local_mean.tolist()} over leco:// {remote_mean.tolist()} "
          f"(expected {[expected.real, expected.imag]}); R/phase in-process {local_polar} over leco:// {remote_polar}")

    # the input range is this process's (the jumper): HV scales in2 by 20 over leco:// too
    set_setting(qtbot, remote, ("board", "in2_range"), "HV", until=lambda: board.input_range("in2") == "HV")
    assert _record(snap(qtbot, remote))["RplIq_R"]["values"][0] == pytest.approx(20 * TONE_V, rel=0.01)

    # another client holds the board's lock: a reading is refused, naming the holder; then it works again
    from pyleco.utils.communicator import Communicator

    with Communicator(name="holder", host="127.0.0.1", port=int(server.url.rsplit(":", 1)[1]), timeout=10) as holder:
        assert holder.ask_rpc("rpiq", "lock") is True
        remote.snap()
        qtbot.waitUntil(lambda: any(m.startswith("grab failed:") and "holder" in m for m in messages), timeout=5000)
        assert holder.ask_rpc("rpiq", "unlock") is True
    assert _record(snap(qtbot, remote))["RplIq_R"]["values"][0] == pytest.approx(20 * TONE_V, rel=0.01)


def test_rpliq_over_leco_with_the_server_killed_mid_grab(qtbot, modules, sim, server_for, statuses,
                                                         error_log) -> None:
    server = server_for(sim)
    remote = modules.viewer("RplIq", "DAQ0D", "remote",
                            settings={("board", "host"): server.url, ("board", "io_timeout"): 1.0})
    messages = statuses(remote)
    _configure(qtbot, remote, 0.5)  # long readings: the kill lands inside one
    session = remote.controller_and_thread.controller.session
    silence_limit = float(session._link.silence_limit)  # what the client waits for a silent server
    received: list[Any] = []
    remote.grab_done_signal.connect(received.append)
    with qtbot.waitSignal(remote.grab_status, timeout=10_000, check_params_cb=lambda on: on):
        remote.grab_data(True)
    qtbot.waitUntil(lambda: len(received) >= 1, timeout=10_000)
    time.sleep(0.2)  # into the next reading
    with qtbot.waitSignal(remote.grab_status, timeout=int((silence_limit + 5) * 1000),
                          check_params_cb=lambda on: not on):
        killed = time.monotonic()
        server.kill()
    took = time.monotonic() - killed
    failures = [m for m in messages if m.startswith("grab failed:")]
    print(f"\nRplIq over leco://, server killed mid-grab: grab stopped after {took:.2f} s "
          f"(client silence limit {silence_limit:.1f} s): {failures}")
    assert len(failures) == 1 and "rpiq" in failures[0], messages
    assert took <= silence_limit + 1.0
    closing = timed(lambda: modules.close(remote))
    print(f"closed in {closing:.2f} s")
    assert closing < CLOSE_WITHIN_S
    assert not [m for m in error_log.messages() if "rplnoqt" in m or "daq_viewer" in m], error_log.messages()
