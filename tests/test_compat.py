"""``rpl-noqt compat``: the runner on a made-up suite, then PyRPL's own suite (fast part).

The last test is the CI guard: every test of the installed pyrpl's suite that
``rpl_noqt/compat/expected.json`` expects to pass must pass under the shim on
the simulator (the files marked slow there are left out; ``rpl-noqt compat``
runs them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rpl_noqt.compat import expected as expected_mod
from rpl_noqt.compat.report import format_table, junit_xml
from rpl_noqt.compat.results import FileResult, results_from_log
from rpl_noqt.compat.runner import RunOptions, discover, pyrpl_test_dir, run_suite

# -- results from the plugin's log ------------------------------------------------------------


def _write_log(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n{\"event\": \"repo", encoding="utf-8")


def test_log_of_a_killed_file_marks_the_running_and_unstarted_tests_timed_out(tmp_path):
    log = tmp_path / "log.jsonl"
    _write_log(log, [
        {"event": "collected", "items": ["f.py::a", "f.py::b", "f.py::c", "f.py::d"]},
        {"event": "report", "nodeid": "f.py::a", "when": "setup", "outcome": "passed"},
        {"event": "report", "nodeid": "f.py::a", "when": "call", "outcome": "passed"},
        {"event": "report", "nodeid": "f.py::a", "when": "teardown", "outcome": "passed"},
        {"event": "report", "nodeid": "f.py::b", "when": "setup", "outcome": "skipped",
         "message": "rpl-noqt: not applicable (no Qt): PyRPL requested the GUI element ScopeWidget"},
        {"event": "report", "nodeid": "f.py::b", "when": "teardown", "outcome": "passed"},
        {"event": "report", "nodeid": "f.py::c", "when": "setup", "outcome": "passed"},
    ])  # ... and a line cut short by the kill
    r = results_from_log(str(log), FileResult("f.py"), killed=True)
    assert [(t.nodeid, t.outcome) for t in r.tests] == [
        ("f.py::a", "passed"), ("f.py::b", "not applicable"), ("f.py::c", "timed out"), ("f.py::d", "timed out")]
    assert "GUI element ScopeWidget" in r.tests[1].message
    assert r.counts() == {"passed": 1, "failed": 0, "skipped": 0, "not applicable": 1, "timed out": 2}


def test_a_failing_subtest_fails_its_test_and_is_named(tmp_path):
    log = tmp_path / "log.jsonl"
    _write_log(log, [
        {"event": "report", "nodeid": "f.py::t", "when": "setup", "outcome": "passed"},
        {"event": "report", "nodeid": "f.py::t", "when": "call", "outcome": "passed", "subtest": "x"},
        {"event": "report", "nodeid": "f.py::t", "when": "call", "outcome": "failed", "subtest": "{'reg': 'y'}",
         "message": "assert 1 == 2"},
        {"event": "report", "nodeid": "f.py::t", "when": "call", "outcome": "passed"},
        {"event": "report", "nodeid": "f.py::t", "when": "teardown", "outcome": "passed"},
    ])
    (t,) = results_from_log(str(log), FileResult("f.py"), killed=False).tests
    assert (t.outcome, t.failed_subtests, t.passed_subtests, t.message) == ("failed", ["{'reg': 'y'}"], 1, "assert 1 == 2")


# -- the runner on a made-up suite ----------------------------------------------------------------

FAKE_SUITE = {
    "test_ok.py": """
        def test_one():
            assert 1 + 1 == 2

        def test_skipped():
            import pytest
            pytest.skip("not today")
    """,
    "test_gui.py": """
        import pytest
        from rpl_noqt.errors import GuiUnavailableError

        def test_widget():
            raise GuiUnavailableError("PyRPL requested the GUI element ScopeWidget. hint")

        def test_other_error_stays_a_failure():
            raise RuntimeError("not a GUI request")
    """,
    "sub/test_hang.py": """
        import time

        def test_hangs():
            time.sleep(60)

        def test_after_the_hang_still_runs():
            pass
    """,
    "test_stuck.py": """
        import signal, time

        def test_first():
            pass

        def test_stuck_beyond_pytest_timeout():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # pytest-timeout cannot fire
            time.sleep(60)

        def test_never_reached():
            pass
    """,
}


@pytest.fixture
def fake_suite(tmp_path):
    suite = tmp_path / "suite"
    for rel, text in FAKE_SUITE.items():
        (suite / rel).parent.mkdir(parents=True, exist_ok=True)
        (suite / rel).write_text(textwrap.dedent(text), encoding="utf-8")
    return suite


@pytest.mark.timeout(120)
def test_runner_classifies_and_bounds_every_file(fake_suite, tmp_path):
    files = discover(fake_suite)
    assert files == ["sub/test_hang.py", "test_gui.py", "test_ok.py", "test_stuck.py"]
    options = RunOptions(test_timeout=2, file_timeout=8, jobs=2, out_dir=str(tmp_path / "out"))
    t0 = time.monotonic()
    results = {r.file: r for r in run_suite(files, options, test_dir=fake_suite)}
    elapsed = time.monotonic() - t0
    outcome = {t.nodeid: t.outcome for r in results.values() for t in r.tests}
    assert outcome == {
        "test_ok.py::test_one": "passed",
        "test_ok.py::test_skipped": "skipped",
        "test_gui.py::test_widget": "not applicable",
        "test_gui.py::test_other_error_stays_a_failure": "failed",
        "sub/test_hang.py::test_hangs": "timed out",
        "sub/test_hang.py::test_after_the_hang_still_runs": "passed",
        "test_stuck.py::test_first": "passed",
        "test_stuck.py::test_stuck_beyond_pytest_timeout": "timed out",
        "test_stuck.py::test_never_reached": "timed out",
    }
    assert results["test_stuck.py"].status == "timed out" and "killed" in results["test_stuck.py"].note
    assert results["sub/test_hang.py"].status == "failed"
    assert results["test_ok.py"].status == "ok" and results["test_ok.py"].qt_bindings_loaded == []
    assert elapsed < 60
    gui = next(t for t in results["test_gui.py"].tests if t.nodeid.endswith("test_widget"))
    assert gui.message.startswith("rpl-noqt: not applicable (no Qt): PyRPL requested the GUI element ScopeWidget")
    table = format_table({"shim": list(results.values())})
    assert "KILLED" in table and "total" in table
    xml = junit_xml({"shim": list(results.values())})
    assert 'message="rpl-noqt: not applicable (no Qt)' in xml and "[timed out]" in xml


def test_a_relative_out_dir_is_taken_from_the_callers_working_directory(tmp_path, monkeypatch):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_ok.py").write_text(textwrap.dedent(FAKE_SUITE["test_ok.py"]), encoding="utf-8")
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    options = RunOptions(test_timeout=30, file_timeout=60, out_dir="rel/out")
    (r,) = run_suite(["test_ok.py"], options, test_dir=Path("..", "suite"))
    assert (r.status, r.counts()["passed"], r.counts()["skipped"]) == ("ok", 1, 1), (r.status, r.note)
    assert (caller / "rel" / "out" / "files" / "shim" / "test_ok" / "pytest.log").is_file()


def _rpl_noqt_command() -> str:
    """The ``rpl-noqt`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "rpl-noqt"
    found = str(beside) if beside.is_file() else shutil.which("rpl-noqt")
    assert found, "the rpl-noqt console script is not installed (pip install -e .)"
    return found


@pytest.mark.timeout(240)
def test_compat_runs_as_the_readme_documents_from_any_folder(tmp_path):
    """``rpl-noqt compat FILE...`` with default options, started from a fresh folder.

    The README's form; the default ``--out`` is relative (``./compat-report``),
    which each file's pytest (run in its own folder) once got twice over.
    """
    folder = tmp_path / "fresh"
    folder.mkdir()
    proc = subprocess.run([_rpl_noqt_command(), "compat", "test_attribute.py"], cwd=folder,
                          capture_output=True, text=True, timeout=200)
    output = proc.stdout + proc.stderr
    report = folder / "compat-report" / "report.json"
    assert report.is_file(), output
    run = json.loads(report.read_text(encoding="utf-8"))["runs"]["shim + simulator"]
    (file_result,) = run["files"]
    assert file_result["status"] == "ok", (file_result.get("note"), output)
    assert run["totals"]["passed"] > 0 and run["totals"]["failed"] == 0, (run["totals"], output)
    assert proc.returncode == 0, output
    assert (folder / "compat-report" / "junit.xml").is_file()
    assert not (folder / "compat-report" / "files" / "shim" / "test_attribute" / "compat-report").exists()


def test_options_are_validated():
    with pytest.raises(ValueError, match="mode"):
        RunOptions(mode="qt")
    with pytest.raises(ValueError, match="file_timeout"):
        RunOptions(file_timeout=0)


@pytest.mark.parametrize("installed", [(), ("PySide6",), ("PyQt6",)])
def test_upstream_column_accepts_any_binding_pyrpl_supports(monkeypatch, tmp_path, capsys, installed):
    import importlib.util

    from rpl_noqt.compat import cli

    real_find_spec = importlib.util.find_spec
    bindings = {"PyQt5", "PyQt6", "PySide2", "PySide6"}

    def find_spec(name, *args):
        if name in bindings:
            return object() if name in installed else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    # the binding check comes before any run; the runs themselves are not the point here
    ran = []
    monkeypatch.setattr(cli, "run_suite", lambda *a, **k: ran.append(a) or [])
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    code = cli.run(parser.parse_args(["--upstream", "test_example.py", "--out", str(tmp_path / "out"), "-j", "1"]))
    err = capsys.readouterr().err
    if installed:
        assert "needs a Qt binding" not in err and len(ran) == 2  # shim and upstream columns
    else:
        assert code == 2 and not ran
        assert "PyQt5, PyQt6, PySide2, PySide6" in err and "none is installed" in err


def test_expectations_flag_regressions_only(tmp_path):
    from rpl_noqt.compat.results import TestResult

    expected = {"tests": {"f.py::a": "passed", "f.py::b": "not applicable", "f.py::c": "failed",
                          "g.py::x": "passed"}}
    r = FileResult("f.py", status="failed", tests=[
        TestResult("f.py::a", "failed", message="boom"), TestResult("f.py::b", "passed"),
        TestResult("f.py::c", "passed"), TestResult("f.py::new", "failed", message="new")])
    problems = expected_mod.check([r], expected)
    assert len(problems) == 3  # a regressed, b is no longer n/a, an unknown failing test; g.py not run
    assert any("f.py::a" in p for p in problems) and any("f.py::b" in p for p in problems)
    assert any("unknown" in p for p in problems)
    assert expected_mod.check([FileResult("f.py", status="ok", tests=[
        TestResult("f.py::a", "passed"), TestResult("f.py::b", "not applicable"),
        TestResult("f.py::c", "failed")])], expected) == []
    # a run narrowed with -k: what it did not select is not missing, what it ran still counts
    narrowed = [FileResult("f.py", status="ok", tests=[TestResult("f.py::b", "failed", message="x")])]
    assert expected_mod.check(narrowed, expected, selected_only=True) == [
        "f.py::b: expected not applicable, got failed: x"]
    assert len(expected_mod.check(narrowed, expected)) == 2  # and a is reported missing without it


# -- PyRPL's own suite ----------------------------------------------------------------------------


def test_the_shipped_expectations_name_real_tests():
    expected = expected_mod.load_expected()
    files = set(discover(pyrpl_test_dir()))
    assert expected["tests"], "expected.json lists no tests"
    assert {nodeid.split("::")[0] for nodeid in expected["tests"]} <= files
    assert expected_mod.slow_files(expected) <= files
    assert set(expected["tests"].values()) <= {"passed", "not applicable", "failed"}


@pytest.mark.timeout(900)
def test_pyrpl_suite_fast_part_has_no_regression(tmp_path):
    """CI guard: the non-slow files of pyrpl's suite, as ``rpl-noqt compat --fast --check``."""
    expected = expected_mod.load_expected()
    files = [f for f in discover(pyrpl_test_dir()) if f not in expected_mod.slow_files(expected)]
    jobs = max(1, min(2, os.cpu_count() or 1))
    options = RunOptions(test_timeout=60, file_timeout=300, total_timeout=800, jobs=jobs,
                         out_dir=str(tmp_path / "compat"))
    t0 = time.monotonic()
    results = run_suite(files, options)
    elapsed = time.monotonic() - t0
    print(format_table({"shim + simulator": results}))
    print(f"fast compat part: {elapsed:.0f} s wall clock")
    problems = expected_mod.check(results, expected)
    assert not problems, "\n".join(problems)
    for r in results:  # the shim kept every Qt binding out of the process
        assert r.qt_bindings_loaded in ([], None), (r.file, r.qt_bindings_loaded)
    na = [t for r in results for t in r.tests if t.outcome == "not applicable"]
    assert na and all("GUI element" in t.message for t in na)
