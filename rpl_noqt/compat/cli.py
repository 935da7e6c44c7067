"""``rpl-noqt compat``: run PyRPL's shipped test suite under the shim on the simulator.

Prints progress per file, then a per-file table (passed / failed / skipped /
not applicable / timed out); writes ``report.json`` and ``junit.xml`` (and
each file's pytest output, simulator log and result log) to ``--out``.
``--upstream`` also runs the suite the upstream way (real Qt offscreen,
PyRPL's dummy board) and prints both columns side by side. Exit code 0 when
the shim run has no failures or time-outs (or, with ``--check``, no
regression against ``expected.json``), 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import sys
import time
from pathlib import Path

from .expected import check, expectation_from, load_expected, slow_files
from .report import format_table, json_report, junit_xml, summary_line
from .results import FileResult
from .runner import RunOptions, discover, pyrpl_test_dir, run_suite

logger = logging.getLogger(__name__)

SHIM_TITLE = "shim + simulator"
UPSTREAM_TITLE = "upstream (Qt, dummy)"
#: the bindings pyrpl 0.9.9.1 offers as extras (through qtpy)
QT_BINDINGS = ("PyQt5", "PyQt6", "PySide2", "PySide6")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("files", nargs="*", help="test files relative to pyrpl/test (default: all)")
    parser.add_argument("--upstream", action="store_true",
                        help="also run the suite the upstream way (needs a Qt binding) and print both columns")
    parser.add_argument("--fast", action="store_true",
                        help="leave out the files expected.json marks slow (what CI runs)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 only on a regression against expected.json (tests expected to pass)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="files run in parallel (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-test time limit in s (default 60)")
    parser.add_argument("--file-timeout", type=float, default=600.0, help="per-file time limit in s (default 600)")
    parser.add_argument("--total-timeout", type=float, default=3600.0,
                        help="time limit of each run in s (default 3600)")
    parser.add_argument("-k", dest="keyword", metavar="EXPR",
                        help="only tests matching this pytest -k expression (others are not reported)")
    parser.add_argument("--out", default="compat-report", help="report directory (default ./compat-report)")
    parser.add_argument("--write-expected", metavar="PATH",
                        help="write this run's outcomes as an expectation file (keeps the slow-file notes)")


def _progress(title: str):  # type: ignore[no-untyped-def]
    def show(rel: str, result: FileResult | None, done: int, total: int) -> None:
        if result is None:
            logger.debug("%s: %s started", title, rel)
            return
        c = result.counts()
        parts = ", ".join(f"{n} {k}" for k, n in c.items() if n)
        note = f"  [{result.status}{': ' + result.note if result.note else ''}]" if result.status != "ok" else ""
        print(f"[{title} {done:>2}/{total}] {rel:<44} {result.duration:7.1f} s  {parts or 'no tests'}{note}",
              flush=True)

    return show


def run(args: argparse.Namespace) -> int:
    try:
        test_dir = pyrpl_test_dir()
        files = list(args.files) or discover(test_dir)
        unknown = [f for f in files if not (test_dir / f).is_file()]
        if unknown:
            print(f"rpl-noqt compat: no such test file(s) under {test_dir}: {', '.join(unknown)}", file=sys.stderr)
            return 2
        expected = load_expected()
        if args.fast:
            slow = slow_files(expected)
            files = [f for f in files if f not in slow]
        if args.upstream and not any(importlib.util.find_spec(name) for name in QT_BINDINGS):
            print(f"rpl-noqt compat --upstream needs a Qt binding that pyrpl (qtpy) can use, one of "
                  f"{', '.join(QT_BINDINGS)}; none is installed (pip install PyQt5)", file=sys.stderr)
            return 2
        # Paths are made absolute here, once: the runner starts each file's pytest in
        # that file's own folder, where a relative path would point somewhere else.
        out = Path(args.out).resolve()
        write_expected = Path(args.write_expected).resolve() if args.write_expected else None
        extra = ("-k", args.keyword) if args.keyword else ()
        options = RunOptions(mode="shim", test_timeout=args.timeout, file_timeout=args.file_timeout,
                             total_timeout=args.total_timeout, jobs=args.jobs, out_dir=str(out),
                             extra_pytest_args=extra)
    except ValueError as exc:
        print(f"rpl-noqt compat: {exc}", file=sys.stderr)
        return 2

    print(f"pyrpl suite: {test_dir} ({len(files)} files); reports in {out}/", flush=True)
    columns: dict[str, list[FileResult]] = {}
    t0 = time.monotonic()
    columns[SHIM_TITLE] = run_suite(files, options, test_dir=test_dir, progress=_progress("shim"))
    shim_time = time.monotonic() - t0
    if args.upstream:
        upstream = dataclasses.replace(options, mode="upstream")
        columns[UPSTREAM_TITLE] = run_suite(files, upstream, test_dir=test_dir, progress=_progress("upstream"))

    print()
    print(format_table(columns))
    shim = columns[SHIM_TITLE]
    print(f"\nshim + simulator: {summary_line(shim)} in {shim_time:.0f} s wall clock")
    _print_problems(shim)
    regressions = check(shim, expected, selected_only=bool(args.keyword))
    for line in regressions:
        print(f"REGRESSION: {line}")
    meta = {"pyrpl_test_dir": str(test_dir), "files": files, "wall_clock_shim": round(shim_time, 1),
            "options": {k: v for k, v in dataclasses.asdict(options).items() if k != "mode"},
            "regressions": regressions}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json_report(columns, meta), encoding="utf-8")
    (out / "junit.xml").write_text(junit_xml(columns), encoding="utf-8")
    print(f"reports: {out / 'report.json'}, {out / 'junit.xml'}")
    if write_expected is not None:
        write_expected.write_text(expectation_from(shim, expected), encoding="utf-8")
        print(f"expectations written to {write_expected}")
    if args.check:
        return 1 if regressions else 0
    bad = any(t.outcome in ("failed", "timed out") for r in shim for t in r.tests) or \
        any(r.status in ("error", "timed out", "not run") for r in shim)
    return 1 if bad else 0


def _print_problems(results: list[FileResult]) -> None:
    na = [(t.nodeid, t.message) for r in results for t in r.tests if t.outcome == "not applicable"]
    if na:
        print("\nnot applicable (GUI tests; PyRPL asked for a widget or plot, which the shim does not serve):")
        for nodeid, message in na:
            print(f"  {nodeid}: {message.split(': ', 2)[-1]}")
    bad = [(t.nodeid, t.outcome, t.message) for r in results for t in r.tests if t.outcome in ("failed", "timed out")]
    if bad:
        print("\nfailed / timed out:")
        for nodeid, outcome, message in bad:
            print(f"  [{outcome}] {nodeid}: {message.splitlines()[0][:160] if message else ''}")
