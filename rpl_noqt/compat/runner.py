"""Run PyRPL's shipped test suite file by file, each in its own pytest subprocess.

Two modes:

* ``shim`` (default): ``rpl_noqt`` activated by the plugin before pyrpl is
  imported, real Qt bindings kept out (``-p no:pytestqt``), PyRPL pointed at
  a simulator subprocess started for that file alone (fresh FPGA state, no
  GIL shared with the tests) through the suite's own environment variables:
  ``REDPITAYA_HOSTNAME``/``REDPITAYA_PORT``, plus ``RPL_NOQT_DIRECT`` so the
  board is reached with no SSH/FPGA upload, and ``REDPITAYA_GUI=""`` (an
  empty value is the only one upstream's ``bool(str)`` conversion turns
  into False) so ``Pyrpl`` does not open its main window.
* ``upstream``: ``RPL_NOQT_DISABLE=1``, real Qt offscreen, PyRPL's dummy
  board (``_FAKE_REDPITAYA_``), GUI on: the suite exactly as upstream runs it.

Time is bounded three ways: pytest-timeout per test (signal method: the test
fails, the file goes on), a wall-clock limit per file (the process group is
killed; tests already reported keep their results, the running one is
"timed out"), and a total budget (files not started by then are "not run").
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..board.policy import IO_TIMEOUT_ENV
from .constants import LOG_ENV
from .results import FileResult, results_from_log

__all__ = ("MODES", "RunOptions", "discover", "pyrpl_test_dir", "run_file", "run_suite")

logger = logging.getLogger(__name__)

MODES = ("shim", "upstream")
_LISTENING = re.compile(r"listening on (\S+):(\d+)")
_QT_PLUGINS = ("pytest-qt", "pytestqt")  # entry-point name and module name


@dataclasses.dataclass
class RunOptions:
    mode: str = "shim"
    test_timeout: float = 60.0  # per test (pytest-timeout)
    file_timeout: float = 600.0  # wall clock per file
    total_timeout: float = 3600.0  # wall clock for the whole run
    jobs: int = 1
    out_dir: str | None = None  # logs, per-file XML and user dirs; a temp dir if None
    seed: int | None = 1  # simulator noise seed (reproducible runs)
    #: input noise of the simulator (V rms): a board's ADCs are never silent, and
    #: the suite's "is the data changing?" checks rely on that
    sim_noise: float = 1e-3
    extra_pytest_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("test_timeout", "file_timeout", "total_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs!r}")


def pyrpl_test_dir() -> Path:
    """The ``test`` folder of the installed pyrpl (found without importing pyrpl)."""
    from ..runtime.importer import find_pyrpl_dir

    path = Path(find_pyrpl_dir()) / "test"
    if not (path / "conftest.py").is_file():
        raise FileNotFoundError(f"the installed pyrpl has no test suite at {path}")
    return path


def discover(test_dir: Path) -> list[str]:
    """Test files (``test_*.py``) under ``test_dir``, relative, sorted."""
    return sorted(p.relative_to(test_dir).as_posix() for p in test_dir.rglob("test_*.py"))


# -- simulator --------------------------------------------------------------------------------------
class _SimProcess:
    """``rpl-noqt sim --port 0`` in a subprocess; ``port`` once it listens."""

    def __init__(self, log_path: Path, seed: int | None, noise: float = 0.0) -> None:
        cmd = [sys.executable, "-m", "rpl_noqt.cli", "sim", "--port", "0", "--noise", f"{noise:g}"]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        self._log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     start_new_session=True)
        self.host, self.port = self._wait_listening(30.0)

    def _wait_listening(self, timeout: float) -> tuple[str, int]:
        assert self.proc.stdout is not None
        found: list[tuple[str, int]] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = _LISTENING.search(line)
                if match:
                    found.append((match.group(1), int(match.group(2))))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            raise RuntimeError(f"the simulator did not start within {timeout:.0f} s (see {self._log.name})")
        return found[0]

    def stop(self) -> None:
        _terminate(self.proc, grace=5.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _terminate(proc: subprocess.Popen[str], grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# -- one file -------------------------------------------------------------------------------------
#: I/O deadline of PyRPL's board client against the simulator (see _environment)
SIMULATOR_IO_TIMEOUT_S = 10.0
#: PyRPL's suite aborts a whole file when the mean of ten register accesses exceeds its
#: ``test.max_communication_time`` (5 ms, a board's sanity check). The simulator shares two
#: cores with the tests: under load (the suite must pass with a CPU hog) one mean reached 5.9 ms.
SIMULATOR_MAX_COMMUNICATION_S = 0.05


def _relax_sanity_check(user_dir: Path) -> None:
    """Give PyRPL's per-session sanity check the simulator's threshold (its global_config.yml)."""
    config = user_dir / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "global_config.yml").write_text(
        "general:\n  curvedb: pyrpl\n  loglevel: info\n"
        f"test:\n  max_communication_time: {SIMULATOR_MAX_COMMUNICATION_S}\n", encoding="utf-8")


def _environment(options: RunOptions, user_dir: Path, log_path: Path, sim: _SimProcess | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REDPITAYA_") and k not in ("RPL_NOQT_DISABLE", "RPL_NOQT_DIRECT", "DISPLAY")}
    env.update(
        PYRPL_USER_DIR=str(user_dir),
        MPLBACKEND="Agg",
        QT_QPA_PLATFORM="offscreen",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONFAULTHANDLER="1",
    )
    env[LOG_ENV] = str(log_path)
    if options.mode == "shim":
        assert sim is not None
        env.update(
            REDPITAYA_HOSTNAME=sim.host,
            REDPITAYA_PORT=str(sim.port),
            RPL_NOQT_DIRECT=f"{sim.host}:{sim.port}",
            REDPITAYA_GUI="",  # bool("") is False; bool("False") would be True upstream
        )
        # The simulator shares this machine with the tests (two cores): under load one of its
        # heavier accesses (IQ, a scope buffer) can take longer than a board's 2 s deadline.
        # The per-test timeout bounds a stuck test; a user-set value is kept.
        env.setdefault(IO_TIMEOUT_ENV, str(SIMULATOR_IO_TIMEOUT_S))
    else:
        env.update(RPL_NOQT_DISABLE="1", REDPITAYA_HOSTNAME="_FAKE_REDPITAYA_")
    return env


def _pytest_command(test_dir: Path, path: Path, options: RunOptions, work: Path, xml: Path) -> list[str]:
    ini = work / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")  # keep any project's ini (and its options) out
    cmd = [
        sys.executable, "-m", "pytest", str(path),
        "-c", str(ini), "--rootdir", str(test_dir), "--confcutdir", str(test_dir.parent),
        "-p", "no:cacheprovider", "-p", "rpl_noqt.compat.plugin",
        "--timeout", f"{options.test_timeout:g}", "--timeout-method", "signal",
        "--junitxml", str(xml), "-o", "junit_family=xunit2",
        "-q", "-rA", "--tb=short",
    ]
    if options.mode == "shim":
        for name in _QT_PLUGINS:  # would import a real Qt binding beside the shim
            cmd += ["-p", f"no:{name}"]
    cmd += list(options.extra_pytest_args)
    return cmd


def run_file(test_dir: Path, rel: str, options: RunOptions, out_dir: Path,
             deadline: float | None = None) -> FileResult:
    """Run one test file; never raises for a test problem, never outlives its limits."""
    result = FileResult(rel)
    # Every path handed to the subprocess must be absolute: it runs in ``work``,
    # where a path relative to the caller's working directory means another file.
    test_dir, out_dir = Path(test_dir).resolve(), Path(out_dir).resolve()
    slug = rel.replace("/", "__").removesuffix(".py")
    work = out_dir / "files" / options.mode / slug
    work.mkdir(parents=True, exist_ok=True)
    log_path, xml, output = work / "results.jsonl", work / "junit.xml", work / "pytest.log"
    for stale in (log_path, xml):
        stale.unlink(missing_ok=True)
    limit = options.file_timeout
    if deadline is not None:
        limit = min(limit, deadline - time.monotonic())
        if limit <= 1:
            result.status, result.note = "not run", "total time limit reached"
            return result
    start = time.monotonic()
    sim = None
    killed = False
    try:
        if options.mode == "shim":
            sim = _SimProcess(work / "sim.log", options.seed, options.sim_noise)
        env = _environment(options, work / "pyrpl_user_dir", log_path, sim)
        if options.mode == "shim":
            _relax_sanity_check(work / "pyrpl_user_dir")
        cmd = _pytest_command(test_dir, test_dir / rel, options, work, xml)
        logger.debug("running %s", " ".join(cmd))
        with open(output, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            try:
                result.returncode = proc.wait(limit)
            except subprocess.TimeoutExpired:
                killed = True
                _terminate(proc, grace=3.0)
                result.returncode = proc.returncode
    except Exception as exc:  # the simulator did not start, pytest could not be spawned, ...
        logger.exception("%s: could not run", rel)
        result.status, result.note = "error", f"{type(exc).__name__}: {exc}"
        return result
    finally:
        if sim is not None:
            sim.stop()
        result.duration = round(time.monotonic() - start, 2)
    results_from_log(str(log_path), result, killed=killed)
    result.status = _status(result, killed, limit, output)
    return result


def _status(result: FileResult, killed: bool, limit: float, output: Path) -> str:
    c = result.counts()
    if killed:
        result.note = f"killed after {limit:.0f} s (file time limit)"
        return "timed out"
    rc = result.returncode
    if rc == 5 and not result.tests:
        result.note = "no tests collected"
        return "empty"
    if rc not in (0, 1) and not result.note:
        result.note = f"pytest exit code {rc}: " + _last_lines(output)
    if c["failed"] or c["timed out"]:
        return "failed"
    if rc not in (0, 1) or not result.tests:
        return "error"
    return "ok"


def _last_lines(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-500:]


# -- the suite -------------------------------------------------------------------------------------
def run_suite(files: Sequence[str], options: RunOptions, *, test_dir: Path | None = None,
              progress: Callable[[str, FileResult | None, int, int], None] | None = None) -> list[FileResult]:
    """Run ``files`` (relative to ``test_dir``, the installed suite by default).

    ``progress(file, result_or_None, done, total)`` is called when a file starts
    (result None) and when it ends. Results come back in the order of ``files``.
    """
    test_dir = test_dir or pyrpl_test_dir()
    out_dir = Path(options.out_dir) if options.out_dir else Path(tempfile.mkdtemp(prefix="rpl-noqt-compat-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + options.total_timeout
    results: dict[str, FileResult] = {}
    done_lock = threading.Lock()
    done = 0

    def one(rel: str) -> FileResult:
        nonlocal done
        if progress:
            progress(rel, None, done, len(files))
        res = run_file(test_dir, rel, options, out_dir, deadline)
        with done_lock:
            done += 1
            if progress:
                progress(rel, res, done, len(files))
        return res

    with concurrent.futures.ThreadPoolExecutor(max_workers=options.jobs, thread_name_prefix="compat") as pool:
        for rel, res in zip(files, pool.map(one, files)):
            results[rel] = res
    return [results[rel] for rel in files]
