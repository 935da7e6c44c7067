"""Which pyrpl versions rpl_noqt is tested with, checked without importing pyrpl.

The shim stands in for the exact Qt surface of these versions (every call site
is listed in docs/qt-surface.md); another version may use Qt in places we do
not serve, so we refuse it loudly instead of failing somewhere deep inside.
"""

from __future__ import annotations

import importlib.machinery
import os
import re

from .errors import UnsupportedPyrplVersionError

__all__ = ("TESTED_PYRPL_VERSIONS", "check_pyrpl_version", "installed_pyrpl_version")

#: Versions whose whole Qt surface is covered and tested in CI.
TESTED_PYRPL_VERSIONS: tuple[str, ...] = ("0.9.9.1",)

#: Escape hatch for trying a new release before it is tested (logged loudly).
ALLOW_UNTESTED_ENV = "RPL_NOQT_ALLOW_UNTESTED_PYRPL"


def installed_pyrpl_version() -> str | None:
    """The installed pyrpl's version, or None if not installed.

    Read from ``pyrpl/_version.py`` as text: importing pyrpl is what we must
    not do yet, and ``importlib.metadata`` costs more than the rest of
    activation together.
    """
    spec = importlib.machinery.PathFinder.find_spec("pyrpl")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "_version.py")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(r"__version_info__\s*=\s*\(([\d,\s]+)\)", text) or re.search(
        r"__version__\s*=\s*[\"']([^\"']+)[\"']", text
    )
    if match is None:
        return None
    raw = match.group(1)
    return ".".join(p.strip() for p in raw.split(",") if p.strip()) if "," in raw else raw


def check_pyrpl_version() -> str:
    """Return the installed pyrpl version or raise if it is missing or untested."""
    version = installed_pyrpl_version()
    if version is None:
        raise UnsupportedPyrplVersionError(
            "pyrpl is not installed; rpl_noqt needs pyrpl=="
            + " or ==".join(TESTED_PYRPL_VERSIONS)
            + " (pip install rpl-noqt installs it)"
        )
    if version not in TESTED_PYRPL_VERSIONS and not os.environ.get(ALLOW_UNTESTED_ENV):
        raise UnsupportedPyrplVersionError(
            f"pyrpl {version} is installed, but rpl_noqt is tested only with pyrpl "
            f"{', '.join(TESTED_PYRPL_VERSIONS)}. Install a tested version "
            f"(pip install pyrpl=={TESTED_PYRPL_VERSIONS[-1]}) or set "
            f"{ALLOW_UNTESTED_ENV}=1 to try it at your own risk."
        )
    return version
