"""The Qt-free runtime: what PyRPL runs on instead of Qt, and what makes it safe from any thread.

One job per module:

* :mod:`.activation`: the import-time switch (``import rpl_noqt.auto``):
  installs everything below, idempotent and reversible, with a record of
  what was patched;
* :mod:`.importer`: serves PyRPL the Qt stand-ins (``rpl_noqt.shims``) for
  the names it imports, and user lockbox modules too;
* :mod:`.patching`: the patch record (what was replaced, by what, why);
* :mod:`.signals`: the typed ``Signal`` PyRPL's modules emit on (Qt's
  connection types, weak references, queued delivery);
* :mod:`.loop`, :mod:`.futures`, :mod:`.blocking`: one background event
  loop for PyRPL's coroutines and timers, and blocking waits from any
  thread that release the board meanwhile;
* :mod:`.locks`: one fair, reentrant lock per board;
* :mod:`.threadsafe`: puts every board access behind that lock and the
  board link of :mod:`rpl_noqt.board`;
* :mod:`.deferred`: widgets and pyqtgraph load only when really used;
* :mod:`.lockin`: ``Iq.lockin_xy()``, the lock-in reading PyRPL lacks.

The board transport lives in :mod:`rpl_noqt.board`, the simulator in
:mod:`rpl_noqt.sim`, remote sessions in :mod:`rpl_noqt.remote`.
"""
