"""Which pyrpl versions rpl_noqt is tested with, checked without importing pyrpl.

The shim stands in for the exact Qt surface of these versions (every call site
is listed in docs/qt-surface.md); another version may use Qt in places we do
not serve, so we refuse it loudly instead of failing somewhere deep inside.
"""

from __future__ import annotations

import os
from importlib import metadata

from .errors import UnsupportedPyrplVersionError

__all__ = ("TESTED_PYRPL_VERSIONS", "check_pyrpl_version", "installed_pyrpl_version")

#: Versions whose whole Qt surface is covered and tested in CI.
TESTED_PYRPL_VERSIONS: tuple[str, ...] = ("0.9.9.1",)

#: Escape hatch for trying a new release before it is tested (logged loudly).
ALLOW_UNTESTED_ENV = "RPL_NOQT_ALLOW_UNTESTED_PYRPL"


def installed_pyrpl_version() -> str | None:
    """The installed pyrpl distribution's version, or None if not installed."""
    try:
        return metadata.version("pyrpl")
    except metadata.PackageNotFoundError:
        return None


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
