"""``aio.connect()`` and ``AsyncManager``: the resource API of ``proxyshare.connect()``, awaited.

    async with aio.connect("127.0.0.1:50000", authkey=key) as mgr:
        hits = await mgr.counter("hits")        # get-or-create, as for the sync manager
        await hits.increment()

``connect()`` takes what ``proxyshare.connect()`` takes: ``"host:port"``,
``("host", port)``, ``"unix:/path"`` or a ``redis://`` URL; with no
arguments, ``PROXYSHARE_ADDRESS`` and ``PROXYSHARE_AUTHKEY`` (or
``PROXYSHARE_AUTHKEY_FILE``).  It is awaited (``mgr = await aio.connect()``,
then ``await mgr.aclose()``) or used with ``async with``.  Either way the
first connection is made at once, so a wrong address or key fails there.

A manager belongs to the event loop that connected it; open one per loop
(in a web app: in the lifespan startup of each worker process).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Generator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from proxyshare import _protocol as P
from proxyshare import _rules as rules
from proxyshare._address import TlsAddress, check_tls_files, is_redis_url, parse_address
from proxyshare._errors import PipelineFailure
from proxyshare._keys import address_or_env, require_authkey
from proxyshare._pipeline import Batch
from proxyshare._protocol import Op
from proxyshare.aio._proxies import Barrier, Counter, Dict, Event, Lock, Queue, Semaphore
from proxyshare.aio._served import DEFAULT_MAX_CONNECTIONS, ServedTransport

__all__ = ["AsyncManager", "Pipeline", "connect"]

R = TypeVar("R")


class _Backend(Protocol):
    """What a manager needs of its transport: the calls, plus opening and closing."""

    async def call(self, op: Op[R], name: str | None, /, *args: Any) -> R: ...

    def where(self) -> str: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


class AsyncManager:
    """The resources of one server (or Redis), for asyncio code.

    Every method is a coroutine with the sync manager's name, options and
    get-or-create rules: the same name opened as another kind raises
    ``ResourceKindError``.
    """

    def __init__(self, transport: _Backend) -> None:
        self._transport = transport

    @property
    def transport(self) -> _Backend:
        return self._transport

    def __repr__(self) -> str:
        return f"<proxyshare.aio.AsyncManager {self._transport.where()}>"

    async def __aenter__(self) -> AsyncManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection; locks and permits still held are released by the server."""
        await self._transport.aclose()

    # -- resources ------------------------------------------------------------------------

    async def _open(self, name: str, kind: str, options: builtins.dict[str, Any]) -> None:
        await self._transport.call(P.OPEN, rules.check_name(name), kind, options)

    async def counter(self, name: str, initial: int = 0) -> Counter:
        """The counter called ``name``, created with ``initial`` if new."""
        await self._open(name, "counter", {"initial": initial})
        return Counter(self._transport, name)

    async def lock(self, name: str, *, lease: float | None = None) -> Lock:
        """The lock called ``name``: owned by the acquiring task, FIFO, released if it dies.

        ``lease`` (seconds) also releases it when held for longer than that.
        """
        await self._open(name, "lock", {"lease": lease})
        return Lock(self._transport, name)

    async def dict(self, name: str) -> Dict:
        """The dict called ``name``."""
        await self._open(name, "dict", {})
        return Dict(self._transport, name)

    async def queue(self, name: str, maxsize: int = 0) -> Queue:
        """The FIFO queue called ``name`` (``maxsize`` applies when it is created)."""
        await self._open(name, "queue", {"maxsize": maxsize})
        return Queue(self._transport, name)

    async def semaphore(
        self, name: str, value: int = 1, *, lease: float | None = None
    ) -> Semaphore:
        """The semaphore called ``name``; permits are owned by the acquiring task.

        ``lease``: on Redis, where each permit is a lease as a lock is (None: 10 s).
        """
        options: builtins.dict[str, Any] = {"value": value}
        if lease is not None:
            if not getattr(self._transport, "permits_are_leases", False):
                raise TypeError(
                    "semaphore(lease=...) is an option of the Redis backend, where permits "
                    "are leases; a served semaphore gives a holder's permits back when its "
                    "connection drops"
                )
            options["lease"] = lease
        await self._open(name, "semaphore", options)
        return Semaphore(self._transport, name)

    async def event(self, name: str) -> Event:
        """The event called ``name``."""
        await self._open(name, "event", {})
        return Event(self._transport, name)

    async def barrier(self, name: str, parties: int) -> Barrier:
        """The barrier called ``name`` for ``parties`` waiters."""
        await self._open(name, "barrier", {"parties": parties})
        return Barrier(self._transport, name)

    async def delete(self, name: str) -> bool:
        """Delete the resource ``name``; True if it existed."""
        existed = await self._transport.call(P.DELETE, rules.check_name(name))
        return bool(existed)

    async def names(self) -> builtins.dict[str, str]:
        """Every resource: ``{name: kind}``."""
        return await self._transport.call(P.NAMES, None)

    async def status(self) -> builtins.dict[str, Any]:
        """What the server holds and who is connected, as plain data."""
        return await self._transport.call(P.STATUS, None)

    def pipeline(self) -> Pipeline:
        """A batch of operations sent in one round trip: ``async with mgr.pipeline() as p:``."""
        return Pipeline(self._transport)


class Pipeline(Batch):
    """``proxyshare.Pipeline`` for asyncio: record without awaiting, send once.

    >>> async with mgr.pipeline() as p:                # doctest: +SKIP
    ...     p.counter("hits").increment()              # recorded, not awaited
    ...     p.dict("stats").increment("calls")
    >>> p.results                                      # doctest: +SKIP
    [1, 1]

    The semantics are the sync pipeline's (see ``proxyshare._pipeline``): the
    batch runs atomically and in order at the end of the block, results come
    from ``execute()``/``results``, and a failure raises ``PipelineError``.
    """

    def __init__(self, transport: _Backend) -> None:
        super().__init__()
        self._transport = transport

    async def execute(self) -> list[Any]:
        """Send the queued operations; return their results in order."""
        requests = self._take()
        if not requests:
            return self.results
        try:
            self.results = await self._transport.call(P.PIPELINE, None, requests)
        except PipelineFailure as failure:
            raise self._failed(failure) from failure.error
        return self.results

    async def __aenter__(self) -> Pipeline:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.execute()
        else:
            self._take()


class _Connecting:
    """What ``connect()`` returns: awaited, or entered with ``async with``."""

    def __init__(self, backend: _Backend) -> None:
        self._manager = AsyncManager(backend)

    async def _start(self) -> AsyncManager:
        try:
            await self._manager.transport.start()
        except BaseException:
            await self._manager.aclose()
            raise
        return self._manager

    def __await__(self) -> Generator[Any, None, AsyncManager]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncManager:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._manager.aclose()


def connect(
    target: object = None,
    authkey: bytes | str | None = None,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> _Connecting:
    """Connect to a running server (or Redis); ``await`` it or use ``async with``.

    ``target``: ``"host:port"``, ``("host", port)``, ``"unix:/path"`` or a
    ``redis://`` URL; without it ``PROXYSHARE_ADDRESS``.  ``authkey``: without
    it ``PROXYSHARE_AUTHKEY`` or the file named by ``PROXYSHARE_AUTHKEY_FILE``.
    ``max_connections``: how many connections calls that cannot wait share
    (a call that may wait, and a task that holds a lock, get their own).
    ``tls_ca``/``tls_cert``/``tls_key``: for a ``tls://host:port`` target, as
    for :func:`proxyshare.connect` (else ``PROXYSHARE_TLS_CA``/``_CERT``/``_KEY``).

    >>> async with aio.connect("127.0.0.1:50000", authkey=b"secret") as mgr:  # doctest: +SKIP
    ...     await (await mgr.counter("hits")).increment()
    """
    target = address_or_env(target)
    if is_redis_url(target):
        return _Connecting(_redis_backend(target))
    address = parse_address(target)
    check_tls_files(address, tls_ca, tls_cert, tls_key)
    files = None
    if isinstance(address, TlsAddress):
        from proxyshare._tls import client_files

        files = client_files(tls_ca, tls_cert, tls_key)  # the environment fills the gaps
    backend = ServedTransport(
        address, require_authkey(authkey), max_connections=max_connections, tls=files
    )
    return _Connecting(backend)


def _redis_backend(url: str) -> _Backend:
    from proxyshare.aio._redis import RedisAsyncTransport

    return RedisAsyncTransport(url)
