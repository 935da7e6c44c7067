"""``rpl-noqt compat``: PyRPL's own test suite under the shim, on the simulator.

* :mod:`.runner` runs each test file of the installed pyrpl in its own pytest
  subprocess (per-test and per-file time limits, a total budget), against a
  simulator subprocess of its own, or the upstream way (real Qt, dummy board);
* :mod:`.plugin` is the pytest plugin loaded into those subprocesses (it
  activates the shim first, applies the GUI rule and logs results);
* :mod:`.results` turns the logs into per-test and per-file results;
* :mod:`.report` prints the table and writes the JSON and JUnit XML reports;
* :mod:`.expected` compares a run with ``expected.json`` (CI regressions).

Importing this package activates nothing.
"""
