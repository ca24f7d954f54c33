"""The proxyshare exception tree.

    ProxyShareError                      base of everything proxyshare raises
     ├── ResourceKindError               name already used for another kind
     ├── NotOwnerError                   release() by a caller that does not hold it
     ├── UnshareableArgumentError        (also TypeError) argument cannot cross processes
     ├── ServerUnavailableError          server gone or unreachable (never a hang)
     ├── AuthenticationError             the server rejected the authkey
     ├── ResourceNotFoundError           (also KeyError) the named resource was deleted
     └── PipelineError                   one operation of a batch failed

Every class is constructible from a message alone, so exceptions pickle
across process boundaries unchanged.  Transport errors from
``multiprocessing``/``socket`` are translated into these in exactly one place:
``proxyshare._client``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "NotOwnerError",
    "PipelineError",
    "ProxyShareError",
    "RemoteTraceback",
    "ResourceKindError",
    "ResourceNotFoundError",
    "ServerUnavailableError",
    "UnshareableArgumentError",
]


class ProxyShareError(Exception):
    """Base class of every error proxyshare raises on purpose."""


class ResourceKindError(ProxyShareError):
    """A name is already used by a resource of another kind.

    >>> mgr.counter("x"); mgr.lock("x")      # doctest: +SKIP
    ResourceKindError: 'x' is a counter, not a lock ...
    """


class NotOwnerError(ProxyShareError):
    """A lock (or semaphore permit) was released by a caller that does not hold it."""


class UnshareableArgumentError(ProxyShareError, TypeError):
    """An argument cannot be sent to another process; the message says what to use."""


class ServerUnavailableError(ProxyShareError):
    """The server is gone or cannot be reached; raised within seconds, never a hang."""


class AuthenticationError(ProxyShareError):
    """The server rejected the authkey (or the peer is not a proxyshare server)."""


class ResourceNotFoundError(ProxyShareError, KeyError):
    """The named resource does not exist (it was deleted, or the server restarted)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PipelineError(ProxyShareError):
    """Operation ``index`` of a pipeline failed; ``results`` holds the earlier ones.

    Operations before ``index`` were applied, the failing one and those after it
    were not.  The original error is ``__cause__``.
    """

    def __init__(self, message: str, index: int = -1, results: list[Any] | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.results = list(results or [])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0], self.index, self.results))


class RemoteTraceback(Exception):
    """Carries the server-side traceback text; attached as ``__cause__``."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return "\n\n" + self.tb


class PipelineFailure(ProxyShareError):
    """Internal: the wire form of a failed pipeline; the client raises ``PipelineError``."""

    def __init__(self, index: int, results: list[Any], error: BaseException) -> None:
        super().__init__(index, results, error)
        self.index = index
        self.results = results
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.index, self.results, self.error))
