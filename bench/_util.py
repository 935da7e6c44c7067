"""Shared helpers for the benchmarks: interleaved rounds, per-round ratios, workers, goals.

Every benchmark that compares variants measures them *interleaved*: each
round runs every variant once (in an order that rotates from round to round),
and each comparison is reported as the **median of the per-round ratios**
with their spread (interquartile range and min-max). Machine drift (another
process, a frequency change) then hits both sides of a ratio alike, and a
spread that is wide says the number is noise before anybody reads it as a
result.

Variants that must not share an interpreter (upstream PyRPL with real Qt vs
the shim) run in :class:`Worker` subprocesses that the benchmark commands
round by round: only one of them runs at a time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


# -- timing ------------------------------------------------------------------------------------
def per_call_ns(func: Callable[[], object], *, number: int, repeat: int = 3,
                clock: Callable[[], int] = time.perf_counter_ns) -> float:
    """Best-of-``repeat`` mean time of ``func()`` in ns (best: least disturbed batch).

    ``clock=cpu_ns`` measures the CPU time of this process instead of the wall
    clock: for CPU-bound code it is far less disturbed by other load on the machine.
    """
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        for _ in range(number):
            func()
        best = min(best, (clock() - start) / number)
    return best


#: CPU time of this process (all threads), ns
cpu_ns = time.process_time_ns


def median(values: list[float]) -> float:
    return statistics.median(values)


def interleave(variants: Mapping[str, Callable[[], float]], rounds: int, *, warmup: int = 1) -> dict[str, list[float]]:
    """Run every variant once per round, rotating the order; ``{name: [sample per round]}``.

    Each callable returns one sample (a time, a rate: whatever the benchmark
    compares). ``warmup`` rounds run first and are discarded.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            value = variants[name]()
            if r >= warmup:
                samples[name].append(value)
    return samples


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of two interleaved variants, summarised."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, numerator: list[float], denominator: list[float]) -> Ratio:
        if len(numerator) != len(denominator) or not numerator:
            raise ValueError("a ratio needs the same non-zero number of rounds on both sides")
        return cls(tuple(n / d for n, d in zip(numerator, denominator)))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def iqr(self) -> tuple[float, float]:
        if len(self.values) < 4:
            return self.low, self.high
        q = statistics.quantiles(self.values, n=4, method="inclusive")
        return q[0], q[2]

    def __str__(self) -> str:
        q1, q3 = self.iqr
        return (f"{self.median:.2f}x (IQR {q1:.2f}-{q3:.2f}, range {self.low:.2f}-{self.high:.2f}, "
                f"{len(self.values)} rounds)")


def goal(label: str, ratio: Ratio, target: float, *, at_most: bool = True) -> bool:
    """Print whether the median ratio meets ``target``; returns it. The spread is shown beside it,
    and a goal whose spread straddles the target is flagged (the verdict is then within noise)."""
    met = ratio.median <= target if at_most else ratio.median >= target
    q1, q3 = ratio.iqr
    straddles = q1 <= target <= q3
    sign = "<=" if at_most else ">="
    note = "  (IQR straddles the target: within noise)" if straddles else ""
    print(f"  goal: {label} {sign} {target:g}x -> {'MET' if met else 'MISSED'} ({ratio}){note}")
    return met


def table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")


# -- workers: one interpreter per variant, commanded round by round -----------------------------
UPSTREAM_ENV = {"RPL_NOQT_DISABLE": "1", "QT_QPA_PLATFORM": "offscreen"}


class Worker:
    """A benchmark subprocess that runs named operations on command.

    The child runs ``python <script> --worker <args>``; the script calls
    :func:`serve` with its operations. Replies travel on a private pipe (the
    child's stdout and stderr go to a log file, shown if the worker fails), so
    PyRPL's prints and warnings cannot corrupt the protocol.
    """

    def __init__(self, name: str, script: str | Path, args: list[str], env: Mapping[str, str] | None = None,
                 *, start_timeout: float = 120) -> None:
        self.name = name
        self._log = tempfile.NamedTemporaryFile("w+", prefix="bench-worker-", suffix=".log", delete=False)
        full_env = dict(os.environ)
        full_env.pop("DISPLAY", None)
        full_env.update(env or {})
        reply_r, reply_w = os.pipe()
        full_env["BENCH_REPLY_FD"] = str(reply_w)
        self._proc = subprocess.Popen(
            [sys.executable, str(script), "--worker", *args], stdin=subprocess.PIPE, stdout=self._log,
            stderr=subprocess.STDOUT, env=full_env, text=True, pass_fds=(reply_w,), cwd=str(HERE),
        )
        os.close(reply_w)
        self._replies = os.fdopen(reply_r, "r")
        self.info = self._reply(start_timeout)  # the child's hello (what it runs on)

    def call(self, op: str, **kwargs: Any) -> Any:
        """Run ``op`` in the child and return its result."""
        self.submit(op, **kwargs)
        return self.result()

    def submit(self, op: str, **kwargs: Any) -> None:
        """Start ``op`` in the child without waiting (several workers then run at once); see :meth:`result`."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._fail("exited")

    def result(self) -> Any:
        """The result of the operation :meth:`submit` started."""
        return self._reply(None)

    def _reply(self, _timeout: float | None) -> Any:
        line = self._replies.readline()
        if not line:
            self._fail("exited")
        message = json.loads(line)
        if "error" in message:
            self._fail(f"failed: {message['error']}")
        return message["result"]

    def _fail(self, what: str) -> None:
        self._log.flush()
        self._log.seek(0)
        tail = self._log.read()[-4000:]
        raise RuntimeError(f"benchmark worker {self.name!r} {what}; its output:\n{tail}")

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._replies.close()
        self._log.close()
        os.unlink(self._log.name)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(ops: Mapping[str, Callable[..., Any]], hello: Any = None) -> int:
    """The child's side of :class:`Worker`: answer commands until stdin closes."""
    replies = os.fdopen(int(os.environ["BENCH_REPLY_FD"]), "w")

    def send(message: dict[str, Any]) -> None:
        replies.write(json.dumps(message) + "\n")
        replies.flush()

    send({"result": hello})
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            result = ops[op](**request)
        except Exception as exc:  # reported to the parent, which shows this log
            import traceback

            traceback.print_exc()
            send({"error": f"{op}: {type(exc).__name__}: {exc}"})
            continue
        send({"result": result})
    return 0


def timed_op(func: Callable[[], object]) -> Callable[..., dict[str, float]]:
    """A worker operation: ``n`` calls of ``func``, best of ``repeat`` batches.

    Returns ns per call as ``{"wall": ..., "cpu": ...}``: wall-clock time, and
    the CPU time of the whole process (all its threads, so work a variant hands
    to a background thread is counted) which other load on the machine
    disturbs much less than the wall clock.
    """

    def run(n: int, repeat: int = 3) -> dict[str, float]:
        wall = cpu = float("inf")
        for _ in range(repeat):
            w0, c0 = time.perf_counter_ns(), time.process_time_ns()
            for _ in range(n):
                func()
            c1, w1 = time.process_time_ns(), time.perf_counter_ns()
            wall, cpu = min(wall, (w1 - w0) / n), min(cpu, (c1 - c0) / n)
        return {"wall": wall, "cpu": cpu}

    return run
