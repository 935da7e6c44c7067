"""Unmodified PyRPL, headless on the dummy board, driven from several threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import yaml

from rpl_noqt import events


def _in_thread(func, timeout=60):
    box: dict = {}

    def run():
        try:
            box["value"] = func()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, name="worker")
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "worker did not finish"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_construct_in_a_worker_thread_and_use_from_main(pyrpl_module, tmp_path):
    p = _in_thread(lambda: pyrpl_module.Pyrpl(config=str(tmp_path / "w.yml"), hostname="_FAKE_REDPITAYA_", gui=False))
    try:
        p.rp.asg1.amplitude = 0.25
        assert p.rp.asg1.amplitude == pytest.approx(0.25, abs=1e-3)
        assert p.rp.scope.single(timeout=10).shape == (2, 16384)
    finally:
        _in_thread(p._clear)  # closed from yet another thread


def test_attributes_set_and_read_from_other_threads(fake_pyrpl):
    rp = fake_pyrpl.rp
    cases = [
        (rp.asg0, "frequency", 12345.0, 0.1),
        (rp.asg1, "offset", -0.3, 1e-3),
        (rp.pid0, "setpoint", 0.2, 1e-3),
        (rp.pid0, "p", 1.5, 1e-3),
        (rp.iq0, "frequency", 2.5e5, 0.1),
        (rp.scope, "duration", 0.01, 0.01),
    ]
    results = {}
    threads = []
    for module, name, value, _tol in cases:
        def work(module=module, name=name, value=value):
            setattr(module, name, value)
            results[(module.name, name)] = getattr(module, name)
        threads.append(threading.Thread(target=work))
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for module, name, value, tol in cases:
        assert results[(module.name, name)] == pytest.approx(value, rel=tol, abs=tol), (module.name, name)


def test_scope_single_and_single_async_from_a_worker(fake_pyrpl):
    scope = fake_pyrpl.rp.scope
    scope.duration = 0.001
    from pyrpl.async_utils import wait

    def acquire():
        first = scope.single(timeout=10)
        second = wait(scope.single_async(), timeout=10)
        return first, second

    first, second = _in_thread(acquire)
    assert first.shape == second.shape == (2, 16384)
    assert np.isfinite(second).all()


def test_continuous_then_stop(fake_pyrpl):
    scope = fake_pyrpl.rp.scope
    scope.duration = 0.001
    curves = []
    scope._signal_launcher.display_curve.connect(lambda c: curves.append(c))
    scope.continuous()
    assert _wait_until(lambda: len(curves) >= 3, 20), "continuous acquisition produced no curves"
    _in_thread(scope.stop)
    assert scope.running_state == "stopped"
    count = len(curves)
    time.sleep(0.3)
    assert len(curves) <= count + 1


def test_network_and_spectrum_analyzers_return(fake_pyrpl):
    na = fake_pyrpl.networkanalyzer
    # The dummy board reads 1 from every filter register, so rbw collapses to
    # ~1 Hz and each point takes ~1 s (upstream too); keep the sweep short.
    na.setup(start_freq=1e3, stop_freq=1e4, points=3, rbw=1000, avg_per_point=1, trace_average=1,
             input="in1", output_direct="off", acbandwidth=0)
    data = _in_thread(lambda: na.single(timeout=60), timeout=90)
    assert len(data) == 3
    sa = fake_pyrpl.spectrumanalyzer
    spectrum = _in_thread(lambda: sa.single(timeout=30))
    assert np.asarray(spectrum).size > 0


def test_lockbox_loads(fake_pyrpl):
    lockbox = fake_pyrpl.lockbox
    assert lockbox.classname
    lockbox.unlock()
    assert not lockbox.is_locked(loglevel=0) if hasattr(lockbox, "is_locked") else True


def test_pid_integrator_timer_runs(fake_pyrpl):
    ticks = []
    launcher = fake_pyrpl.rp.pid1._signal_launcher
    launcher.update_ival.connect(lambda: ticks.append(threading.current_thread().name))
    assert launcher.timer_ival.isActive()
    assert _wait_until(lambda: len(ticks) >= 1, 3.0), "PID ival timer never fired"
    assert ticks[0] == "rpl-noqt-loop"


def test_attribute_changes_are_broadcast_to_observers(fake_pyrpl):
    seen = []

    def observer(module, name, value):
        seen.append((module.name, name, value))

    events.attribute_changed.connect(observer, sender=fake_pyrpl.rp.asg0)
    try:
        fake_pyrpl.rp.asg0.offset = 0.125
        fake_pyrpl.rp.asg1.offset = 0.25  # other sender: filtered out
    finally:
        events.attribute_changed.disconnect(observer)
    assert ("asg0", "offset", pytest.approx(0.125, abs=1e-3)) in seen
    assert all(m == "asg0" for m, _, _ in seen)


def _config_value(path, *keys):
    with open(path) as f:
        data = yaml.safe_load(f)
    for key in keys:
        data = (data or {}).get(key)
    return data


def test_delayed_config_save_fires_from_worker_writes(pyrpl_module, tmp_path):
    p = pyrpl_module.Pyrpl(config=f"save-{tmp_path.name}", hostname="_FAKE_REDPITAYA_", gui=False)
    config = p.c._filename  # PyRPL keeps configs in $PYRPL_USER_DIR/config by name
    try:
        def write():
            for f in (1000.0, 2000.0, 3000.0):
                p.rp.asg0.frequency = f

        _in_thread(write)
        # the save timer (3 s dead time upstream) fires on the background loop
        assert _wait_until(lambda: (_config_value(config, "asg0", "frequency") or 0) > 2999, 8), \
            "delayed save never reached the file"
    finally:
        p._clear()


def test_close_flushes_pending_config(pyrpl_module, tmp_path):
    p = pyrpl_module.Pyrpl(config=f"close-{tmp_path.name}", hostname="_FAKE_REDPITAYA_", gui=False)
    config = p.c._filename
    p.rp.asg0.frequency = 1111.0
    p.rp.asg0.frequency = 4321.0  # within the dead time: a save is pending
    p._clear()
    assert _config_value(config, "asg0", "frequency") == pytest.approx(4321.0, abs=0.1)


def test_interpreter_exit_flushes_pending_config(run_python, tmp_path):
    proc = run_python('''
import rpl_noqt.auto, pyrpl, threading
p = pyrpl.Pyrpl(config="exit", hostname="_FAKE_REDPITAYA_", gui=False)
print(p.c._filename)
def write():
    p.rp.asg0.frequency = 1111.0
    p.rp.asg0.frequency = 7777.0
t = threading.Thread(target=write); t.start(); t.join()
assert p.c._savetimer.isActive(), "expected a pending delayed save"
# exit without _clear(): the atexit handler must flush and stop the loop thread
''')
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = proc.stdout.strip().splitlines()[0]
    assert _config_value(config, "asg0", "frequency") == pytest.approx(7777.0, abs=0.1)


def test_exit_does_not_hang_when_a_stuck_thread_holds_the_board(run_python):
    proc = run_python('''
import threading, time
import rpl_noqt.auto, pyrpl
from rpl_noqt.runtime.threadsafe import board_lock
import rpl_noqt.runtime.activation as act
act.FLUSH_LOCK_TIMEOUT_S = 0.5
p = pyrpl.Pyrpl(config="stuck", hostname="_FAKE_REDPITAYA_", gui=False)
print(p.c._filename)
p.rp.asg0.frequency = 1111.0
p.rp.asg0.frequency = 2222.0  # pending delayed save
held = threading.Event()
def stuck():
    with board_lock(p.rp):
        held.set()
        time.sleep(1000)
threading.Thread(target=stuck, daemon=True).start()
held.wait(5)
''', timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "writing" in proc.stderr and "without it" in proc.stderr
    config = proc.stdout.strip().splitlines()[0]
    assert _config_value(config, "asg0", "frequency") == pytest.approx(2222.0, abs=0.1)
