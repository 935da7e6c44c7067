"""A server that cannot be worn down (issue 13, part 3): connection cap, listen
backlog, running out of descriptors or threads, bounded queue waits, clients
that have gone, and what a client of another process sees when the board is
busy.  Loopback only; every wait is bounded."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sim_rawclient import RawClient

from rpl_noqt.sim import Faults
from rpl_noqt.sim.server import DEFAULT_MAX_CONNECTIONS, LISTEN_BACKLOG, Simulator

HK_ID = 0x40000000
LOGGER = "rpl_noqt.sim.server"


def _wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def _threads(sim: Simulator) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"rpl-sim-{sim.port}-c")]


@pytest.fixture
def clients():
    made: list[RawClient] = []

    def connect(sim: Simulator, timeout: float = 2.0) -> RawClient:
        c = RawClient(sim.port, timeout)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


def test_documented_defaults():
    s = Simulator()
    assert s.client_policy.value == "queue"
    assert (s.max_connections, s.queue_timeout, s.idle_timeout) == (DEFAULT_MAX_CONNECTIONS, 10.0, 5.0)
    assert LISTEN_BACKLOG >= 128
    for bad in ({"max_connections": 0}, {"max_connections": True}, {"queue_timeout": -1},
                {"idle_timeout": float("nan")}, {"queue_timeout": "1"}):
        with pytest.raises(ValueError):
            Simulator(**bad)


def test_connections_beyond_the_cap_are_refused_at_once_logged_and_accepting_goes_on(clients, caplog):
    with Simulator(client_policy="share", max_connections=3) as sim, caplog.at_level(logging.WARNING, LOGGER):
        held = [clients(sim) for _ in range(3)]
        for c in held:
            assert c.read(HK_ID)[1] == [1]
        extra = clients(sim)
        assert extra.is_closed(timeout=2.0)
        assert sim.refused == 1
        assert "max_connections 3" in caplog.text
        held[0].close()
        assert _wait_until(lambda: len(_threads(sim)) == 2)
        assert clients(sim).read(HK_ID)[1] == [1]  # a slot is free again


def test_a_burst_of_connects_is_not_held_up_by_the_backlog():
    """Listen backlog 16: 1000 connects took 57 s (SYN retries). Now every connect
    completes at once; those beyond the cap are closed by the server."""
    with Simulator(client_policy="share") as sim:
        socks = []
        t0 = time.monotonic()
        try:
            for _ in range(600):
                socks.append(socket.create_connection((sim.host, sim.port), timeout=5))
            took = time.monotonic() - t0
            assert _wait_until(lambda: sim.connections + sim.refused == 600, 10)
        finally:
            for s in socks:
                s.close()
        assert took < 10, f"600 connects took {took:.1f} s"
        assert sim.connections == DEFAULT_MAX_CONNECTIONS and sim.refused == 600 - DEFAULT_MAX_CONNECTIONS
        assert _wait_until(lambda: not _threads(sim), 5.0)
        c = RawClient(sim.port)
        try:
            assert c.read(HK_ID)[1] == [1]  # served as before
        finally:
            c.close()


def test_accept_errors_and_a_thread_that_cannot_start_do_not_end_the_server(monkeypatch, caplog):
    real_accept = socket.socket.accept
    failures = {"accept": 3, "start": 1}

    def accept(self):
        if failures["accept"] > 0 and self.getsockname()[1] == port:
            failures["accept"] -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(self)

    real_start = threading.Thread.start

    def start(self):
        if self.name.startswith(f"rpl-sim-{port}-c") and failures["start"] > 0:
            failures["start"] -= 1
            raise RuntimeError("can't start new thread")
        return real_start(self)

    sim = Simulator().start()
    port = sim.port
    try:
        with caplog.at_level(logging.WARNING, LOGGER):
            monkeypatch.setattr(socket.socket, "accept", accept)
            monkeypatch.setattr(threading.Thread, "start", start)
            first = RawClient(port)  # accept fails 3 times, then its thread cannot start: refused
            try:
                assert first.is_closed(timeout=3.0)
            finally:
                first.close()
            second = RawClient(port)
            try:
                assert second.read(HK_ID)[1] == [1]
            finally:
                second.close()
        assert failures == {"accept": 0, "start": 0}
        assert "cannot accept a connection" in caplog.text and "cannot start a thread" in caplog.text
        assert sim.refused == 1
    finally:
        monkeypatch.undo()
        sim.stop()  # used to crash joining the thread that never started
    assert not [t for t in threading.enumerate() if t.name.startswith(f"rpl-sim-{port}")]


def test_out_of_file_descriptors_for_real_the_server_keeps_accepting(tmp_path):
    """A simulator process limited to 64 descriptors, 120 clients at once: it refuses
    what it cannot open and serves again once they leave."""
    script = textwrap.dedent("""
        import logging, resource, sys, time
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        from rpl_noqt.sim.server import Simulator
        with Simulator(client_policy="share", max_connections=1000) as sim:
            print(sim.port, flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err_lines: list[str] = []
    reader = threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    try:
        port = int(proc.stdout.readline())
        reader.start()
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(120)]
        # the clients stay until the server has run into its limit (however busy the machine is)
        limit_seen = time.monotonic() + 30
        while not any("cannot accept a connection" in line for line in list(err_lines)):
            assert time.monotonic() < limit_seen, "the server never ran out of descriptors"
            time.sleep(0.05)
        for s in socks:
            s.close()
        c = None
        deadline = time.monotonic() + 10
        while True:  # the descriptors come back as the server sees the closes
            try:
                c = RawClient(port, timeout=2.0)
                assert c.read(HK_ID)[1] == [1]
                break
            except (OSError, ConnectionError):
                if c is not None:
                    c.close()
                    c = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        c.close()
        assert proc.poll() is None
    finally:
        proc.stdin.close()
        proc.stdin = None  # communicate() must not flush it again
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if reader.is_alive():
            reader.join(5)
        proc.stdout.close()
        proc.stderr.close()
    err = "".join(err_lines)
    assert "cannot accept a connection" in err and "Too many open files" in err, err[-2000:]


def test_queue_an_idle_client_is_disconnected_when_another_waits(clients, caplog):
    with Simulator(idle_timeout=0.5) as sim, caplog.at_level(logging.WARNING, LOGGER):
        a = clients(sim)
        assert a.read(HK_ID)[1] == [1]
        time.sleep(1.0)  # idle, but nobody waits: kept
        assert a.read(HK_ID)[1] == [1]
        b = clients(sim)
        t0 = time.monotonic()
        assert b.read(HK_ID)[1] == [1]  # served once a has sat idle for 0.5 s
        assert 0.3 < time.monotonic() - t0 < 3.0
        assert a.is_closed()
        assert "sat idle" in caplog.text and "idle_timeout 0.5" in caplog.text


def test_queue_a_half_sent_request_does_not_hold_the_board(clients):
    with Simulator(idle_timeout=0.5) as sim:
        a = clients(sim)
        assert a.read(HK_ID)[1] == [1]
        a.sock.sendall(a.header("w", 1, 0x40200010)[:5])  # half a header, then nothing
        b = clients(sim)
        assert b.read(HK_ID)[1] == [1]
        assert a.is_closed()


def test_queue_a_client_waits_at_most_queue_timeout(clients, caplog):
    with Simulator(queue_timeout=0.5, idle_timeout=None) as sim, caplog.at_level(logging.WARNING, LOGGER):
        a = clients(sim)
        assert a.read(HK_ID)[1] == [1]
        b = clients(sim)
        t0 = time.monotonic()
        assert b.is_closed(timeout=3.0)
        assert 0.3 < time.monotonic() - t0 < 3.0
        assert "waited" in caplog.text and "queue_timeout 0.5" in caplog.text
        assert a.read(HK_ID)[1] == [1]  # the holder is untouched


def test_queue_a_waiting_client_that_hangs_up_leaves_the_queue_at_once(clients):
    with Simulator(idle_timeout=None, queue_timeout=None) as sim:
        a = clients(sim)
        assert a.read(HK_ID)[1] == [1]
        b = RawClient(sim.port)
        b.sock.sendall(b.header("r", 1, HK_ID))  # a request, then gone
        assert _wait_until(lambda: len(_threads(sim)) == 2)
        b.close()
        assert _wait_until(lambda: len(_threads(sim)) == 1, 2.0)  # its thread ended without a turn
        a.close()
        c = clients(sim)
        assert c.read(HK_ID)[1] == [1]
        assert sim.requests == 2  # b's request cost nothing


def test_a_fault_delay_ends_when_its_client_hangs_up():
    with Simulator(faults=Faults(latency=30.0)) as sim:
        c = RawClient(sim.port)
        c.sock.sendall(c.header("r", 1, HK_ID))  # answered in 30 s...
        assert _wait_until(lambda: len(_threads(sim)) == 1)
        time.sleep(0.1)
        t0 = time.monotonic()
        c.close()  # ...but the client leaves
        assert _wait_until(lambda: not _threads(sim), 3.0)
        assert time.monotonic() - t0 < 3.0
        assert sim.requests == 0


def test_a_client_of_another_process_gets_a_clear_error_within_its_connect_timeout(clients):
    """The default policy: while one client holds the board, rpl-noqt's client in
    another process raises BoardTimeoutError saying why, at its connect timeout,
    and connects at once once the board is free."""
    script = textwrap.dedent("""
        import sys, time
        import rpl_noqt.auto, pyrpl  # imported before the clock starts
        import rpl_noqt
        from rpl_noqt import BoardConnectionError
        t0 = time.monotonic()
        try:
            rpl_noqt.connect("127.0.0.1", int(sys.argv[1]), ssh=False, connect_timeout=1.0).close()
        except BoardConnectionError as exc:
            print(type(exc).__name__, round(time.monotonic() - t0, 2), exc, flush=True)
        else:
            print("connected", round(time.monotonic() - t0, 2), flush=True)
    """)
    with Simulator() as sim:
        holder = clients(sim)
        assert holder.read(HK_ID)[1] == [1]
        env = dict(os.environ, RPL_NOQT_CONNECT_TIMEOUT="1.0")
        busy = subprocess.run([sys.executable, "-c", script, str(sim.port)], capture_output=True, text=True,
                              timeout=120, env=env)
        kind, took, message = busy.stdout.strip().split(" ", 2)
        assert kind == "BoardTimeoutError", busy.stdout + busy.stderr[-2000:]
        assert float(took) < 1.0 + 1.0  # the connect timeout, plus the slack the link tests allow
        assert "did not answer" in message and "another program" in message
        assert _wait_until(lambda: len(_threads(sim)) == 1, 3.0)  # its queued connection is gone
        holder.close()
        free = subprocess.run([sys.executable, "-c", script, str(sim.port)], capture_output=True, text=True,
                              timeout=120, env=env)
        assert free.stdout.startswith("connected"), free.stdout + free.stderr[-2000:]


def test_the_limits_are_settable_from_the_command_line():
    import argparse

    from rpl_noqt.sim import cli as sim_cli

    parser = argparse.ArgumentParser()
    sim_cli.configure_parser(parser)
    args = parser.parse_args([])
    assert (args.max_connections, args.queue_timeout, args.idle_timeout) == (DEFAULT_MAX_CONNECTIONS, 10.0, 5.0)
    args = parser.parse_args(["--max-connections", "8", "--queue-timeout", "0", "--idle-timeout", "2.5"])
    assert (args.max_connections, args.queue_timeout, args.idle_timeout) == (8, None, 2.5)
