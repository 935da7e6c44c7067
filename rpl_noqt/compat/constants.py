"""Names shared by the compat plugin (which activates the shim at import) and
the runner (which must not)."""

from __future__ import annotations

#: reason prefix of a test the GUI rule turned into a skip
NOT_APPLICABLE = "rpl-noqt: not applicable (no Qt)"
#: how pytest-timeout (signal method) words the failure of a test out of time:
#: "Timeout (>2.0s) from pytest-timeout." (2.4) or "Timeout >2.0s" (older)
TIMEOUT_PREFIXES = ("Timeout (>", "Timeout >")
#: env var naming the JSON-lines result log the plugin appends to
LOG_ENV = "RPL_NOQT_COMPAT_LOG"
