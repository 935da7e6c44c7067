"""Shared pieces of the remote tests: free ports, an in-process board server, child client processes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rpl_noqt
from rpl_noqt.sim import Simulator

from helpers import free_port

__all__ = ("CHILD_TIMEOUT_S", "child", "free_port", "reap", "served_in_process", "wait_line")

CHILD_TIMEOUT_S = 90.0


@contextlib.contextmanager
def served_in_process(user_dir: Path, name: str) -> Iterator[Any]:
    """A simulated board served by ``rpl_noqt.serve`` in this process; ``server.sim`` is its simulator."""
    old = os.environ.get("PYRPL_USER_DIR")
    os.environ["PYRPL_USER_DIR"] = str(user_dir)
    try:
        with Simulator() as sim:
            server = rpl_noqt.serve(sim.host, sim.port, name=name, ssh=False,
                                    coordinator=f"127.0.0.1:{free_port()}", config=None)
            server.sim = sim  # for fault injection
            try:
                yield server
            finally:
                server.close()
    finally:
        if old is None:
            os.environ.pop("PYRPL_USER_DIR", None)
        else:
            os.environ["PYRPL_USER_DIR"] = old


def child(code: str, *args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """``python -c code *args`` with pipes (text)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=stdin, text=True)


def reap(proc: subprocess.Popen[str]) -> None:
    """Let a child end (stdin closed: a holder releases), kill it after a bound, close its pipes."""
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def wait_line(proc: subprocess.Popen[str], expected: str) -> None:
    """Wait (bounded) for the child to print ``expected`` as its next line."""
    assert proc.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(CHILD_TIMEOUT_S)
    assert box and box[0].strip() == expected, (box, proc.poll())
