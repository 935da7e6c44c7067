"""The plugin package's configuration (``config_rplnoqt.toml`` in PyMoDAQ's config folder).

PyMoDAQ registers ``Config`` under the name ``rplnoqt``; the defaults come from
``resources/config_template.toml`` (board address, input ranges, simulator).
"""

from __future__ import annotations

from pathlib import Path

from pymodaq_utils.config import BaseConfig

__all__ = ("Config",)


class Config(BaseConfig):
    """Defaults of the plugins' board settings, editable by the user."""

    config_template_path = Path(__file__).parent.joinpath("resources", "config_template.toml")
    config_name = "config_rplnoqt"
