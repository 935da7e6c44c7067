"""Config files are never lost: atomic saves under SIGKILL, .bak recovery, confined names."""

from __future__ import annotations

import logging
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from rpl_noqt.board import configfile
from rpl_noqt.board.configfile import ConfigNameError, ConfigWriteError, check_writable, resolve_config

LOGGER = "rpl_noqt.board.configfile"


@pytest.fixture
def memory():
    import pyrpl.memory

    return pyrpl.memory


def _load(path):
    with open(path, "rb") as f:
        return yaml.load(f.read(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _temps(path):
    prefix = f".{os.path.basename(path)}."
    return [n for n in os.listdir(os.path.dirname(path)) if n.startswith(prefix) and n.endswith(".tmp")]


def _wait_until(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- SIGKILL during continuous saves ----------------------------------------------------------------
# A zygote imports pyrpl once and forks one writer per round; the test SIGKILLs
# the writer at a random moment, has the zygote reap it, then checks the files.
ZYGOTE = r"""
import os, sys
import rpl_noqt
rpl_noqt.activate()
import pyrpl.memory as memory

path, mode = sys.argv[1], sys.argv[2]

def say(text):
    os.write(1, (text + "\n").encode())

def write(tree):
    if mode == "inplace":  # a deliberately non-atomic writer: shows the test can fail
        with open(path, "wb") as f:
            f.write(memory.save(tree._data))
    else:  # the real, patched save path
        tree._write_to_file()

say("ready")
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "fork":
        pid = os.fork()
        if pid == 0:
            try:
                tree = memory.MemoryTree(path)
                i = 0
                while True:
                    i += 1
                    tree._data["round"] = int(arg)
                    tree._data["i"] = i
                    tree._data["payload"] = {f"k{j}": [i * j, float(j) / 7, "x" * 20] for j in range(25)}
                    write(tree)
                    say(f"saved {arg} {i}")
            finally:
                os._exit(3)
        say(f"pid {pid}")
    elif command == "reap":
        _, status = os.waitpid(int(arg), 0)
        say(f"reaped {arg} {status}")
    else:
        break
"""


class _Zygote:
    def __init__(self, tmp_path: Path, config: Path, mode: str) -> None:
        env = dict(os.environ)
        env.pop("RPL_NOQT_STRICT_SIGNALS", None)
        self.log = open(tmp_path / "zygote.log", "wb")  # a file: a full stderr pipe would block the writers
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(config), mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=str(tmp_path))
        self.lines: queue.Queue[str] = queue.Queue()
        self.saved: dict[int, int] = {}
        self.reader = threading.Thread(target=self._read, name="zygote-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode().strip())
        self.lines.put("<eof>")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def expect(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"zygote: no {prefix!r} within {timeout} s; log: {self.log_text()}") from None
            if line.startswith("saved "):
                _, rnd, i = line.split()
                self.saved[int(rnd)] = max(self.saved.get(int(rnd), 0), int(i))
            if line == "<eof>":
                raise AssertionError(f"zygote exited; log: {self.log_text()}")
            if line.startswith(prefix):
                return line

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def close(self) -> None:
        with _suppress():
            self.send("quit")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.reader.join(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with _suppress():
                stream.close()  # type: ignore[union-attr]
        self.log.close()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _kill_rounds(tmp_path: Path, rounds: int, mode: str, seed: int, budget_s: float) -> dict:
    config = tmp_path / "user" / "config" / "kill.yml"
    config.parent.mkdir(parents=True)
    rng = random.Random(seed)
    stats = {"rounds": 0, "missing": 0, "invalid": 0, "stale": 0, "bad_backup": 0, "saves": 0, "problems": []}
    zygote = _Zygote(tmp_path, config, mode)
    child = None
    previous = None  # (round, i) the file held after the last round
    start = time.monotonic()
    try:
        zygote.expect("ready", timeout=60)
        for rnd in range(1, rounds + 1):
            assert time.monotonic() - start < budget_s, f"only {rnd - 1} rounds in {budget_s} s"
            zygote.send(f"fork {rnd}")
            child = int(zygote.expect("pid ").split()[1])
            if rng.random() < 0.8:  # mostly mid-save; sometimes during start-up/recovery
                zygote_deadline = time.monotonic() + 20
                while zygote.saved.get(rnd, 0) < 1:
                    assert time.monotonic() < zygote_deadline, f"round {rnd}: no save; log: {zygote.log_text()}"
                    with _suppress():
                        zygote.expect("\0never", timeout=0.005)
            time.sleep(rng.uniform(0, 0.02))
            os.kill(child, signal.SIGKILL)
            zygote.send(f"reap {child}")
            status = int(zygote.expect(f"reaped {child}").split()[2])
            child = None
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
                f"round {rnd}: the writer ended on its own (status {status}); log: {zygote.log_text()}"
            stats["rounds"] += 1
            last = zygote.saved.get(rnd, 0)
            stats["saves"] += last
            if not config.exists():
                stats["missing"] += 1
                stats["problems"].append(f"round {rnd}: {config.name} missing")
                continue
            try:
                data = _load(config)
                if data is None and previous is None and last == 0:
                    continue  # killed before the first save ever: PyRPL's new, empty config (nothing lost)
                held = (data["round"], data["i"])
            except Exception as exc:
                stats["invalid"] += 1
                stats["problems"].append(f"round {rnd}: {config.name} invalid ({type(exc).__name__})")
                continue
            allowed = {(rnd, last), (rnd, last + 1)} if last else {previous, (rnd, 1)}
            if held not in allowed:
                stats["stale"] += 1
                stats["problems"].append(f"round {rnd}: holds {held}, expected one of {sorted(allowed, key=str)}")
            previous = held
            backup = Path(str(config) + ".bak")
            if backup.exists():
                try:
                    assert isinstance(_load(backup), dict) and _load(backup)
                except Exception:
                    stats["bad_backup"] += 1
                    stats["problems"].append(f"round {rnd}: {backup.name} is not a good config")
    finally:
        if child is not None:
            with _suppress():
                os.kill(child, signal.SIGKILL)
            with _suppress():
                zygote.send(f"reap {child}")
        zygote.close()
    stats["final"] = previous
    stats["seconds"] = round(time.monotonic() - start, 1)
    stats["temps_left"] = len(_temps(str(config)))
    stats["config"] = str(config)
    return stats


def test_200_sigkills_during_saves_lose_nothing(tmp_path, memory):
    seed = random.randrange(1 << 30)
    stats = _kill_rounds(tmp_path, 200, "patched", seed, budget_s=90)
    summary = {k: v for k, v in stats.items() if k != "problems"}
    assert stats["rounds"] == 200, summary
    assert stats["saves"] >= 100, f"too few saves to mean anything: {summary}"
    assert stats["missing"] == stats["invalid"] == stats["stale"] == stats["bad_backup"] == 0, \
        f"seed {seed}: {summary}; {stats['problems'][:10]}"
    # writers killed mid-save leave temp files; the next start removes those of dead writers
    assert stats["temps_left"] <= 1, summary
    tree = memory.MemoryTree(stats["config"])  # a start after the last kill loads what the file held
    assert (tree._data["round"], tree._data["i"]) == stats["final"]
    assert _temps(stats["config"]) == []
    logging.getLogger(__name__).info("SIGKILL rounds: %s", summary)


def test_the_kill_harness_catches_a_non_atomic_writer(tmp_path):
    """The same harness, with a writer that truncates the file in place, must report losses."""
    stats = _kill_rounds(tmp_path, 25, "inplace", random.randrange(1 << 30), budget_s=60)
    assert stats["rounds"] == 25
    assert stats["missing"] + stats["invalid"] > 0, {k: v for k, v in stats.items() if k != "problems"}


# -- recovery at start ---------------------------------------------------------------------------
def test_missing_yaml_is_restored_from_bak_with_a_warning(tmp_path, pyrpl_module, caplog):
    config = resolve_config(Path(tmp_path / "lab.yml"))
    p = pyrpl_module.Pyrpl(config=config, hostname="_FAKE_REDPITAYA_", gui=False)
    try:
        p.rp.asg0.frequency = 4321.0
        p.c._write_to_file()
        p.c._write_to_file()  # the .bak now holds the frequency too
    finally:
        p._clear()
    assert _load(config + ".bak")["asg0"]["frequency"] == pytest.approx(4321.0, abs=0.1)
    os.unlink(config)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        p = pyrpl_module.Pyrpl(config=config, hostname="_FAKE_REDPITAYA_", gui=False)
    try:
        assert p.c._filename == config
        assert p.rp.asg0.frequency == pytest.approx(4321.0, abs=0.1)
    finally:
        p._clear()
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert any(config in m and config + ".bak" in m and "missing" in m and "restored" in m for m in warnings), warnings


@pytest.mark.parametrize("broken", [b"", b"   \n", b"{\x00not: [yaml", b"just a string\n"])
def test_empty_or_unparseable_yaml_is_restored_from_bak(tmp_path, memory, caplog, broken):
    path = str(tmp_path / "c.yml")
    Path(path + ".bak").write_text("answer: 42\nnested:\n  x: 1\n")
    Path(path).write_bytes(broken)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        tree = memory.MemoryTree(path)
    assert tree._data["answer"] == 42
    assert _load(path) == {"answer": 42, "nested": {"x": 1}}
    assert any("restored" in r.getMessage() and path in r.getMessage() for r in caplog.records)
    if broken.strip():
        assert Path(path + ".invalid").read_bytes() == broken  # the unparseable file is kept for inspection


def test_missing_yaml_with_an_empty_bak_warns_and_starts_empty(tmp_path, memory, caplog):
    path = str(tmp_path / "c.yml")
    Path(path + ".bak").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        tree = memory.MemoryTree(path)
    assert dict(tree._data) == {}
    assert any("nothing to restore" in r.getMessage() and path + ".bak" in r.getMessage() for r in caplog.records)


# -- saves ------------------------------------------------------------------------------------------
def test_save_replaces_atomically_and_keeps_the_previous_file_as_bak(tmp_path, memory):
    path = str(tmp_path / "c.yml")
    tree = memory.MemoryTree(path)
    tree._data["v"] = 1
    tree._write_to_file()
    os.chmod(path, 0o640)
    tree._data["v"] = 2
    counter = tree._write_to_file_counter
    tree._write_to_file()
    assert _load(path) == {"v": 2} and _load(path + ".bak") == {"v": 1}
    assert tree._write_to_file_counter == counter + 1
    assert tree._mtime == os.path.getmtime(path)
    assert os.stat(path).st_mode & 0o777 == 0o640  # the replacement keeps the file's permissions
    assert _temps(path) == []


def test_save_never_copies_an_empty_or_broken_file_over_a_good_bak(tmp_path, memory, caplog):
    path = str(tmp_path / "c.yml")
    tree = memory.MemoryTree(path)
    for v in (1, 2):
        tree._data["v"] = v
        tree._write_to_file()
    Path(path).write_bytes(b"")  # emptied behind PyRPL's back
    tree._data["v"] = 3
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        tree._write_to_file()
    assert _load(path + ".bak") == {"v": 1} and _load(path) == {"v": 3}
    assert any("not copied over the backup" in r.getMessage() for r in caplog.records)


def test_save_stops_the_pending_save_timer(tmp_path, memory):
    tree = memory.MemoryTree(str(tmp_path / "c.yml"), _loadsavedeadtime=30)
    tree["a"] = 1  # within the dead time: the save is postponed on the timer
    assert tree._savetimer.isActive()
    tree._write_to_file()
    assert not tree._savetimer.isActive()
    assert _load(tree._filename) == {"a": 1}


def test_patches_are_recorded_and_the_save_keeps_the_board_lock(memory):
    import rpl_noqt

    targets = {e.target: e.reason for e in rpl_noqt.patch_record()}
    for name in ("pyrpl.memory.MemoryTree._write_to_file", "pyrpl.memory.MemoryTree._save",
                 "pyrpl.memory.get_config_file"):
        assert name in targets and targets[name]
    write = memory.MemoryTree._write_to_file
    assert getattr(write, "_rpl_noqt_locked", False)  # rpl_noqt.runtime.threadsafe's lock wrapper, outermost
    assert write.__wrapped__.__module__ == configfile.__name__


# -- unwritable configs ----------------------------------------------------------------------------
def _block_folder(folder: Path) -> None:
    """Make ``folder`` unusable even for root: it becomes a regular file."""
    shutil.rmtree(folder)
    folder.write_text("not a folder")


def _unblock_folder(folder: Path) -> None:
    folder.unlink()
    folder.mkdir()


def test_a_failed_background_save_raises_at_the_next_change(tmp_path, memory, caplog):
    folder = tmp_path / "cfg"
    folder.mkdir()
    path = str(folder / "c.yml")
    tree = memory.MemoryTree(path, _loadsavedeadtime=0.5)
    try:
        _block_folder(folder)
        with caplog.at_level(logging.ERROR, logger=LOGGER):
            tree._lastsave = memory.time()  # so that the change below is within the dead time, however slow we are
            tree["a"] = 1  # saved later by the timer, on the loop thread
            assert _wait_until(lambda: tree.__dict__.get("_rpl_noqt_save_error") is not None, 10), \
                "the background save did not fail"

            def logged() -> bool:  # the loop thread logs just after it records the error
                return any(path in r.getMessage() and "next config change" in r.getMessage() for r in caplog.records)

            assert _wait_until(logged, 10), [r.getMessage() for r in caplog.records]
        with pytest.raises(ConfigWriteError) as info:
            tree["b"] = 2  # from this (user) thread
        message = str(info.value)
        assert path in message and str(folder) in message and "Not a directory" in message
        assert isinstance(info.value, OSError) and info.value.filename == path
        with pytest.raises(ConfigWriteError):  # an explicit save (close() does one) raises as well
            tree._write_to_file()
        _unblock_folder(folder)
        tree["c"] = 3  # writable again: saved at once, the error is gone
        assert "_rpl_noqt_save_error" not in tree.__dict__
        assert _load(path) == {"a": 1, "b": 2, "c": 3}
    finally:
        tree._savetimer.stop()


def test_check_writable_refuses_a_folder_that_is_a_file(tmp_path):
    regular = tmp_path / "afile"
    regular.write_text("x")
    resolved = resolve_config(regular / "cfg.yml")
    with pytest.raises(ConfigWriteError) as info:
        check_writable(resolved)
    message = str(info.value)
    assert resolved in message and str(regular) in message and "is not a folder" in message


def test_check_writable_refuses_a_missing_folder_and_a_folder_as_file(tmp_path):
    with pytest.raises(ConfigWriteError, match="does not exist"):
        check_writable(str(tmp_path / "nowhere" / "c.yml"))
    (tmp_path / "d.yml").mkdir()
    with pytest.raises(ConfigWriteError, match="not a regular file"):
        check_writable(str(tmp_path / "d.yml"))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write read-only files")
def test_check_writable_refuses_a_read_only_file(tmp_path):
    path = tmp_path / "ro.yml"
    path.write_text("a: 1\n")
    path.chmod(0o444)
    with pytest.raises(ConfigWriteError, match="read-only"):
        check_writable(str(path))


def test_check_writable_accepts_names_and_creates_the_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRPL_USER_DIR", str(tmp_path / "fresh"))
    resolved = resolve_config("lab")
    check_writable(resolved)
    assert os.path.isdir(tmp_path / "fresh" / "config")
    assert os.listdir(tmp_path / "fresh" / "config") == []  # the probe file is gone
    check_writable(None)


# -- names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "problem"), [
    ("../victim", "path separator"),
    ("..", "'..'"),
    ("a..b", "'..'"),
    ("sub/lab", "path separator"),
    ("sub\\lab", "path separator"),
    ("/etc/victim.yml", "absolute path"),
    ("~/victim", "absolute path"),
    ("C:victim", "':'"),
    (" lab", "blanks"),
    (".yml", "no name"),
])
def test_config_names_are_confined(name, problem):
    with pytest.raises(ConfigNameError) as info:
        resolve_config(name)
    message = str(info.value)
    assert repr(name) in message and problem in message
    assert "plain file name" in message and "pathlib.Path" in message
    assert isinstance(info.value, ValueError)


def test_a_name_is_a_file_in_the_config_folder_read_when_used(tmp_path, monkeypatch):
    monkeypatch.setenv("PYRPL_USER_DIR", str(tmp_path / "u1"))
    assert resolve_config("lab") == str(tmp_path / "u1" / "config" / "lab.yml")
    monkeypatch.setenv("PYRPL_USER_DIR", str(tmp_path / "u2"))
    assert resolve_config("lab.yml") == str(tmp_path / "u2" / "config" / "lab.yml")
    assert resolve_config(None) is None and resolve_config("") is None


def test_wrong_types_are_refused():
    for value in (42, b"lab", True):
        with pytest.raises(ConfigNameError, match="config name"):
            resolve_config(value)  # type: ignore[arg-type]


def test_a_path_is_accepted_on_purpose_and_used_exactly(tmp_path, pyrpl_module):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resolved = resolve_config(elsewhere / "mine")
    assert resolved == str(elsewhere / "mine.yml")
    check_writable(resolved)
    p = pyrpl_module.Pyrpl(config=resolved, hostname="_FAKE_REDPITAYA_", gui=False)
    try:
        assert p.c._filename == resolved  # not moved into $PYRPL_USER_DIR/config (upstream would)
        p.rp.asg0.frequency = 1234.0
    finally:
        p._clear()
    assert _load(resolved)["asg0"]["frequency"] == pytest.approx(1234.0, abs=0.1)
    assert not os.path.exists(os.path.join(configfile.config_dir(), "mine.yml"))
    with pytest.raises(ConfigNameError, match=r"\.yml"):
        resolve_config(elsewhere / "mine.yaml")
    (elsewhere / "sub.yml").mkdir()
    with pytest.raises(ConfigNameError, match="is a folder"):
        resolve_config(elsewhere / "sub.yml")


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path, memory):
    path = str(tmp_path / "c.yml")
    Path(path).write_text("a: 1\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(30)
    stale = tmp_path / f".c.yml.{dead.pid}.0badc0de.tmp"
    stale.write_text("a: partial")
    mine = tmp_path / f".c.yml.{os.getpid()}.feedf00d.tmp"  # a writer of this process: left alone
    mine.write_text("a: in flight")
    memory.MemoryTree(path)
    assert not stale.exists() and mine.exists()
