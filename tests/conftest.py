"""Test-suite set-up: PyRPL is imported Qt-free once, in this process.

Import-time behaviour (no Qt at all, real Qt beside us, activation order) is
tested in subprocesses (tests/test_activation.py), so this process can simply
activate first. Strict signal type checks are on for the whole suite, so every
emit PyRPL makes is checked against its declared types.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

import pytest

# PyRPL writes its user dir (config files) at import: keep it out of $HOME
# and out of the checkout.
os.environ.setdefault("PYRPL_USER_DIR", tempfile.mkdtemp(prefix="rpl-noqt-tests-"))
os.environ["RPL_NOQT_STRICT_SIGNALS"] = "1"
# Qt-using tests (real PyQt5 beside the shim, PyMoDAQ) run without a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import rpl_noqt  # noqa: E402

rpl_noqt.activate()

from rpl_noqt.runtime import signals  # noqa: E402

signals.set_strict_checks(True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def pyrpl_module():
    import pyrpl

    return pyrpl


@pytest.fixture
def fake_pyrpl(tmp_path):
    """A PyRPL instance on the dummy board with a config file in tmp_path; cleared after."""
    import pyrpl

    config = str(tmp_path / "cfg.yml")
    p = pyrpl.Pyrpl(config=config, hostname="_FAKE_REDPITAYA_", gui=False)
    try:
        yield p
    finally:
        p._clear()


@pytest.fixture
def fixed_sim():
    """A simulator on a fixed port, so it can be stopped and started again with its state."""
    from helpers import free_port
    from rpl_noqt.sim import Simulator

    sim = Simulator(port=free_port())
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def link(request, fixed_sim):
    """A session on ``fixed_sim`` with the test module's ``IO`` and ``CONNECT`` timeouts; closed after
    (and the close must be quick)."""
    s = rpl_noqt.connect(fixed_sim.host, fixed_sim.port, ssh=False, io_timeout=request.module.IO,
                         connect_timeout=request.module.CONNECT)
    try:
        yield s
    finally:
        t0 = time.monotonic()
        while not s.closed:
            s.close()
        assert time.monotonic() - t0 < 5, "close() took too long"


@pytest.fixture
def no_leaked_threads():
    """Fail if a test leaves threads behind (the loop thread is shared and allowed)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [t for t in threading.enumerate() if t.ident not in before and t.name != "rpl-noqt-loop" and t.is_alive()]
    for t in leaked:
        t.join(5)
    leaked = [t.name for t in leaked if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def run_python(tmp_path):
    """Run code in a fresh interpreter (import-time tests need one); returns CompletedProcess."""
    import subprocess

    def run(code: str, *, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env.pop("DISPLAY", None)
        full_env.pop("RPL_NOQT_STRICT_SIGNALS", None)
        full_env["PYRPL_USER_DIR"] = str(tmp_path / "pyrpl_user_dir")
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                              timeout=timeout, cwd=str(tmp_path))

    return run


@pytest.fixture
def sim():
    """A simulated Red Pitaya on an ephemeral loopback port, stopped after the test."""
    from rpl_noqt.sim import Simulator

    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def session(sim):
    """A direct (no SSH) session on the simulator, closed after the test."""
    s = rpl_noqt.connect(sim.host, sim.port, ssh=False)
    try:
        yield s
    finally:
        while not s.closed:
            s.close()
