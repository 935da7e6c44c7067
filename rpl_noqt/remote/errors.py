"""Exceptions that only remote sessions raise.

Link trouble is still :class:`rpl_noqt.BoardConnectionError` and a refused
write :class:`rpl_noqt.BoardLockedError` (both in :mod:`rpl_noqt.errors`);
these are about the contract between a client and a server.
"""

from __future__ import annotations

__all__ = ("RegistryMismatchError", "RemoteCallError", "RemoteNameError")


class RemoteNameError(AttributeError):
    """A module, attribute or method that the board server does not offer.

    Raised by the client before sending anything when the name is not in the
    server's registry, and by the server if a request names it anyway.
    """


class RegistryMismatchError(RuntimeError):
    """The server's registry is not one this client can trust.

    Its hash does not match its content, its protocol or PyRPL version is not
    the client's, or it changed while the client was connected (a server
    restarted with another PyRPL), or it is not the hash the caller pinned.
    """


class RemoteCallError(RuntimeError):
    """A call reached the board server and failed there for another reason.

    ``remote_type`` is the exception class name on the server and the message
    is its message: the server sends text, never a pickled exception.
    """

    def __init__(self, message: str, remote_type: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
