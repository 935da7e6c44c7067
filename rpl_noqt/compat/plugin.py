"""pytest plugin for PyRPL's own suite: ``python -m pytest -p rpl_noqt.compat.plugin``.

pytest imports ``-p`` plugins before any conftest, so :func:`rpl_noqt.activate`
runs here before the suite's conftest imports pyrpl. With
``RPL_NOQT_DISABLE=1`` (the ``--upstream`` column) activation is a logged
no-op and PyRPL runs on real Qt; the result log below is written either way.

What the plugin does, and nothing else:

* **GUI rule.** A test (or a whole test module at import) that fails because
  PyRPL asked for a widget, dialog or plot, i.e. raised
  :class:`~rpl_noqt.errors.GuiUnavailableError`, is reported as *skipped*
  with a reason starting with :data:`NOT_APPLICABLE`, so it is counted as
  "not applicable (no Qt)", never as passed and never hidden. Any other
  exception stays a failure.
* **Result log.** Every test report is appended, as one JSON line, to the file
  named by ``$RPL_NOQT_COMPAT_LOG`` and flushed at once, so results survive
  a file that has to be killed (JUnit XML is only written at session end).
  The last line lists the Qt bindings loaded in the process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import pytest

import rpl_noqt
from rpl_noqt.compat.constants import LOG_ENV, NOT_APPLICABLE, TIMEOUT_PREFIXES
from rpl_noqt.errors import GuiUnavailableError


rpl_noqt.activate()  # no-op with RPL_NOQT_DISABLE=1


def _gui_reason(excinfo: Any) -> str | None:
    """The not-applicable reason if ``excinfo`` is (or was caused by) a GUI request."""
    if excinfo is None:
        return None
    exc: BaseException | None = excinfo.value
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, GuiUnavailableError):
            first = str(exc).split(". ", 1)[0]
            return f"{NOT_APPLICABLE}: {first}"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        reason = _gui_reason(call.excinfo)
        if reason is not None:
            report.outcome = "skipped"
            path, lineno, _ = item.location
            report.longrepr = (str(item.path), (lineno or 0) + 1, reason)
            return
        if call.excinfo is not None and str(call.excinfo.value).startswith(TIMEOUT_PREFIXES):
            report.user_properties.append(("rpl_noqt_timeout", True))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.failed and isinstance(collector, pytest.Module):
        # the ExceptionInfo is gone by now; collect again is not an option, so
        # look for the exception class in the report's chain of descriptions
        text = str(report.longrepr)
        if f"{GuiUnavailableError.__module__}.{GuiUnavailableError.__name__}" in text or \
                "GuiUnavailableError" in text:
            line = next((ln for ln in text.splitlines() if "GuiUnavailableError" in ln), "")
            detail = line.split("GuiUnavailableError:", 1)[-1].strip().split(". ", 1)[0]
            report.outcome = "skipped"
            report.longrepr = (str(collector.path), 0, f"{NOT_APPLICABLE}: {detail}" if detail else NOT_APPLICABLE)


# -- result log ---------------------------------------------------------------------------
class _Log:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed at session end

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


_log: _Log | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _log
    path = os.environ.get(LOG_ENV)
    if path and _log is None:
        _log = _Log(path)
        _log.write({"event": "start", "time": time.time(), "shim": rpl_noqt.is_active()})


def pytest_collection_finish(session: pytest.Session) -> None:
    if _log is not None:
        _log.write({"event": "collected", "items": [item.nodeid for item in session.items]})


def _message(report: Any) -> str:
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    return str(longrepr).strip().splitlines()[-1] if str(longrepr).strip() else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _log is None:
        return
    context = getattr(report, "context", None)  # a subtest report
    _log.write({
        "event": "report",
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "subtest": None if context is None else (context.msg or str(context.kwargs)),
        "duration": round(report.duration, 4),
        "timeout": any(name == "rpl_noqt_timeout" for name, _ in report.user_properties),
        "message": _message(report)[:2000] if not report.passed else "",
        "longrepr": report.longreprtext[-6000:] if report.failed else "",
    })


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if _log is None or report.passed:
        return
    _log.write({
        "event": "collect",
        "nodeid": report.nodeid,
        "outcome": report.outcome,
        "message": _message(report)[:2000],
        "longrepr": report.longreprtext[-6000:] if report.failed else "",
    })


def pytest_unconfigure(config: pytest.Config) -> None:
    global _log
    if _log is None:
        return
    qt = sorted(name for name in ("PyQt5", "PyQt6", "PySide2", "PySide6") if name in sys.modules)
    _log.write({"event": "end", "time": time.time(), "qt_bindings_loaded": qt, "shim": rpl_noqt.is_active()})
    _log.close()
    _log = None
