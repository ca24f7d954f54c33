"""The declared interface between the proxies and whatever carries an operation.

    proxy method ──▶ Transport.call(op, name, *args) ──▶ the served connection (_client)
    (written once,      one row of _protocol's table     shared memory (_backends.shm)
     _proxies)                                           Redis (_backends.redis)
                                                         a pipeline's recorder (_pipeline)
    aio proxy ─────▶ AsyncTransport.call(...)  ─────────▶ asyncio connections (aio)

A transport is small and picklable: a proxy is ``(transport, name)`` and
pickles as exactly that, so whatever a transport needs to reach its
resources in another process (an address and a key, a file path, a URL)
travels inside it, and nothing heavy is imported when it is unpickled.
Transports compare equal when they reach the same resources, so proxies do.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from proxyshare._protocol import Op

__all__ = ["AsyncTransport", "Transport"]

R = TypeVar("R")


class Transport(Protocol):
    """Runs one operation of the table on a named resource, and returns its result.

    Raises the operation's own errors (``KeyError``, ``queue.Empty``, ...) and
    proxyshare's errors; a lost connection is ``ServerUnavailableError``.
    """

    def call(self, op: Op[R], name: str, /, *args: Any) -> R: ...

    def where(self) -> str:
        """Where the resources live, as shown to users (never a secret)."""
        ...


class AsyncTransport(Protocol):
    """The asyncio form of :class:`Transport`: the same table, awaited."""

    async def call(self, op: Op[R], name: str, /, *args: Any) -> R: ...

    def where(self) -> str: ...
