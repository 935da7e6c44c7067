"""The README's main job: `rpl-noqt demo` against the embedded simulator."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rpl_noqt.demo import run_demo


@pytest.mark.parametrize(("frequency", "setpoint"), [(1000.0, 0.3), (7300.0, -0.45)])
def test_demo_measures_what_it_set(sim, frequency, setpoint):
    result = run_demo(sim.host, sim.port, frequency=frequency, amplitude=0.4, setpoint=setpoint, seconds=1.0)
    assert result.errors == []
    assert result.scope_fits and result.frequency_error < 1e-3 and result.amplitude_error < 0.02
    assert result.settled == pytest.approx(setpoint, abs=0.01)
    assert result.sampler_reads > 0


def test_demo_cli_exits_zero_and_reports(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rpl_noqt.cli", "demo", "--seconds", "1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "demo OK" in proc.stdout and "ASG -> scope" in proc.stdout


def test_demo_cli_rejects_bad_values(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rpl_noqt.cli", "demo", "--frequency", "0"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode != 0 and "--frequency must be between 1 Hz and 1 MHz, got 0.0" in proc.stderr
