"""rpl_noqt.connect(): one session per board, its lock, no thread affinity."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import rpl_noqt
from rpl_noqt.runtime import locks
from rpl_noqt.session import SessionConfigError, open_sessions
from rpl_noqt.runtime.threadsafe import BoardClosedError


def _run(func, name="worker", timeout=60):
    box = {}

    def target():
        try:
            box["value"] = func()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name=name)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{name} did not finish"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_same_board_same_session_and_last_close_disconnects(sim):
    a = rpl_noqt.connect(sim.host, sim.port, ssh=False)
    b = rpl_noqt.connect("localhost", sim.port)  # same board by another name
    assert a is b and a.users == 2 and a in open_sessions()
    asg = a.rp.asg0
    a.close()
    assert not a.closed
    asg.frequency = 2000.0
    b.close()
    assert a.closed and a not in open_sessions()
    with pytest.raises(BoardClosedError, match=r"session of board 127\.0\.0\.1:\d+ was closed"):
        asg.frequency = 3000.0
    with pytest.raises(RuntimeError, match="is closed"):
        a.rp
    a.close()  # closing again does nothing


def test_context_manager_and_reopen(sim):
    with rpl_noqt.connect(sim.host, sim.port, ssh=False) as s:
        s.rp.asg1.offset = 0.1
    assert s.closed
    with rpl_noqt.connect(sim.host, sim.port, ssh=False) as again:
        assert again is not s
        assert again.rp.asg1.offset == pytest.approx(0.1, abs=1e-3)  # the board kept it


def test_conflicting_settings_name_both(sim):
    with rpl_noqt.connect(sim.host, sim.port, ssh=False) as s:
        with pytest.raises(SessionConfigError, match=r"config=None \(open\) vs config='/\S+/config/other\.yml' \(asked\)"):
            rpl_noqt.connect(sim.host, sim.port, config="other")
        with pytest.raises(SessionConfigError, match=r"strict=False \(open\) vs strict=True \(asked\)"):
            rpl_noqt.connect(sim.host, sim.port, strict=True)
        with pytest.raises(SessionConfigError, match=r"io_timeout=2.0 \(open\) vs io_timeout=5 \(asked\)"):
            rpl_noqt.connect(sim.host, sim.port, io_timeout=5)
        with pytest.raises(SessionConfigError, match=r"ssh=False \(open\) vs ssh=True \(asked\)"):
            rpl_noqt.connect(sim.host, sim.port, ssh=True)
        with pytest.raises(SessionConfigError, match=r"user not set \(open\) vs user='admin'"):
            rpl_noqt.connect(sim.host, sim.port, user="admin")
        assert s.users == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hostname": "", "port": 2222}, "hostname must be a non-empty string, got ''"),
        ({"hostname": "127.0.0.1", "port": 0}, "port must be an integer from 1 to 65535, got 0"),
        ({"hostname": "127.0.0.1", "port": 70000}, "got 70000"),
        ({"hostname": "127.0.0.1", "port": "2222"}, "got '2222'"),
        ({"hostname": "127.0.0.1", "ssh": "no"}, "ssh must be True or False, got 'no'"),
        ({"hostname": "127.0.0.1", "gui": True}, r"connect\(\) sets \['gui'\] itself"),
        ({"hostname": "127.0.0.1", "config": 3}, r"config must be a config name \(str\), a pathlib.Path for a file elsewhere, or None; got 3"),
    ],
)
def test_bad_input_is_refused_before_anything_connects(kwargs, message):
    with pytest.raises(SessionConfigError, match=message):
        rpl_noqt.connect(**kwargs)
    assert open_sessions() == []


def test_two_boards_are_independent(sim):
    from rpl_noqt.sim import Simulator

    with Simulator() as other:
        with rpl_noqt.connect(sim.host, sim.port, ssh=False) as a, \
                rpl_noqt.connect(other.host, other.port, ssh=False) as b:
            assert a is not b and a.lock is not b.lock
            a.rp.asg0.frequency, b.rp.asg0.frequency = 1000.0, 5000.0
            assert a.rp.asg0.frequency == pytest.approx(1000.0, abs=0.1)
            assert b.rp.asg0.frequency == pytest.approx(5000.0, abs=0.1)
            # upstream shares one parameters dict between boards; not here
            assert a.rp.parameters is not b.rp.parameters
            assert a.rp.parameters["port"] == sim.port and b.rp.parameters["port"] == other.port


def test_no_thread_affinity_construct_use_close_in_different_threads(sim):
    s = _run(lambda: rpl_noqt.connect(sim.host, sim.port, ssh=False), name="constructor")
    _run(lambda: setattr(s.rp.pid1, "setpoint", 0.05), name="user")
    assert _run(lambda: s.rp.pid1.setpoint, name="reader") == pytest.approx(0.05, abs=1e-3)
    assert _run(lambda: s.rp.scope.single(timeout=10).shape, name="acquirer") == (2, 16384)
    _run(s.close, name="closer")
    assert s.closed


def test_default_config_is_in_memory_and_never_prompts(session):
    assert session.pyrpl.c._filename is None


def test_lock_makes_a_transaction(session):
    rp = session.rp
    inside = threading.Event()
    release = threading.Event()
    writer_done = threading.Event()

    def transaction():
        with session.lock:
            rp.asg0.offset = 0.0
            inside.set()
            release.wait(10)
            rp.asg0.offset = 0.2  # nobody may interleave between the two writes

    def writer():
        rp.asg0.offset = -0.3
        writer_done.set()

    t = threading.Thread(target=transaction)
    t.start()
    assert inside.wait(10)
    w = threading.Thread(target=writer)
    w.start()
    assert not writer_done.wait(0.3), "a write got in while the transaction held the board"
    release.set()
    t.join(10)
    w.join(10)
    assert writer_done.is_set()
    assert rp.asg0.offset == pytest.approx(-0.3, abs=1e-3)  # the writer came after the transaction


def test_waiting_acquisition_does_not_hold_the_board(session):
    rp = session.rp
    rp.scope.setup(duration=0.5, trigger_source="immediately")
    order = []

    def acquire():
        rp.scope.single(timeout=20)
        order.append("single done")

    def write_many():
        for i in range(20):
            rp.asg1.frequency = 1000.0 + i
        order.append("writes done")

    a = threading.Thread(target=acquire)
    a.start()
    time.sleep(0.05)  # let the acquisition start waiting
    w = threading.Thread(target=write_many)
    w.start()
    a.join(30)
    w.join(30)
    assert order == ["writes done", "single done"]


def test_concurrent_single_calls_each_get_a_curve(session):
    scope = session.rp.scope
    scope.setup(duration=0.01, trigger_source="immediately")
    results, errors = [], []

    def grab():
        try:
            results.append(scope.single(timeout=20).shape)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and results == [(2, 16384)] * 4


def test_watchdog_reports_long_holder_with_stack(session, caplog):
    locks.set_watchdog(0.2)
    try:
        with caplog.at_level(logging.WARNING, logger="rpl_noqt.runtime.locks"):
            def hold_the_board_for_long():
                with session.lock:
                    time.sleep(0.8)

            _run(hold_the_board_for_long, name="slow-holder")
    finally:
        locks.set_watchdog(None)
    messages = [r.getMessage() for r in caplog.records if "held for" in r.getMessage()]
    assert messages, "watchdog did not report"
    assert "slow-holder" in messages[0] and "hold_the_board_for_long" in messages[0]
    with pytest.raises(ValueError, match="positive number of seconds or None, got -1"):
        locks.set_watchdog(-1)


def test_module_classes_defined_later_are_locked_too(session):
    from pyrpl.modules import Module

    class UserModule(Module):
        def do_something(self):
            return self.pyrpl  # needs a parent

    assert getattr(UserModule.do_something, "_rpl_noqt_locked", False)
    assert getattr(type(session.rp.scope).single, "_rpl_noqt_locked", False)


def test_boards_listed_in_rpl_noqt_direct_are_reached_directly(sim, monkeypatch):
    # plain PyRPL code that cannot pass rpl_noqt_direct (pyrpl's own test
    # suite asks for reloadfpga=True): no SSH, no FPGA upload, no server install
    import pyrpl

    from rpl_noqt.runtime import threadsafe

    monkeypatch.setenv("RPL_NOQT_DIRECT", f"localhost:1, {sim.host}:{sim.port}")
    assert threadsafe.direct_boards_from_env() == {("localhost", 1), (sim.host, sim.port)}
    p = pyrpl.Pyrpl(config="", hostname=sim.host, port=sim.port, gui=False, reloadfpga=True, reloadserver=True)
    try:
        assert p.rp.os_version.startswith("unknown (direct")
        p.rp.hk.led = 5
        assert p.rp.hk.led == 5
    finally:
        p._clear()  # also ends the client
    monkeypatch.setenv("RPL_NOQT_DIRECT", "no-port")
    with pytest.raises(ValueError, match="RPL_NOQT_DIRECT"):
        threadsafe.direct_boards_from_env()


def _connect_in_thread(sim, name):
    box = {}

    def target():
        try:
            box["session"] = rpl_noqt.connect(sim.host, sim.port, ssh=False)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t, box


def _wait_until_connecting(sim, timeout=30.0):
    """Until a client has connected to the board (its RedPitaya is being constructed)."""
    deadline = time.monotonic() + timeout
    while sim.connections < 1:
        assert time.monotonic() < deadline, "the connect never reached the board"
        time.sleep(0.01)


def test_a_slow_board_does_not_hold_up_the_others(sim):
    from rpl_noqt.sim import Faults, Simulator

    with Simulator(faults=Faults(latency=2.0)) as slow:  # answers each request after 2 s
        connecting, box = _connect_in_thread(slow, "slow-connect")
        try:
            _wait_until_connecting(slow)
            # connect, use, join, list and close board a before the slow board answered once
            a = _run(lambda: rpl_noqt.connect(sim.host, sim.port, ssh=False), name="connector", timeout=20)
            a.rp.asg0.frequency = 1234.0
            joined = _run(lambda: rpl_noqt.connect(sim.host, sim.port, ssh=False), name="joiner", timeout=10)
            assert joined is a and a.users == 2 and a in open_sessions()
            assert a.rp.asg0.frequency == pytest.approx(1234.0, abs=0.1)
            assert all(s.port != slow.port for s in open_sessions())  # not listed before it is up
            assert a.rp.parameters["port"] == sim.port
            _run(joined.close, name="closer", timeout=10)
            _run(a.close, name="closer", timeout=10)
            assert a.closed
            assert slow.requests == 0, "board a waited for the slow board's answers"
        finally:
            slow.faults.latency = 0.0
            connecting.join(60)
        assert not connecting.is_alive() and "error" not in box, box.get("error")
        with box["session"] as b:
            assert b in open_sessions() and b.users == 1
            assert b.rp.parameters["port"] == slow.port  # its own parameters, not board a's


def test_threads_asking_for_a_board_being_connected_share_that_connect(sim):
    from rpl_noqt.sim import Faults, Simulator

    with Simulator(faults=Faults(latency=0.005)) as slow:
        threads = [_connect_in_thread(slow, f"connect-{k}") for k in range(4)]
        for t, _ in threads:
            t.join(90)
        assert not any(t.is_alive() for t, _ in threads)
        sessions = [box.get("session") for _, box in threads]
        assert None not in sessions, [box.get("error") for _, box in threads]
        assert all(s is sessions[0] for s in sessions) and sessions[0].users == 4
        assert slow.connections == 1  # one PyRPL, one socket
        for s in sessions:
            s.close()
        assert sessions[0].closed


def test_a_failed_connect_is_shared_with_the_threads_that_waited_for_it(sim):
    from rpl_noqt.sim import Faults, Simulator

    with Simulator(faults=Faults(latency=30.0)) as doomed:  # its first answer never comes
        first, first_box = _connect_in_thread(doomed, "first")
        _wait_until_connecting(doomed)
        second, second_box = _connect_in_thread(doomed, "second")
        time.sleep(0.2)  # let it find the connect under way
        doomed.stop()  # the board goes away mid-connect
        first.join(90)
        second.join(90)
    assert not first.is_alive() and not second.is_alive()
    assert "error" in first_box, "the connect survived a dropped connection"
    err = second_box.get("error")
    assert isinstance(err, ConnectionError) and err.__cause__ is first_box["error"], err
    assert f":{doomed.port}" in str(err) and "'first'" in str(err)
    assert all(s.port != doomed.port for s in open_sessions())
