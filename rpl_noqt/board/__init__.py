"""The board layer: what stands between PyRPL and a Red Pitaya.

* :mod:`.policy`: timeouts and reconnects as one :class:`LinkPolicy` object;
* :mod:`.client`: the monitor-server client that replaces PyRPL's
  ``MonitorClient`` (deadlines, validated replies, one error type);
* :mod:`.configfile`: config files that are never lost (atomic saves,
  ``.bak`` recovery, names confined to the config folder);
* :mod:`.values`: bad values refused before they reach a register.
"""
