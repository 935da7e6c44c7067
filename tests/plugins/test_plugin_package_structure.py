"""PyMoDAQ's own package checks on pymodaq_plugins_rplnoqt, plus discovery through its entry points."""

from __future__ import annotations

from pymodaq.utils.plugin_testing import PluginPackageChecks

PLUGINS = {"move": {"RplAsg", "RplPid"}, "DAQ0D": {"RplIq", "RplSampler"}, "DAQ1D": {"RplScope"}}


class TestPluginPackage(PluginPackageChecks):
    """Layout, entry points, naming, mandatory methods and the static rules, failing on warnings too."""

    package_name = "pymodaq_plugins_rplnoqt"
    fail_on = "warning"
    strict_imports = True


def test_pymodaq_lists_every_plugin() -> None:
    # a plugin module that fails to import is dropped by PyMoDAQ with only a debug log
    from pymodaq.control_modules.instruments import ACTUATOR_NAMES, DET_TYPES

    assert PLUGINS["move"] <= set(ACTUATOR_NAMES)
    for daq_type in ("DAQ0D", "DAQ1D"):
        assert PLUGINS[daq_type] <= {d["name"] for d in DET_TYPES[daq_type]}


def test_check_plugin_report_is_clean() -> None:
    from pymodaq_utils.plugin_tools.checks import check_plugin_package

    report = check_plugin_package("pymodaq_plugins_rplnoqt", fail_on="todo", strict_imports=True)
    assert report.ok, str(report)
    assert len(report.results) == 2 + 5  # layout, sources, five plugin modules
