"""Activation and scoping, each in a fresh interpreter (import state is global)."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os

import pytest

# Blocks every Qt binding, as on a machine where none is installed.
BLOCK_QT = r'''
import sys
class _NoQt:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("PyQt5", "PyQt6", "PySide2", "PySide6"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, _NoQt())
'''


def _last_json(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_plain_import_changes_nothing(run_python):
    out = _last_json(run_python(r'''
import sys, json, threading
before = list(sys.meta_path)
import rpl_noqt, rpl_noqt.cli
print(json.dumps({"meta_path_same": sys.meta_path == before, "pyrpl": "pyrpl" in sys.modules,
                  "threads": threading.active_count(), "active": rpl_noqt.is_active(),
                  "records": len(rpl_noqt.patch_record())}))
'''))
    assert out == {"meta_path_same": True, "pyrpl": False, "threads": 1, "active": False, "records": 0}


def test_without_any_qt_binding_pyrpl_imports_and_runs(run_python):
    proc = run_python(BLOCK_QT + r'''
import json, threading
try:
    import qtpy  # the real qtpy finds no binding, as on a headless machine
    real_qtpy = "importable"
except Exception as exc:
    real_qtpy = type(exc).__name__
import rpl_noqt.auto
import pyrpl
p = pyrpl.Pyrpl(config="", hostname="_FAKE_REDPITAYA_", gui=False)
p.rp.asg0.frequency = 1000.0
freq = p.rp.asg0.frequency
trace = p.rp.scope.single(timeout=10)
p._clear()
print(json.dumps({"real_qtpy": real_qtpy, "freq": freq, "shape": list(trace.shape),
                  "qt_loaded": [m for m in sys.modules if m.partition(".")[0] in ("PyQt5", "PySide6")]}))
''')
    out = _last_json(proc)
    assert out["real_qtpy"] == "QtBindingsNotFoundError"
    assert abs(out["freq"] - 1000.0) < 0.1
    assert out["shape"] == [2, 16384]
    assert out["qt_loaded"] == []


def test_activate_is_idempotent_and_the_record_names_what_was_replaced(run_python):
    out = _last_json(run_python(r'''
import json, sys
import rpl_noqt
first = rpl_noqt.activate()
import rpl_noqt.auto
second = rpl_noqt.activate()
import pyrpl
text = str(rpl_noqt.patch_record())
redirectors = [f for f in sys.meta_path if type(f).__name__ == "PyrplImportRedirector"]
print(json.dumps({"same": first is second, "redirectors": len(redirectors), "text": text}))
'''))
    assert out["same"] and out["redirectors"] == 1
    for expected in ("qtpy -> rpl_noqt.shims.qtpy", "pyrpl.async_utils -> rpl_noqt.shims.async_utils",
                     "pyrpl.widgets.*", "pyrpl.memory.MemoryTree.__init__", "SignalLauncher"):
        assert expected in out["text"]


def test_pyrpl_imported_first_with_real_qt_gives_a_clear_error(run_python):
    proc = run_python(r'''
import pyrpl
import rpl_noqt
try:
    rpl_noqt.activate()
except rpl_noqt.errors.ActivationError as exc:
    print("ERROR:", exc)
''', env={"QT_QPA_PLATFORM": "offscreen"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pyrpl was imported before rpl_noqt was activated" in proc.stdout
    assert "PyQt5" in proc.stdout and "import rpl_noqt.auto" in proc.stdout


def test_untested_pyrpl_version_is_refused(run_python, tmp_path):
    fake = tmp_path / "fake_site" / "pyrpl"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "_version.py").write_text("__version_info__ = (0, 9, 3, 0)\n")
    proc = run_python(r'''
import sys
sys.path.insert(0, "FAKE")
import rpl_noqt
try:
    rpl_noqt.activate()
except rpl_noqt.errors.UnsupportedPyrplVersionError as exc:
    print("REFUSED:", exc)
'''.replace("FAKE", str(tmp_path / "fake_site")))
    assert "REFUSED: pyrpl 0.9.3.0 is installed" in proc.stdout, proc.stderr[-2000:]
    assert "pip install pyrpl==0.9.9.1" in proc.stdout


def test_gui_requests_raise_a_clear_error(run_python):
    proc = run_python(r'''
import rpl_noqt.auto, pyrpl
from rpl_noqt.errors import GuiUnavailableError
try:
    pyrpl.Pyrpl(config="", hostname="_FAKE_REDPITAYA_")  # upstream default gui=True
except GuiUnavailableError as exc:
    print("GUI:", exc)
''')
    assert "GUI: PyRPL requested the GUI element PyrplWidget" in proc.stdout, proc.stderr[-2000:]
    assert "gui=False" in proc.stdout


def test_prompts_on_stdin_become_errors(run_python):
    proc = run_python(r'''
import rpl_noqt.auto, pyrpl
try:
    pyrpl.Pyrpl(config=None, hostname="_FAKE_REDPITAYA_", gui=False)
except rpl_noqt.runtime.importer.PromptRefused as exc:
    print("PROMPT:", exc)
''')
    assert "PROMPT: PyRPL asked on stdin: 'Enter an existing or new config file name:'" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.qt
def test_real_qt_keeps_working_beside_qt_free_pyrpl(run_python):
    """PyMoDAQ-style: PyQt5 and a QApplication alive; PyRPL makes no QObject."""
    pytest.importorskip("PyQt5")
    out = _last_json(run_python(r'''
import gc, json, sys
from PyQt5 import QtCore, QtWidgets
app = QtWidgets.QApplication(["host"])
def qobjects():
    return sum(1 for o in gc.get_objects() if isinstance(o, QtCore.QObject))
import qtpy.QtCore
fired = []
host_timer = QtCore.QTimer(); host_timer.setSingleShot(True)
host_timer.timeout.connect(lambda: fired.append("host"))
before = qobjects()
import rpl_noqt.auto, pyrpl
p = pyrpl.Pyrpl(config="", hostname="_FAKE_REDPITAYA_", gui=False)
p.rp.pid0.setpoint = 0.1
trace = p.rp.scope.single(timeout=10)
after = qobjects()
host_timer.start(10)
deadline = QtCore.QDeadlineTimer(3000)
while not fired and not deadline.hasExpired():
    app.processEvents(QtCore.QEventLoop.AllEvents, 50)
from pyrpl.modules import SignalLauncher
result = {
    "qobjects_added_by_pyrpl": after - before,
    "launcher_is_qobject": issubclass(SignalLauncher, QtCore.QObject),
    "qtpy_is_real": qtpy.QtCore.QObject is QtCore.QObject,
    "app_is_host": QtWidgets.QApplication.instance() is app,
    "host_timer_fired": fired,
    "pyrpl_app_is_real": isinstance(pyrpl.APP, QtCore.QObject),
    "shape": list(trace.shape),
}
p._clear()
print(json.dumps(result))
''', env={"QT_QPA_PLATFORM": "offscreen"}))
    assert out == {"qobjects_added_by_pyrpl": 0, "launcher_is_qobject": False, "qtpy_is_real": True,
                   "app_is_host": True, "host_timer_fired": ["host"], "pyrpl_app_is_real": False,
                   "shape": [2, 16384]}


def test_installed_pyrpl_files_match_the_wheel_record(pyrpl_module):
    """The shim never edits PyRPL: every file still has the hash in RECORD."""
    site = os.path.dirname(os.path.dirname(pyrpl_module.__file__))
    dist = next(d for d in os.listdir(site) if d.startswith("pyrpl-") and d.endswith(".dist-info"))
    checked = 0
    with open(os.path.join(site, dist, "RECORD"), newline="") as f:
        for path, digest, _size in csv.reader(f):
            if not digest or not path.startswith("pyrpl/"):
                continue
            algo, _, expected = digest.partition("=")
            with open(os.path.join(site, path), "rb") as data:
                actual = base64.urlsafe_b64encode(hashlib.new(algo, data.read()).digest()).rstrip(b"=").decode()
            assert actual == expected, f"{path} differs from the wheel"
            checked += 1
    assert checked > 100


def test_paramiko_is_deferred_until_pyrpl_uses_ssh(run_python):
    out = _last_json(run_python(r'''
import json, sys
import rpl_noqt.auto, pyrpl
p = pyrpl.Pyrpl(config="", hostname="_FAKE_REDPITAYA_", gui=False)
loaded_before = "paramiko" in sys.modules
import pyrpl.redpitaya as rp_mod, pyrpl.sshshell as ssh_mod
placeholder_repr = repr(rp_mod.SSHException)
client_cls = ssh_mod.paramiko.SSHClient          # first real use loads paramiko
import paramiko
print(json.dumps({"loaded_before": loaded_before, "placeholder": placeholder_repr,
                  "rebound": rp_mod.SSHException is paramiko.SSHException,
                  "is_exception": issubclass(rp_mod.SSHException, BaseException),
                  "client": client_cls is paramiko.SSHClient}))
'''))
    assert out == {"loaded_before": False, "placeholder": "<deferred paramiko.SSHException>",
                   "rebound": True, "is_exception": True, "client": True}


def test_patches_command_prints_the_record(run_python):
    proc = run_python("import sys; from rpl_noqt.cli import main; sys.exit(main(['patches']))")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "patch(es) applied" in proc.stdout and "pyrpl.async_utils -> rpl_noqt.shims.async_utils" in proc.stdout
    assert "paramiko -> rpl_noqt.runtime.deferred.DeferredModule" in proc.stdout


def test_qt_submodules_we_do_not_model_are_gui_placeholders_either_way(run_python):
    # pyrpl's widget tests write both 'from qtpy.QtTest import QTest' and
    # 'from qtpy import QtTest'; both must import, and using either is a GUI request
    proc = run_python(BLOCK_QT + r'''
import json, rpl_noqt, pyrpl
from rpl_noqt.errors import GuiUnavailableError
from rpl_noqt.runtime.importer import PyrplImportRedirector
redirector = next(f for f in sys.meta_path if isinstance(f, PyrplImportRedirector))
qtpy = redirector._scoped_import("qtpy", {"__name__": "pyrpl.test.x"}, None, ("QtCore", "QtTest"), 0)
sub = redirector._scoped_import("qtpy.QtTest", {"__name__": "pyrpl.test.y"}, None, ("QTest",), 0)
try:
    qtpy.QtTest.QTest.mouseClick(None, None)
    raised = False
except GuiUnavailableError:
    raised = True
print(json.dumps({"same": qtpy.QtTest is sub, "raised": raised, "qtcore": qtpy.QtCore.__name__}))
'''.replace("import json, rpl_noqt, pyrpl", "import json, rpl_noqt\nrpl_noqt.activate()\nimport pyrpl"))
    out = _last_json(proc)
    assert out == {"same": True, "raised": True, "qtcore": "rpl_noqt.shims.qtcore"}


def test_user_lockbox_models_are_served_the_stand_ins_when_the_user_dir_is_set_late(run_python, tmp_path):
    """A notebook activates first, then sets PYRPL_USER_DIR: its lockbox models still get no real Qt."""
    late = tmp_path / "late_user_dir"
    (late / "lockbox").mkdir(parents=True)
    (late / "lockbox" / "my_cavity.py").write_text(
        "from qtpy import QtCore\n"
        "from pyrpl.software_modules.lockbox import Lockbox\n"
        "class MyCavity(Lockbox):\n"
        "    pass\n", encoding="utf-8")
    code = f"""
import os, sys
import rpl_noqt.auto
os.environ["PYRPL_USER_DIR"] = {str(late)!r}
import pyrpl
mod = sys.modules["my_cavity"]
print(mod.QtCore.__name__)
print(issubclass(mod.MyCavity, pyrpl.software_modules.lockbox.Lockbox))
print(sorted(m for m in sys.modules if m.startswith(("PyQt", "PySide"))))
"""
    proc = run_python(code, env={"QT_API": "pyqt5"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-3].startswith("rpl_noqt.shims"), lines
    assert lines[-2:] == ["True", "[]"], lines
