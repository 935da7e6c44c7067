"""Remote sessions on real processes and sockets: ``rpl-noqt serve`` + coordinator + clients.

The simulated board runs in this process; the board server is a real
``rpl-noqt serve`` process (it embeds the coordinator); clients are this
process and short-lived client processes. Everything is on loopback, on
free ports (never LECO's default 12300, so parallel runs do not collide),
and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyleco", reason="remote sessions need the [remote] extra (pyleco)")

import rpl_noqt  # noqa: E402
from rpl_noqt.errors import BoardConnectionError, BoardLockedError  # noqa: E402
from rpl_noqt.remote.errors import RegistryMismatchError, RemoteNameError  # noqa: E402
from rpl_noqt.sim import Simulator  # noqa: E402

START_TIMEOUT_S = 60.0  # a server process imports pyrpl: slow on a loaded 2-core machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(user_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RPL_NOQT_STRICT_SIGNALS", None)
    env["PYRPL_USER_DIR"] = str(user_dir)
    return env


class ServerProcess:
    """``rpl-noqt serve`` in a child process; :meth:`start` returns once it printed where it serves."""

    def __init__(self, sim: Simulator, name: str, coordinator_port: int, user_dir: Path, *extra: str) -> None:
        self.args = [sys.executable, "-m", "rpl_noqt.cli", "serve", sim.host, "--port", str(sim.port), "--no-ssh",
                     "--name", name, "--coordinator", f"127.0.0.1:{coordinator_port}", *extra]
        self.user_dir = user_dir
        self.url = f"leco://{name}@127.0.0.1:{coordinator_port}"
        self.proc: subprocess.Popen[str] | None = None
        self.line = ""
        self._lines: queue.Queue[str] = queue.Queue()

    def start(self) -> ServerProcess:
        self.user_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.user_dir / f"server-{time.monotonic_ns()}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env=_env(self.user_dir))
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        try:
            self.line = self._lines.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"server did not start: {self.log()}") from None
        assert self.line.startswith("rpl-noqt: serving board"), (self.line, self.log())
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._lines.put(line.strip())
        self._lines.put("<eof>")

    def log(self) -> str:
        self._stderr.flush()
        return Path(self._stderr.name).read_text()[-3000:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        elapsed = time.monotonic() - t0
        self._close()
        return code, elapsed

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


CLIENT = r"""
import json, sys, time, numpy as np
import rpl_noqt
from rpl_noqt.errors import BoardLockedError
url, job = sys.argv[1], sys.argv[2]
out = {}
with rpl_noqt.connect(url, io_timeout=5) as r:
    out["name"] = r.name
    if job == "locked":
        try:
            r.rp.pid2.setpoint = 0.3
        except BoardLockedError as e:
            out["refused"] = str(e); out["holder"] = e.holder
        out["read"] = r.rp.pid2.setpoint  # reads stay allowed
        out["lock_free"] = r.lock.acquire(timeout=0.2)
    elif job.startswith("mix:"):
        module = job[4:]
        pid = getattr(r.rp, module)
        t_end = time.monotonic() + float(sys.argv[3])
        n = bad = curves = 0
        while time.monotonic() < t_end:
            value = round(float(np.random.uniform(-0.5, 0.5)), 3)
            pid.setpoint = value
            if abs(pid.setpoint - value) > 1e-3:
                bad += 1
            if n % 10 == 0:
                c = r.rp.scope.single(timeout=10)
                curves += c.shape == (2, 16384)
            n += 1
        out.update(n=n, bad=bad, curves=curves)
print(json.dumps(out), flush=True)
"""


def _client(url: str, *args: str, user_dir: Path, timeout: float = 60) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CLIENT, url, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(user_dir))


def _result(proc: subprocess.Popen[str], timeout: float = 60) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One simulated board served by one ``rpl-noqt serve`` process for the tests that share it."""
    user_dir = tmp_path_factory.mktemp("remote-user")
    with Simulator() as sim:
        server = ServerProcess(sim, "rpshared", _free_port(), user_dir).start()
        try:
            yield server
        finally:
            server.kill()


@pytest.fixture
def remote(served):
    with rpl_noqt.connect(served.url, io_timeout=5) as session:
        yield session
    assert session.closed


# -- the surface -------------------------------------------------------------------------
def test_get_set_setup_and_single(remote):
    r = remote
    r.rp.asg0.frequency = 1234.5
    assert r.rp.asg0.frequency == pytest.approx(1234.5, rel=1e-3)
    r.rp.asg0.setup(waveform="sin", frequency=1e3, amplitude=0.5, output_direct="out1",
                  trigger_source="immediately")
    assert r.rp.asg0.amplitude == pytest.approx(0.5, abs=1e-3) and r.rp.asg0.waveform == "sin"
    r.rp.scope.setup(duration=0.001, trigger_source="immediately", input1="asg0", input2="in2")
    curve = r.rp.scope.single(timeout=10)
    assert isinstance(curve, np.ndarray) and curve.shape == (2, 16384) and curve.dtype == np.float64
    assert 0.3 < np.ptp(curve[0]) < 1.2  # the ASG's sine, peak to peak about 1 V
    times = r.rp.scope.times
    assert times.shape == (16384,) and times[1] > 0
    assert r.rp.scope.get_setup_attributes()["trigger_source"] == "immediately"
    assert "frequency" in dir(r.rp.asg0) and "setup" in dir(r.rp.asg0) and "save_state" not in dir(r.rp.asg0)
    assert r.registry.pyrpl_version == "0.9.9.1" and len(r.registry.hash) == 64
    table = np.sin(np.linspace(0, 2 * np.pi, 16384, endpoint=False)) * 0.5  # an array argument: a binary frame
    r.rp.asg1.data = table
    np.testing.assert_allclose(r.rp.asg1.data, table, atol=2e-4)
    assert r.pyrpl.rp.pid0.setpoint == r.rp.pid0.setpoint
    assert r.pyrpl.networkanalyzer.points > 0  # software modules too


def test_same_process_joins_one_session(served):
    a = rpl_noqt.connect(served.url)
    b = rpl_noqt.connect(served.url)
    try:
        assert a is b and a.users == 2
    finally:
        a.close()
        b.close()
    assert a.closed


def test_curves_travel_as_binary_frames(served):
    from pyleco.utils.communicator import Communicator

    name, _, where = served.url[len("leco://"):].partition("@")
    host, port = where.split(":")
    with Communicator(name="rawcurve", host=host, port=int(port), timeout=10) as raw:
        result, frames = raw.ask_rpc(name, "call_action", action="scope.single", kwargs={"timeout": 10},
                                     extract_additional_payload=True)
    assert result == {"__ndarray__": 0, "dtype": "<f8", "shape": [2, 16384]}
    assert [len(f) for f in frames] == [2 * 16384 * 8]


def test_bad_values_raise_as_in_process(remote):
    with pytest.raises(ValueError, match=r"asg0\.frequency.*nan"):
        remote.rp.asg0.frequency = float("nan")
    with pytest.raises((TypeError, ValueError), match=r"asg0\.frequency"):
        remote.rp.asg0.frequency = "1e3"
    with pytest.raises(ValueError, match=r"asg0\.waveform"):
        remote.rp.asg0.waveform = "no-such-waveform"


def test_names_outside_the_registry_are_refused_by_the_client(remote):
    with pytest.raises(RemoteNameError, match="no remote attribute or method 'foo'"):
        remote.rp.asg0.foo
    with pytest.raises(AttributeError):  # RemoteNameError is an AttributeError: hasattr works
        remote.rp.nomodule
    assert not hasattr(remote.rp.asg0, "__init_subclass__x")
    with pytest.raises(RemoteNameError, match="read-only"):
        remote.rp.scope.voltage_in1 = 0.1
    with pytest.raises(RemoteNameError, match="no remote attribute"):
        remote.rp.asg0.save_state = 1
    with pytest.raises(RemoteNameError, match="takes"):
        remote.rp.asg0.setup(no_such_setting=1)


@pytest.mark.parametrize("method, params", [
    ("get_parameters", {"parameters": ["asg0.__class__"]}),
    ("get_parameters", {"parameters": ["asg0._counter_step"]}),
    ("get_parameters", {"parameters": "asg0.frequency"}),
    ("get_parameters", {"parameters": ["__builtins__.open"]}),
    ("set_parameters", {"parameters": {"scope.voltage_in1": 0.1}}),
    ("set_parameters", {"parameters": {"asg0.__dict__": {}}}),
    ("call_action", {"action": "asg0.__init__"}),
    ("call_action", {"action": "scope.save_curve"}),
    ("call_action", {"action": "asg0.setup", "kwargs": {"__class__": 1}}),
    ("call_action", {"action": "pyrplconfig.save"}),
    ("lock", {"resource": "asg0.__class__"}),
    ("shut_down", {}),
])
def test_names_outside_the_registry_are_refused_by_the_server(served, method, params):
    """Requests that bypass our client (any LECO component may send anything) get a clear error."""
    from pyleco.json_utils.errors import JSONRPCError
    from pyleco.utils.communicator import Communicator

    name, _, where = served.url[len("leco://"):].partition("@")
    host, port = where.split(":")
    with Communicator(name=f"raw{os.getpid()}", host=host, port=int(port), timeout=10) as raw:
        with pytest.raises(JSONRPCError) as info:
            raw.ask_rpc(name, method, **params)
        assert raw.ask_rpc(name, "pong") is None  # still serving
    assert info.value.rpc_error.code in (-32011, -32601), info.value  # refused / method not found


# -- the lock ----------------------------------------------------------------------------
def test_lock_refuses_other_clients_writes_and_names_the_holder(remote, served, tmp_path):
    remote.rp.pid2.setpoint = 0.1
    with remote.lock:
        assert remote.lock.held and remote.locks() == {"": remote.name}
        remote.rp.pid2.setpoint = 0.2  # the holder may write
        other = _result(_client(served.url, "locked", user_dir=tmp_path))
        assert other["holder"] == remote.name and remote.name in other["refused"]
        assert other["read"] == pytest.approx(0.2, abs=1e-3) and other["lock_free"] is False
        with remote.lock:  # reentrant
            pass
        assert remote.lock.held
    assert not remote.lock.held and remote.locks() == {}
    assert remote.rp.pid2.setpoint == pytest.approx(0.2, abs=1e-3)


def test_lock_wait_is_bounded_and_names_the_holder(remote, served):
    from pyleco.utils.communicator import Communicator

    name, _, where = served.url[len("leco://"):].partition("@")
    host, port = where.split(":")
    with Communicator(name="holder", host=host, port=int(port), timeout=10) as holder:
        assert holder.ask_rpc(name, "lock") is True  # a plain pyleco director takes the lock
        remote.lock_timeout = 0.3
        t0 = time.monotonic()
        with pytest.raises(BoardLockedError, match="holder") as info:
            with remote.lock:
                pass
        assert time.monotonic() - t0 < 3 and info.value.holder.endswith("holder")
        with pytest.raises(BoardLockedError):
            remote.rp.scope.single(timeout=1)  # a call that changes the board is a write
        assert isinstance(remote.rp.pid0.setpoint, float)
        assert remote.lock.force_release().endswith("holder")
    remote.rp.pid0.setpoint = 0.0


# -- several clients ---------------------------------------------------------------------
def test_client_processes_share_one_board(served, tmp_path):
    procs = [_client(served.url, f"mix:pid{i}", "3", user_dir=tmp_path) for i in range(2)]
    results = [_result(p, timeout=90) for p in procs]
    names = {r["name"] for r in results}
    assert len(names) == 2
    for r in results:
        assert r["n"] > 10 and r["bad"] == 0 and r["curves"] >= 1, r


# -- contract checks ---------------------------------------------------------------------
class _FakeServer:
    """A LECO component answering ``describe`` with a registry we doctored."""

    def __init__(self, coordinator_port: int, name: str, describe: dict) -> None:
        from pyleco.utils.message_handler import MessageHandler

        class Fake(MessageHandler):
            def register_rpc_methods(self) -> None:
                super().register_rpc_methods()
                self.register_rpc_method(lambda: describe, name="describe")

        self.handler = Fake(name, host="127.0.0.1", port=coordinator_port)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.handler.listen, kwargs={"stop_event": self.stop,
                                                                          "waiting_time": 20}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while self.handler.namespace is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.handler.close()


def test_registry_mismatch_is_refused(remote, served):
    port = int(served.url.rsplit(":", 1)[1])
    good = {"registry": remote.registry.to_wire(), "server": {}}
    tampered = json.loads(json.dumps(good))
    tampered["registry"]["modules"]["asg0"]["methods"]["free"] = {
        "writes": True, "long": False, "params": [], "timeout_param": None}
    old = json.loads(json.dumps(good))
    old["registry"]["pyrpl_version"] = "0.9.3.6"
    old["registry"]["hash"] = _rehash(old["registry"])  # consistent, but another PyRPL
    for i, (description, match) in enumerate([(tampered, "does not match its hash"), (old, "PyRPL 0.9.3.6"),
                                              ({"registry": "nope"}, "no registry")]):
        fake = _FakeServer(port, f"fake{i}", description)
        try:
            with pytest.raises(RegistryMismatchError, match=match):
                rpl_noqt.connect(f"leco://fake{i}@127.0.0.1:{port}", connect_timeout=5)
        finally:
            fake.close()
    with pytest.raises(RegistryMismatchError, match="not 0000"):  # joining the open session
        rpl_noqt.connect(served.url, registry_hash="0" * 64)
    remote.close()
    with pytest.raises(RegistryMismatchError, match="expected 0000"):  # a new session
        rpl_noqt.connect(served.url, registry_hash="0" * 64)
    assert rpl_noqt.connect(served.url, registry_hash=remote.registry.hash).close() is None


def _rehash(registry: dict) -> str:
    import hashlib

    content = {k: registry[k] for k in ("protocol", "pyrpl_version", "modules")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def test_unknown_server_and_missing_coordinator_fail_fast(served):
    port = int(served.url.rsplit(":", 1)[1])
    t0 = time.monotonic()
    with pytest.raises(BoardConnectionError, match="no board server named 'nobody'"):
        rpl_noqt.connect(f"leco://nobody@127.0.0.1:{port}")
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    with pytest.raises(BoardConnectionError, match="no LECO coordinator answered"):
        rpl_noqt.connect(f"leco://rp@127.0.0.1:{_free_port()}", connect_timeout=0.5)
    assert time.monotonic() - t0 < 2
    with pytest.raises(rpl_noqt.session.SessionConfigError, match="board server"):
        rpl_noqt.connect(served.url, config="x")


# -- faults and lifecycle (own server processes) -----------------------------------------
def test_server_killed_during_call_then_back_then_clean_stop(tmp_path):
    """kill -9 during a long call: BoardConnectionError in bounded time; the client reconnects
    to the restarted server by itself and reads back what it set; SIGTERM stops it within 2 s
    with the config flushed."""
    port = _free_port()
    with Simulator() as sim:
        server = ServerProcess(sim, "rpfault", port, tmp_path, "--config", "faultcfg").start()
        try:
            r = rpl_noqt.connect(server.url, io_timeout=1.0)
            try:
                r.rp.pid1.setpoint = 0.25
                box: dict = {}

                def long_call() -> None:
                    t = time.monotonic()
                    try:
                        r.rp.sampler.stats("in1", 20.0)  # 20 s on the server: a call in progress
                    except BaseException as exc:  # noqa: BLE001
                        box["error"] = exc
                    box["t"] = time.monotonic() - t

                caller = threading.Thread(target=long_call)
                caller.start()
                time.sleep(1.0)
                killed = time.monotonic()
                server.kill()
                caller.join(15)
                assert not caller.is_alive(), "the call hung after the server was killed"
                assert isinstance(box.get("error"), BoardConnectionError), box
                detected = time.monotonic() - killed
                assert detected < 2.5, detected  # the client's 1 s I/O timeout (probes go to NAME-alive), plus slack
                assert "stopped answering" in str(box["error"])

                server = ServerProcess(sim, "rpfault", port, tmp_path, "--config", "faultcfg").start()
                deadline = time.monotonic() + 30
                while True:  # the same session object reconnects on its own
                    try:
                        value = r.rp.pid1.setpoint
                        break
                    except BoardConnectionError:
                        assert time.monotonic() < deadline, "no reconnect within 30 s"
                        time.sleep(0.2)
                assert value == pytest.approx(0.25, abs=1e-3)
                r.rp.pid0.setpoint = 0.125
            finally:
                r.close()
            code, elapsed = server.terminate(timeout=10)
            assert code == 0 and elapsed < 2.0, (code, elapsed, server.log())
            config = (tmp_path / "config" / "faultcfg.yml").read_text()
            assert "setpoint: 0.125" in config, config
        finally:
            server.kill()


def test_serve_in_process_handle(sim):
    port = _free_port()
    with rpl_noqt.serve(sim.host, sim.port, name="rpinproc", ssh=False,
                        coordinator=f"127.0.0.1:{port}") as server:
        assert server.url == f"leco://rpinproc@127.0.0.1:{port}" and server.embedded is not None
        assert "embedded coordinator on 127.0.0.1" in server.describe()
        with pytest.raises(BoardConnectionError, match="already signed in"):
            rpl_noqt.serve(sim.host, sim.port, name="rpinproc", ssh=False, coordinator=f"127.0.0.1:{port}")
        assert not server.session.closed  # the failed second server gave its hold back, not ours
        with rpl_noqt.connect(server.url) as r:
            r.rp.asg1.offset = 0.05
            assert server.session.rp.asg1.offset == pytest.approx(0.05, abs=1e-3)
    assert server.closed and server.session.closed
    with pytest.raises(ValueError, match="name"):
        rpl_noqt.serve(sim.host, sim.port, name="a.b", ssh=False)


def test_missing_pyleco_names_the_extra(run_python):
    code = (
        "import sys; sys.modules['pyleco'] = None\n"
        "import rpl_noqt\n"
        "try:\n"
        "    rpl_noqt.connect('leco://rp')\n"
        "except ImportError as e:\n"
        "    print('ERR', e)\n"
        "from rpl_noqt.cli import main\n"
        "sys.exit(main(['serve', '127.0.0.1', '--name', 'x']))\n"
    )
    result = run_python(code)
    assert "ERR" in result.stdout and 'pip install "rpl-noqt[remote]"' in result.stdout, result
    assert result.returncode == 1 and "rpl-noqt[remote]" in result.stderr, result
