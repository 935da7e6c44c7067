"""One outage of a board link, from the first failure to the first success.

The client reports every failure and every reconnect attempt here; the
episode decides what reaches the log: at most ``policy.log_lines`` lines per outage, the last of
them saying that the rest is suppressed, then one line when the link is
back. A 10 s outage logs a handful of lines, not thousands.
"""

from __future__ import annotations

import logging
import time

from .policy import LinkPolicy

__all__ = ("FaultEpisode",)


class FaultEpisode:
    """Book-keeping of the current outage of one link (not thread-safe: used under the board lock)."""

    def __init__(self, board: str, policy: LinkPolicy, logger: logging.Logger) -> None:
        self.board = board
        self.policy = policy
        self.logger = logger
        self.since: float | None = None  # monotonic time of the first failure; None: link up
        self.attempts = 0  # reconnect attempts in this outage
        self.failed_requests = 0
        self.server_restarted = False
        self._lines = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failure(self, what: str) -> None:
        """A request or a connect attempt failed: open the episode (or continue it) and log."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self.log(logging.WARNING, "board %s: %s; retrying", self.board, what)
        else:
            self.log(logging.WARNING, "link to board %s still down after %.1f s: %s",
                     self.board, now - self.since, what)

    def attempted(self) -> None:
        """A reconnect attempt is being made."""
        self.attempts += 1

    def request_failed(self) -> None:
        self.failed_requests += 1

    def recovered(self) -> None:
        """A request succeeded: close the episode with one line (if there was one)."""
        if self.since is None:
            return
        self.logger.warning(
            "link to board %s is back after %.1f s (%d request(s) failed, %d reconnect attempt(s))",
            self.board, time.monotonic() - self.since, self.failed_requests, self.attempts)
        self.since = None
        self.attempts = 0
        self.failed_requests = 0
        self.server_restarted = False
        self._lines = 0

    def log(self, level: int, message: str, *args: object) -> None:
        """Log within this episode's budget of lines."""
        limit = self.policy.log_lines
        if self._lines < limit - 1:
            self.logger.log(level, message, *args)
        elif self._lines == limit - 1:
            self.logger.log(level, message + " (further messages about this outage are suppressed until the "
                            "link is back)", *args)
        self._lines += 1
