"""What PyRPL is served instead of Qt (installed as ``rpl_noqt.shims``).

Modules here are handed to PyRPL's own modules by :mod:`rpl_noqt.runtime.importer`;
nothing else in the process imports them under Qt's names.

* :mod:`.qtpy`, :mod:`.qtcore`, :mod:`.qtwidgets`, :mod:`.qtgui`: the Qt surface
  PyRPL's non-GUI code uses (QObject, Signal, QTimer, an inert application).
* :mod:`.qasync`, :mod:`.pyqtgraph`: refusals and plot placeholders.
* :mod:`.async_utils`: served as ``pyrpl.async_utils``.
* :mod:`.placeholders`: inert GUI classes and modules (``pyrpl.widgets.*``).
"""
