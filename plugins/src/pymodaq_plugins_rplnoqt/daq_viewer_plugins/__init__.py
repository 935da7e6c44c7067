"""Detector plugins (PyMoDAQ viewers), by dimension in ``plugins_0D`` and ``plugins_1D``."""
