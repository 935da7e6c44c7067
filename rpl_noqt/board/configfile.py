"""Config files that are never lost: atomic saves, ``.bak`` recovery, confined names.

Why: upstream ``MemoryTree._write_to_file`` unlinks the YAML before renaming
its buffer into place, so a kill in between leaves no ``<name>.yml``; the next
start then silently begins empty and its first save copies the empty file over
the good ``.bak``. Upstream also resolves ``config="../victim"`` (or an
absolute path) to any YAML file on the disk.

What this module changes (post-import hook :func:`install`, recorded):

* ``MemoryTree._write_to_file``: serialise first, keep the current file as
  ``<name>.yml.bak`` only if it is a good one (a non-empty YAML mapping), write
  a temp file in the same folder, fsync it, ``os.replace`` it onto the YAML.
  At every moment the YAML is either the old or the new complete file.
* ``MemoryTree._save``: after a save failed (on the background save timer,
  where an exception is only logged), the next config change made from a user
  thread saves at once and raises the :class:`ConfigWriteError`.
* ``pyrpl.memory.get_config_file``: a YAML that is missing, empty or
  unparseable next to a good ``.bak`` is restored from it (WARNING naming
  both); an absolute path that does not exist yet is created at that exact
  place (upstream would silently put it in the user config folder).

For :func:`rpl_noqt.connect`: :func:`resolve_config` confines ``str`` names to
``$PYRPL_USER_DIR/config/`` (a ``pathlib.Path`` means "this exact file, on
purpose"), and :func:`check_writable` refuses a config that could not be saved.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import secrets
import stat
import time
import types
from collections.abc import Mapping
from typing import Any

from ..runtime.patching import PatchRecord

__all__ = (
    "BACKUP_SUFFIX",
    "ConfigNameError",
    "ConfigWriteError",
    "check_writable",
    "config_dir",
    "install",
    "resolve_config",
)

logger = logging.getLogger(__name__)

BACKUP_SUFFIX = ".bak"
_TEMP_SUFFIX = ".tmp"
_ERROR_ATTR = "_rpl_noqt_save_error"  # the last failed save of a tree, until one succeeds
_GOOD_ATTR = "_rpl_noqt_good_stat"  # stat key of the file we last wrote with data in it
_MARK = "_rpl_noqt_configfile"
_STALE_TEMP_AGE_S = 3600.0  # where a writer's liveness cannot be asked (Windows)


class ConfigNameError(ValueError):
    """A config name would leave the config folder, or is not a name at all."""


class ConfigWriteError(OSError):
    """A config file cannot be saved; the message names the file, its folder and the cause."""

    def __init__(self, message: str, filename: str, cause: OSError | None = None) -> None:
        super().__init__(message)
        self.filename = filename
        self.errno = cause.errno if cause is not None else None
        self.strerror = cause.strerror if cause is not None else None

    def __str__(self) -> str:
        return str(self.args[0])


# -- names -------------------------------------------------------------------------------------
def config_dir() -> str:
    """``$PYRPL_USER_DIR/config`` as PyRPL computes it, read now (the variable may change after import)."""
    user_dir = os.environ["PYRPL_USER_DIR"] if "PYRPL_USER_DIR" in os.environ else \
        os.path.join(os.path.expanduser("~"), "pyrpl_user_dir")
    return os.path.abspath(os.path.join(user_dir, "config"))


def _with_suffix(path: str) -> str:
    return path if path.endswith(".yml") else path + ".yml"


def resolve_config(config: str | os.PathLike[str] | None) -> str | None:
    """What to pass to ``Pyrpl(config=...)``: an absolute ``.yml`` path, or None (in memory).

    * ``None`` or ``""``: an in-memory config, never written.
    * a ``str`` is a *name*: ``"lab"`` or ``"lab.yml"`` is
      ``$PYRPL_USER_DIR/config/lab.yml``; a name with ``..``, a path separator
      or a drive, or an absolute path, raises :class:`ConfigNameError`.
    * an ``os.PathLike`` (``pathlib.Path``) is *this exact file, on purpose*,
      anywhere (``~`` expanded, ``.yml`` added if there is no suffix).
    """
    if config is None:
        return None
    if isinstance(config, str):
        return _resolve_name(config)
    if isinstance(config, os.PathLike):
        path = os.fspath(config)
        if not isinstance(path, str):
            raise ConfigNameError(f"config={config!r}: a config path must be text, not bytes")
        path = os.path.abspath(os.path.expanduser(path))
        suffix = os.path.splitext(path)[1]
        if suffix and suffix != ".yml":
            raise ConfigNameError(f"config={config!r}: PyRPL config files end in .yml, not {suffix}")
        path = _with_suffix(path)
        if os.path.isdir(path):
            raise ConfigNameError(f"config={config!r}: {path} is a folder, not a config file")
        logger.debug("config %r is the file %s (a path, on purpose)", config, path)
        return path
    raise ConfigNameError(
        f"config must be a config name (str), a pathlib.Path for a file elsewhere, or None; got {config!r}"
    )


def _resolve_name(name: str) -> str | None:
    if name == "":
        return None
    folder = config_dir()
    allowed = (f"a config name is a plain file name such as 'lab' (kept as {os.path.join(folder, 'lab.yml')}); "
               "for a file elsewhere pass it on purpose as a pathlib.Path, e.g. config=Path('/data/lab.yml')")
    problem = None
    if name != name.strip() or not name.strip():
        problem = "leading or trailing blanks"
    elif os.path.isabs(name) or name.startswith("~"):
        problem = "an absolute path"
    elif "/" in name or "\\" in name or (os.altsep and os.altsep in name) or os.sep in name:
        problem = "a path separator"
    elif ".." in name:
        problem = "'..'"
    elif ":" in name or "\0" in name:
        problem = "a drive or stream separator ':'" if ":" in name else "a NUL character"
    elif name in (".yml", "."):
        problem = "no name"
    if problem is not None:
        raise ConfigNameError(f"config={name!r} is refused: it contains {problem}; {allowed}")
    return os.path.join(folder, _with_suffix(name))


def check_writable(resolved: str | None) -> None:
    """Raise :class:`ConfigWriteError` now if saves of ``resolved`` would fail later.

    Saves create a temp file next to the config and replace the config with
    it, so the folder must accept new files (tried for real: ``os.access``
    misleads root and ACLs). A read-only config file is refused too: someone
    marked it so on purpose. The config folder itself is created if missing.
    """
    if resolved is None:
        return
    folder = os.path.dirname(os.path.abspath(resolved))
    what = f"config file {resolved}"
    if not os.path.exists(folder) and folder == config_dir():
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ConfigWriteError(f"cannot create the config folder {folder} for {what}: {exc.strerror}",
                                   resolved, exc) from exc
    if not os.path.isdir(folder):
        state = "does not exist" if not os.path.lexists(folder) else "is not a folder"
        raise ConfigWriteError(f"cannot save {what}: its folder {folder} {state}", resolved)
    if os.path.lexists(resolved):
        if not os.path.isfile(resolved):
            raise ConfigWriteError(f"cannot save {what}: it exists and is not a regular file", resolved)
        if not os.access(resolved, os.W_OK):
            raise ConfigWriteError(f"cannot save {what}: the file is read-only (make it writable, "
                                   "or use config=None for an in-memory config)", resolved)
    probe = _temp_name(resolved)  # named like a save's temp file: cleaned up if we die right here
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigWriteError(f"cannot save {what}: no new file can be created in its folder {folder} "
                               f"({exc.strerror}); saves write a temp file there and replace the config with it",
                               resolved, exc) from exc
    os.close(fd)
    os.unlink(probe)


# -- files ------------------------------------------------------------------------------------
def _temp_name(path: str) -> str:
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}")


def _fsync_dir(folder: str) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: str, data: bytes, sync_folder: bool = True) -> None:
    """``path`` holds either its old content or all of ``data``, whatever happens meanwhile."""
    temp = _temp_name(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if sync_folder:
        _fsync_dir(os.path.dirname(path))


def _state(path: str, load: Any) -> str:
    """``good`` (a non-empty YAML mapping), ``missing``, ``empty`` or ``invalid``."""
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "invalid"
    if not content.strip():
        return "empty"
    try:
        data = load(content)
    except Exception:
        return "invalid"
    if data is None or (isinstance(data, Mapping) and not data):
        return "empty"
    return "good" if isinstance(data, Mapping) else "invalid"


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _pid_alive(pid: int, age: float) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate it on Windows
        return age < _STALE_TEMP_AGE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_temps(path: str) -> None:
    """Temp files of writers killed mid-save (ours are named ``.<name>.yml.<pid>.<hex>.tmp``)."""
    folder, base = os.path.split(path)
    prefix = f".{base}."
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return
    now = time.time()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TEMP_SUFFIX)):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        temp = os.path.join(folder, name)
        try:
            age = now - os.path.getmtime(temp)
            if not _pid_alive(int(pid_text), age):
                os.unlink(temp)
                logger.info("removed %s, left by a writer killed while saving %s", temp, path)
        except OSError:
            pass


def _when(path: str) -> str:
    try:
        return datetime.datetime.fromtimestamp(os.path.getmtime(path)).isoformat(sep=" ", timespec="seconds")
    except OSError:
        return "?"


def _recover(filename: str, memory: types.ModuleType) -> None:
    """Before PyRPL opens ``filename``: restore a lost or broken YAML from a good ``.bak``."""
    head, tail = os.path.split(_with_suffix(filename))
    for folder in dict.fromkeys([head, memory.user_config_dir]):  # PyRPL's search order
        path = os.path.join(folder, tail)
        backup = path + BACKUP_SUFFIX
        if not (os.path.lexists(path) or os.path.lexists(backup)):
            continue
        _remove_stale_temps(path)
        _remove_stale_temps(backup)
        state = _state(path, memory.load)
        if state == "good":
            return
        backup_state = _state(backup, memory.load)
        if backup_state == "good":
            if state == "invalid":
                with contextlib.suppress(OSError):
                    os.replace(path, path + ".invalid")
                    logger.warning("kept the unparseable config file %s as %s.invalid", path, path)
            with open(backup, "rb") as f:
                _write_atomic(path, f.read())
            logger.warning("config file %s was %s; restored it from its backup %s (saved %s)",
                           path, state, backup, _when(backup))
        elif os.path.lexists(backup):
            logger.warning("config file %s is %s and its backup %s is %s: nothing to restore, "
                           "PyRPL starts from %s as it is", path, state, backup, backup_state, path)
        elif state == "invalid":
            logger.warning("config file %s cannot be parsed and has no backup %s", path, backup)
        return


def _create_exact(path: str, source: Any, memory: types.ModuleType) -> None:
    """An absolute path that does not exist yet: create it there (from ``source`` if found)."""
    content = b""
    if source is not None:
        found = memory._get_filename(source)
        if os.path.isfile(found):
            with open(found, "rb") as f:
                content = f.read()
            logger.debug("config file %s created from source %s", path, found)
    _write_atomic(path, content)


# -- the patched MemoryTree --------------------------------------------------------------------
def _save_tree(tree: Any, path: str, memory: types.ModuleType) -> None:
    data = memory.save(tree._data)  # serialise first: a dump error must touch no file
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
        logger.warning("config file %s disappeared from the disk; writing it again", path)
    backup = path + BACKUP_SUFFIX
    if st is not None:
        if st.st_mtime != getattr(tree, "_mtime", None):
            logger.warning("config file %s was changed on the disk since PyRPL read it; "
                           "this save overwrites those changes (the previous file is kept as %s)", path, backup)
        state = "good" if _stat_key(st) == tree.__dict__.get(_GOOD_ATTR) else _state(path, memory.load)
        if state == "good":
            with open(path, "rb") as f:
                _write_atomic(backup, f.read(), sync_folder=False)  # the config's own replace syncs the folder
        elif state == "invalid" or os.path.lexists(backup):
            logger.warning("config file %s is %s: not copied over the backup %s", path, state, backup)
    _write_atomic(path, data)
    st = os.stat(path)
    tree._mtime = st.st_mtime
    if tree._data:
        tree.__dict__[_GOOD_ATTR] = _stat_key(st)
    else:
        tree.__dict__.pop(_GOOD_ATTR, None)


def _write_error(path: str, exc: BaseException) -> ConfigWriteError:
    folder = os.path.dirname(os.path.abspath(path))
    cause = exc if isinstance(exc, OSError) else None
    reason = cause.strerror if cause is not None and cause.strerror else f"{type(exc).__name__}: {exc}"
    return ConfigWriteError(
        f"could not save config file {path} (folder {folder}): {reason}. The settings are kept in memory "
        "and saved at the next change once the file can be written; the previous file is unchanged",
        path, cause)


def install(memory: types.ModuleType, record: PatchRecord) -> None:
    """Patch ``pyrpl.memory`` (post-import hook; idempotent through the record)."""
    from ..runtime import loop

    cls = memory.MemoryTree
    if getattr(cls.__dict__.get("_save"), _MARK, False):
        return
    previous_write = cls.__dict__["_write_to_file"]
    original_save = cls.__dict__["_save"]
    original_get_config_file = memory.get_config_file

    def _write_to_file(self: Any) -> None:
        timer = getattr(self, "_savetimer", None)
        if timer is not None and timer.isActive():
            timer.stop()
        self._lastsave = memory.time()
        self._write_to_file_counter += 1
        path = self._filename
        if path is None:
            return
        logger.debug("saving config file %s", path)
        try:
            _save_tree(self, path, memory)
        except Exception as exc:
            error = _write_error(path, exc)
            self.__dict__[_ERROR_ATTR] = error
            if loop.in_loop_thread():
                logger.error("%s (the next config change from your code raises this error)", error)
            raise error from exc
        self.__dict__.pop(_ERROR_ATTR, None)

    def _save(self: Any, deadtime: Any = None) -> Any:
        if self.__dict__.get(_ERROR_ATTR) is not None and not loop.in_loop_thread():
            self._write_to_file()  # the background save failed: try now, and raise here if it fails again
        return original_save(self, deadtime)

    def get_config_file(filename: Any = None, source: Any = None) -> Any:
        if isinstance(filename, str) and filename:
            path = _with_suffix(filename)
            _recover(path, memory)
            folder = os.path.dirname(path)
            if (os.path.isabs(path) and not os.path.lexists(path) and os.path.isdir(folder)
                    and os.path.realpath(folder) != os.path.realpath(memory.user_config_dir)):
                _create_exact(path, source, memory)
        return original_get_config_file(filename, source)

    for func, original in ((_write_to_file, previous_write), (_save, original_save),
                           (get_config_file, original_get_config_file)):
        func.__wrapped__ = original  # type: ignore[attr-defined]
        func.__doc__ = original.__doc__
        setattr(func, _MARK, True)
    record.patch_attribute(cls, "_write_to_file", _write_to_file,
                           "atomic config save (temp file, fsync, os.replace), the previous good file kept as "
                           ".bak; a failure raises ConfigWriteError naming the file (the board lock is taken "
                           "by rpl_noqt.runtime.threadsafe's wrapper)")
    if getattr(previous_write, "_rpl_noqt_locked", False):  # the lock hook ran first: lock ours too
        from ..runtime.threadsafe import _patch_memory_writes

        _patch_memory_writes(memory, record)
    record.patch_attribute(cls, "_save", _save,
                           "after a background save failed, the next config change from a user thread saves "
                           "at once and raises the ConfigWriteError")
    record.patch_attribute(memory, "get_config_file", get_config_file,
                           "a missing/empty/unparseable config is restored from a good .bak (WARNING); an absolute "
                           "path that does not exist yet is created exactly there")
