"""Results of a compat run: per test, per file, and counts for the table.

The source of truth is the JSON-lines log the plugin
(:mod:`rpl_noqt.compat.plugin`) writes while pytest runs, so a file killed at
its time limit still reports what it had done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from typing import Any

from .constants import NOT_APPLICABLE

__all__ = ("OUTCOMES", "FileResult", "TestResult", "counts", "results_from_log")

logger = logging.getLogger(__name__)

#: table columns, in order
OUTCOMES = ("passed", "failed", "skipped", "not applicable", "timed out")


@dataclasses.dataclass
class TestResult:
    nodeid: str
    outcome: str  # one of OUTCOMES
    duration: float = 0.0
    message: str = ""
    details: str = ""  # failure text (tail)
    failed_subtests: list[str] = dataclasses.field(default_factory=list)
    passed_subtests: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class FileResult:
    file: str  # relative to the suite directory
    status: str = "not run"  # ok, failed, timed out, error, empty, not run
    duration: float = 0.0
    returncode: int | None = None
    tests: list[TestResult] = dataclasses.field(default_factory=list)
    note: str = ""
    qt_bindings_loaded: list[str] | None = None
    shim_active: bool | None = None

    def counts(self) -> dict[str, int]:
        return counts(self.tests)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["counts"] = self.counts()
        return data


def counts(tests: Iterable[TestResult]) -> dict[str, int]:
    result = dict.fromkeys(OUTCOMES, 0)
    for test in tests:
        result[test.outcome] += 1
    return result


def _read_log(path: str) -> list[dict[str, Any]]:
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill
                    logger.debug("ignoring a truncated line of %s", path)
    except FileNotFoundError:
        pass
    return records


def results_from_log(path: str, file_result: FileResult, *, killed: bool) -> FileResult:
    """Fill ``file_result`` from the plugin's log (``killed``: hit the file time limit)."""
    records = _read_log(path)
    order: list[str] = []
    tests: dict[str, TestResult] = {}
    finished: set[str] = set()

    def get(nodeid: str) -> TestResult:
        if nodeid not in tests:
            tests[nodeid] = TestResult(nodeid, "passed")
            order.append(nodeid)
        return tests[nodeid]

    collected: list[str] = []
    for rec in records:
        event = rec.get("event")
        if event == "collected":
            collected = list(rec.get("items", []))
        elif event == "collect":
            test = get(rec["nodeid"] or file_result.file)
            finished.add(test.nodeid)
            _apply(test, rec)
        elif event == "report":
            test = get(rec["nodeid"])
            test.duration = round(test.duration + float(rec.get("duration", 0.0)), 4)
            if rec.get("when") == "teardown" and not rec.get("subtest"):
                finished.add(test.nodeid)
            _apply(test, rec)
        elif event == "end":
            file_result.qt_bindings_loaded = rec.get("qt_bindings_loaded")
            file_result.shim_active = rec.get("shim")
    for nodeid in order:
        test = tests[nodeid]
        if nodeid not in finished and test.outcome in ("passed", "failed"):
            # started, never finished: the file was killed (or pytest died) in it
            test.outcome = "timed out"
            test.message = test.message or ("killed at the file time limit" if killed else "pytest ended during this test")
    for nodeid in collected:
        if nodeid not in tests:
            order.append(nodeid)
            tests[nodeid] = TestResult(nodeid, "timed out" if killed else "failed",
                                       message="not run: file time limit reached" if killed
                                       else "not run: pytest ended early")
    file_result.tests = [tests[n] for n in order]
    return file_result


_RANK = {"passed": 0, "skipped": 1, "not applicable": 2, "failed": 3, "timed out": 4}


def _apply(test: TestResult, rec: dict[str, Any]) -> None:
    outcome = rec.get("outcome")
    subtest = rec.get("subtest")
    message = rec.get("message") or ""
    if outcome == "passed":
        if subtest:
            test.passed_subtests += 1
        return
    if outcome == "skipped":
        new = "not applicable" if message.startswith(NOT_APPLICABLE) else "skipped"
    elif rec.get("timeout"):
        new = "timed out"
    else:
        new = "failed"
        if subtest:
            test.failed_subtests.append(str(subtest))
    if _RANK[new] >= _RANK[test.outcome]:
        if _RANK[new] > _RANK[test.outcome] or not test.message:
            test.message = message
            test.details = rec.get("longrepr") or ""
        test.outcome = new
