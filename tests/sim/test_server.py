"""Client policies, fault injection and restart."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from sim_rawclient import RawClient

from rpl_noqt.sim import Faults, Simulator

HK_ID = 0x40000000
ASG0_FREQ = 0x40200010


@pytest.fixture
def make_sim():
    sims: list[Simulator] = []
    clients: list[RawClient] = []

    def make(**kwargs) -> tuple[Simulator, callable]:
        s = Simulator(**kwargs).start()
        sims.append(s)

        def connect(timeout: float = 2.0) -> RawClient:
            c = RawClient(s.port, timeout)
            clients.append(c)
            return c

        return s, connect

    yield make
    for c in clients:
        c.close()
    for s in sims:
        s.stop()


def _answers(c: RawClient, timeout: float = 0.3) -> bool:
    """True if the server answers a read within ``timeout`` (False: no answer yet)."""
    c.sock.settimeout(timeout)
    c.sock.sendall(c.header("r", 1, HK_ID))
    try:
        data = c.sock.recv(12)
    except TimeoutError:
        return False
    return len(data) > 0


def test_queue_policy_serves_second_client_after_first_leaves(make_sim):
    sim, connect = make_sim(client_policy="queue")
    a = connect()
    assert a.read(HK_ID)[1] == [1]
    b = connect()
    assert not _answers(b)  # connected, waiting like in the backlog
    a.close()
    b.sock.settimeout(2.0)
    rest = b.recv_exactly(12)  # the queued request is answered now
    assert rest[:8] == b.header("r", 1, HK_ID)


def test_reject_policy_closes_second_client(make_sim):
    sim, connect = make_sim(client_policy="reject")
    a = connect()
    assert a.read(HK_ID)[1] == [1]
    b = connect()
    assert b.is_closed()
    assert a.read(HK_ID)[1] == [1]  # first client unaffected


def test_kick_policy_replaces_first_client(make_sim):
    sim, connect = make_sim(client_policy="kick")
    a = connect()
    assert a.read(HK_ID)[1] == [1]
    b = connect()
    assert b.read(HK_ID)[1] == [1]
    assert a.is_closed()


def test_share_policy_serves_both(make_sim):
    sim, connect = make_sim(client_policy="share")
    a, b = connect(), connect()
    a.write(ASG0_FREQ, [77])
    assert b.read(ASG0_FREQ)[1] == [77]
    assert a.read(ASG0_FREQ)[1] == [77]


def test_exit_policy_behaves_like_monitor_server_and_restart_revives_it(make_sim):
    sim, connect = make_sim(client_policy="exit")
    a = connect()
    a.write(ASG0_FREQ, [99])
    b = connect()  # waits in the backlog...
    a.close()
    assert b.is_closed()  # ...and is dropped when the server "exits"
    with pytest.raises(OSError):
        RawClient(sim.port, timeout=1.0).read(HK_ID)
    sim.restart()
    c = connect()
    assert c.read(ASG0_FREQ)[1] == [99]  # the FPGA kept its state


def test_latency_fault_delays_replies(sim, raw):
    c = raw()
    sim.faults.latency = 0.5
    c.sock.settimeout(0.1)
    c.sock.sendall(c.header("r", 1, HK_ID))
    with pytest.raises(TimeoutError):
        c.sock.recv(12)
    c.sock.settimeout(5.0)
    assert c.recv_exactly(12)[:8] == c.header("r", 1, HK_ID)
    sim.faults.latency = 0.0
    assert c.read(HK_ID)[1] == [1]


def test_drop_after_n_requests(sim, raw):
    c = raw()
    sim.faults.drop_after = 3
    assert c.read(HK_ID)[1] == [1]
    assert c.write(ASG0_FREQ, [5]) == c.header("w", 1, ASG0_FREQ)
    c.sock.sendall(c.header("w", 1, ASG0_FREQ) + (6).to_bytes(4, "little"))
    assert c.is_closed()
    assert sim.faults.drop_after is None  # one-shot
    c2 = raw()
    assert c2.read(ASG0_FREQ)[1] == [5]  # the dropped write was not applied


def test_garbled_header_is_detected_by_pyrpl_client(sim, client, caplog):
    sim.faults.garble = 1
    connections = sim.connections
    with caplog.at_level(logging.WARNING, logger="rpl_noqt.board.client"):
        # the client sees the wrong echo, drops the out-of-step stream, reconnects and retries
        value = client.reads(HK_ID, 1)
    assert "does not echo the request" in caplog.text
    assert value is not None and list(value) == [1]
    assert sim.connections == connections + 1


def test_garbled_header_on_raw_socket(sim, raw):
    c = raw()
    sim.faults.garble = 2
    echo, _ = c.read(HK_ID)
    assert echo != c.header("r", 1, HK_ID) and echo[1:] == c.header("r", 1, HK_ID)[1:]
    assert c.write(ASG0_FREQ, [3]) != c.header("w", 1, ASG0_FREQ)
    assert c.read(HK_ID)[0] == c.header("r", 1, HK_ID)


def test_restart_drops_clients_and_keeps_state(sim, raw):
    c = raw()
    c.write(ASG0_FREQ, [4242])
    port = sim.port
    sim.restart()
    assert c.is_closed()
    assert sim.port == port
    assert raw().read(ASG0_FREQ)[1] == [4242]


def test_faults_passed_at_construction():
    faults = Faults(drop_after=1)
    with Simulator(faults=faults) as s:
        assert s.faults is faults
        c = RawClient(s.port)
        try:
            c.sock.sendall(c.header("r", 1, HK_ID))
            assert c.is_closed()
        finally:
            c.close()


def test_stop_closes_connected_clients():
    s = Simulator().start()
    c = RawClient(s.port)
    try:
        assert c.read(HK_ID)[1] == [1]
        s.stop()
        assert c.is_closed()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", s.port), timeout=1.0).close()
    finally:
        c.close()
        s.stop()


@pytest.mark.parametrize("how", ["restart", "stop"])
def test_restart_and_stop_do_not_wait_for_a_delayed_reply(how):
    s = Simulator(faults=Faults(latency=30.0)).start()
    c = RawClient(s.port)
    try:
        c.sock.sendall(c.header("r", 1, HK_ID))  # its reply is 30 s away
        deadline = time.monotonic() + 5
        while s.connections < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the request is in its delay now
        t0 = time.monotonic()
        getattr(s, how)()
        assert time.monotonic() - t0 < 5.0
        assert c.is_closed()
        assert s.requests == 0  # the delayed request was never answered
        assert s.running is (how == "restart")
    finally:
        c.close()
        s.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith(f"rpl-sim-{s.port}")]
