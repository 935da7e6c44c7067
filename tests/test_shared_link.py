"""A second RedPitaya/Pyrpl for a board this process holds shares its connection and its lock.

The monitor server serves one client at a time, so a second socket from the
same process would wait (or take the board from the first). PyRPL's own
examples build a second ``Pyrpl``/``RedPitaya`` for the same board; under
rpl-noqt it joins the open link: no second connection, one board lock, both
objects work, and the board's connection closes with its last user.
"""

from __future__ import annotations

import threading
import time

import pytest

import rpl_noqt
from rpl_noqt.runtime.threadsafe import board_lock


@pytest.fixture
def direct(sim, monkeypatch):
    monkeypatch.setenv("RPL_NOQT_DIRECT", f"{sim.host}:{sim.port}")
    return sim


def _pyrpl(sim):
    import pyrpl

    return pyrpl.Pyrpl(config="", hostname=sim.host, port=sim.port, gui=False)


def test_a_second_pyrpl_joins_the_session_connection(direct, session):
    sim = direct
    assert sim.connections == 1
    p2 = _pyrpl(sim)
    try:
        assert sim.connections == 1  # no second socket
        assert board_lock(p2.rp) is session.lock  # one board lock
        p2.rp.asg0.frequency = 3210.0
        assert session.rp.asg0.frequency == pytest.approx(3210.0, abs=0.1)
        session.rp.pid1.setpoint = -0.3
        assert p2.rp.pid1.setpoint == pytest.approx(-0.3, abs=1e-3)
        assert p2.rp.client.link is session.rp.client.link and p2.rp.client.link.users == 2
        session.close()  # the first user leaves: the second keeps working on the same socket
        p2.rp.asg1.offset = 0.2
        assert p2.rp.asg1.offset == pytest.approx(0.2, abs=1e-3)
        assert sim.connections == 1
    finally:
        p2._clear()
    # the last user closed the link: a new connect dials the board again
    with rpl_noqt.connect(sim.host, sim.port, ssh=False) as again:
        assert again.rp.asg1.offset == pytest.approx(0.2, abs=1e-3)
        assert sim.connections == 2


def test_two_redpitayas_from_two_threads_do_not_desync(direct):
    from pyrpl.redpitaya import RedPitaya

    sim = direct
    a = RedPitaya(hostname=sim.host, port=sim.port)
    b = RedPitaya(hostname=sim.host, port=sim.port)
    errors: list[BaseException] = []
    try:
        assert sim.connections == 1 and board_lock(a) is board_lock(b)
        stop = time.monotonic() + 2.0

        def drive(rp, module, base):
            try:
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    value = base + i
                    getattr(rp, module).frequency = value
                    got = getattr(rp, module).frequency
                    assert got == pytest.approx(value, abs=0.1), (module, got, value)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(a, "asg0", 1000.0)),
                   threading.Thread(target=drive, args=(b, "asg1", 5000.0))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
    finally:
        a.end_all()
        b.end_all()
    assert a.client is None and b.client is None


def test_the_last_user_closes_the_socket(direct):
    from pyrpl.redpitaya import RedPitaya

    sim = direct
    a = RedPitaya(hostname=sim.host, port=sim.port)
    b = RedPitaya(hostname=sim.host, port=sim.port)
    link = a.client.link
    a.end_all()
    assert link.socket is not None and link.users == 1
    b.end_all()
    assert link.socket is None and link.users == 0
