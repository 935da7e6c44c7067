"""The per-file table (one or two columns of results), JSON and JUnit XML reports."""

from __future__ import annotations

import json
import platform
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from .results import OUTCOMES, FileResult, counts

__all__ = ("format_table", "junit_xml", "json_report", "summary_line")

_SHORT = {"passed": "pass", "failed": "fail", "skipped": "skip", "not applicable": "n/a", "timed out": "t/o"}


def _cell(result: FileResult | None) -> str:
    if result is None:
        return "-"
    c = result.counts()
    text = _numbers(c)
    flag = {"timed out": " KILLED", "error": " ERROR", "empty": " (none)", "not run": " NOT RUN"}.get(result.status, "")
    return text + flag


def format_table(columns: Mapping[str, Sequence[FileResult]]) -> str:
    """A per-file table; ``columns`` maps a title ("shim+simulator", "upstream") to results."""
    titles = list(columns)
    files: list[str] = []
    for results in columns.values():
        for r in results:
            if r.file not in files:
                files.append(r.file)
    by_title = {t: {r.file: r for r in columns[t]} for t in titles}
    width = max([len(f) for f in files] + [len("time (sum)")])
    cell_width = max(len(_header()) + 8, *(len(t) for t in titles))
    lines = []
    lines.append(" " * width + " | " + " | ".join(t.center(cell_width) for t in titles))
    lines.append(" " * width + " | " + " | ".join(_header().ljust(cell_width) for _ in titles))
    lines.append("-" * (width + 3 + (cell_width + 3) * len(titles)))
    for f in files:
        row = [_cell(by_title[t].get(f)).ljust(cell_width) for t in titles]
        lines.append(f.ljust(width) + " | " + " | ".join(row))
    lines.append("-" * (width + 3 + (cell_width + 3) * len(titles)))
    totals = []
    for t in titles:
        c = counts(test for r in columns[t] for test in r.tests)
        totals.append(_numbers(c).ljust(cell_width))
    lines.append("total".ljust(width) + " | " + " | ".join(totals))
    durations = [f"{sum(r.duration for r in columns[t]):.0f} s".ljust(cell_width) for t in titles]
    lines.append("time (sum)".ljust(width) + " | " + " | ".join(durations))
    return "\n".join(lines)


def _header() -> str:
    return " ".join(_SHORT[o] for o in OUTCOMES)


def _numbers(c: Mapping[str, int]) -> str:
    return " ".join(f"{c[o]:>{len(_SHORT[o])}}" for o in OUTCOMES)


def summary_line(results: Sequence[FileResult]) -> str:
    c = counts(test for r in results for test in r.tests)
    return ", ".join(f"{c[o]} {o}" for o in OUTCOMES)


def json_report(columns: Mapping[str, Sequence[FileResult]], meta: Mapping[str, Any]) -> str:
    data = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        **meta,
        "runs": {
            title: {
                "totals": counts(test for r in results for test in r.tests),
                "duration": round(sum(r.duration for r in results), 2),
                "files": [r.to_json() for r in results],
            }
            for title, results in columns.items()
        },
    }
    return json.dumps(data, indent=2, default=str)


def junit_xml(columns: Mapping[str, Sequence[FileResult]]) -> str:
    """One ``<testsuite>`` per run and file; not applicable = skipped with its reason."""
    root = ET.Element("testsuites", name="pyrpl compat")
    for title, results in columns.items():
        for r in results:
            c = r.counts()
            suite = ET.SubElement(root, "testsuite", {
                "name": f"{title}:{r.file}",
                "tests": str(len(r.tests)),
                "failures": str(c["failed"] + c["timed out"]),
                "errors": "1" if r.status in ("error",) else "0",
                "skipped": str(c["skipped"] + c["not applicable"]),
                "time": f"{r.duration:.2f}",
            })
            if r.note:
                ET.SubElement(suite, "properties").append(ET.Element("property", name="note", value=r.note))
            for t in r.tests:
                path, _, name = t.nodeid.partition("::")
                case = ET.SubElement(suite, "testcase", {
                    "classname": f"{title}.{path.removesuffix('.py').replace('/', '.')}",
                    "name": name or path,
                    "time": f"{t.duration:.3f}",
                })
                if t.outcome in ("failed", "timed out"):
                    el = ET.SubElement(case, "failure", message=(f"[{t.outcome}] " + t.message)[:1000])
                    el.text = t.details or t.message
                elif t.outcome in ("skipped", "not applicable"):
                    ET.SubElement(case, "skipped", message=t.message[:1000] or t.outcome)
            if r.status == "error" and not r.tests:
                case = ET.SubElement(suite, "testcase", {"classname": title, "name": r.file, "time": "0"})
                ET.SubElement(case, "error", message=r.note[:1000] or "error")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
