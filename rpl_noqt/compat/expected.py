"""``expected.json``: what each test of the pyrpl suite does under the shim.

``tests`` maps a test id to ``passed``, ``not applicable`` (a GUI test) or
``failed`` (a known failure; docs/compat.md gives the cause). ``slow_files``
maps the files ``--fast`` (CI) leaves out to how long they take.
:func:`check` lists the regressions of a run: a test expected to pass (or
to be not applicable) that did anything else, and any failing test the file
does not know. Only files that were run are checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from .results import FileResult

__all__ = ("check", "expectation_from", "load_expected", "slow_files")


def load_expected(path: str | None = None) -> dict[str, Any]:
    if path is None:
        text = resources.files(__package__).joinpath("expected.json").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    data = json.loads(text)
    if not isinstance(data.get("tests"), dict):
        raise ValueError("expected.json has no 'tests' mapping")
    return data


def slow_files(expected: dict[str, Any]) -> set[str]:
    return set(expected.get("slow_files", {}))


def check(results: Sequence[FileResult], expected: dict[str, Any], *, selected_only: bool = False) -> list[str]:
    """Regressions of ``results`` against ``expected`` (empty: none).

    ``selected_only``: a run restricted with ``-k``; expected tests it did not
    report were deselected, not lost.
    """
    wanted: dict[str, str] = expected["tests"]
    problems = []
    for r in results:
        if r.status in ("timed out", "error", "not run") and not r.tests:
            if any(nodeid.split("::")[0] == r.file for nodeid in wanted):
                problems.append(f"{r.file}: {r.status} ({r.note})")
            continue
        seen = {t.nodeid: t for t in r.tests}
        for nodeid, outcome in wanted.items():
            if nodeid.split("::")[0] != r.file:
                continue
            got = seen.get(nodeid)
            if got is None:
                if outcome != "failed" and not selected_only:
                    problems.append(f"{nodeid}: expected {outcome}, not reported ({r.status}: {r.note})")
            elif outcome in ("passed", "not applicable") and got.outcome != outcome:
                problems.append(f"{nodeid}: expected {outcome}, got {got.outcome}: {got.message[:200]}")
        for t in r.tests:
            if t.nodeid not in wanted and t.outcome in ("failed", "timed out"):
                problems.append(f"{t.nodeid}: unknown test {t.outcome}: {t.message[:200]}")
    return problems


def expectation_from(results: Sequence[FileResult], previous: dict[str, Any]) -> str:
    tests = dict(previous.get("tests", {}))
    for r in results:
        for t in r.tests:
            tests[t.nodeid] = "failed" if t.outcome == "timed out" else t.outcome
    data = {k: v for k, v in previous.items() if k != "tests"}
    data["tests"] = dict(sorted(tests.items()))
    return json.dumps(data, indent=2) + "\n"
