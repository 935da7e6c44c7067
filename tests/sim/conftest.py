"""Fixtures for the simulator tests: a running simulator, PyRPL wired to it."""

from __future__ import annotations

import contextlib
import os

import pytest
from sim_rawclient import RawClient

from rpl_noqt.sim import Simulator


def _import_pyrpl():
    """Import pyrpl Qt-free via rpl_noqt.activate() when available, else with real Qt offscreen."""
    import rpl_noqt

    if hasattr(rpl_noqt, "activate"):
        rpl_noqt.activate()
    else:  # pragma: no cover - before the shim existed
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyrpl

    return pyrpl


@pytest.fixture(scope="session")
def pyrpl_lib():
    return _import_pyrpl()


@pytest.fixture
def sim():
    with Simulator(seed=1234) as simulator:
        yield simulator


@pytest.fixture
def client(sim, pyrpl_lib):
    """The client PyRPL uses (rpl-noqt's BoardClient in place of MonitorClient) on the simulator."""
    from pyrpl.redpitaya_client import MonitorClient

    c = MonitorClient("127.0.0.1", sim.port, restartserver=None)
    yield c
    c.close()


@contextlib.contextmanager
def pyrpl_on(sim: Simulator, pyrpl):
    """A ``pyrpl.Pyrpl`` (in-memory config, no GUI) whose client talks to ``sim``."""
    from pyrpl import redpitaya_client

    original = redpitaya_client.DummyClient
    redpitaya_client.DummyClient = lambda: redpitaya_client.MonitorClient("127.0.0.1", sim.port, restartserver=None)
    p = None
    try:
        p = pyrpl.Pyrpl(config="", hostname="_FAKE_REDPITAYA_", gui=False)
        yield p
    finally:
        redpitaya_client.DummyClient = original
        if p is not None:
            p._clear()


@pytest.fixture
def p(sim, pyrpl_lib):
    with pyrpl_on(sim, pyrpl_lib) as instance:
        yield instance


@pytest.fixture
def raw(sim):
    clients: list[RawClient] = []

    def connect(port: int | None = None, timeout: float = 2.0) -> RawClient:
        c = RawClient(sim.port if port is None else port, timeout)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()
