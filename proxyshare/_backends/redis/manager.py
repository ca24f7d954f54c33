"""``RedisManager``: the ``ShareManager`` resource API, served by Redis.

It hands out the plain proxies of ``proxyshare._proxies`` over a
``RedisTransport``; every method is one operation of the table run through
that transport (``ops/``), so option checks and refusals are the operations'
(and the rulebook's), not this class's.
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any, NoReturn

from proxyshare import _protocol as P
from proxyshare._backends.redis.ops.registry import BARRIERS_UNAVAILABLE, PIPELINES_UNAVAILABLE
from proxyshare._backends.redis.transport import DEFAULT_PREFIX, RedisTransport
from proxyshare._errors import ProxyShareError
from proxyshare._proxies import Counter, Dict, Event, Lock, Queue, Semaphore

if TYPE_CHECKING:
    from proxyshare._api import Manager
    from proxyshare._transport import Transport

__all__ = ["RedisManager"]


class RedisManager:
    """The ``ShareManager`` resource API, served by Redis.

    >>> mgr = proxyshare.connect("redis://127.0.0.1:6379/0")     # doctest: +SKIP
    >>> mgr.counter("hits").increment()                          # doctest: +SKIP
    1

    Every key lives under ``prefix``.  The password comes from the URL or from
    ``PROXYSHARE_REDIS_PASSWORD``; it is never logged or shown in a repr.
    Locks and semaphore permits are leases: ``lease=None`` means 10 s.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *, check: bool = True) -> None:
        self._transport = RedisTransport(url, prefix)
        if check:
            self.ping()  # a wrong address or password fails here, not on first use

    @property
    def transport(self) -> RedisTransport:
        return self._transport

    @property
    def address(self) -> str:
        """The URL without its password."""
        return self._transport.address

    @property
    def prefix(self) -> str:
        return self._transport.prefix

    def __repr__(self) -> str:
        return f"<RedisManager {self._transport.where()}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._transport.url, self._transport.prefix))

    def __enter__(self) -> RedisManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Nothing to stop: the resources live in Redis until deleted."""

    def ping(self) -> None:
        self._transport.call(P.PING, None, None)

    # -- resources --

    def _open(self, name: str, kind: str, options: builtins.dict[str, Any]) -> RedisTransport:
        """Get-or-create ``name`` as a ``kind``; ``options`` apply when it is created."""
        self._transport.call(P.OPEN, name, kind, options)
        return self._transport

    def counter(self, name: str, initial: int = 0, *, shared_memory: bool = False) -> Counter:
        """The counter called ``name``, created with ``initial`` if new (64-bit)."""
        _no_shared_memory(shared_memory)
        return Counter(self._open(name, "counter", {"initial": initial}), name)

    def lock(self, name: str, *, lease: float | None = None, shared_memory: bool = False) -> Lock:
        """The lock called ``name``; ``lease`` (set when it is created, None: 10 s)
        bounds how long a dead holder keeps it."""
        _no_shared_memory(shared_memory)
        return Lock(self._open(name, "lock", {"lease": lease}), name)

    def dict(self, name: str) -> Dict:
        """The dict called ``name`` (a Redis hash; values pickled)."""
        return Dict(self._open(name, "dict", {}), name)

    def queue(self, name: str, maxsize: int = 0) -> Queue:
        """The FIFO queue called ``name`` (``maxsize`` applies when it is created)."""
        return Queue(self._open(name, "queue", {"maxsize": maxsize}), name)

    def semaphore(self, name: str, value: int = 1, *, lease: float | None = None) -> Semaphore:
        """The semaphore called ``name``; each permit is a lease like a lock's."""
        return Semaphore(self._open(name, "semaphore", {"value": value, "lease": lease}), name)

    def event(self, name: str) -> Event:
        """The event called ``name``."""
        return Event(self._open(name, "event", {}), name)

    def barrier(self, name: str, parties: int) -> NoReturn:
        raise ProxyShareError(BARRIERS_UNAVAILABLE)

    def pipeline(self) -> NoReturn:
        raise ProxyShareError(PIPELINES_UNAVAILABLE)

    def delete(self, name: str) -> bool:
        """Delete the resource ``name`` and all its keys; True if it existed."""
        return self._transport.call(P.DELETE, name)

    def names(self) -> builtins.dict[str, str]:
        """Every resource under the prefix: ``{name: kind}``."""
        return self._transport.call(P.NAMES, None)

    def status(self) -> builtins.dict[str, Any]:
        """The served backend's status shape: ``server``, ``clients``, ``resources``."""
        return self._transport.call(P.STATUS, None)


def _no_shared_memory(shared_memory: bool) -> None:
    if shared_memory:
        raise ProxyShareError(
            "shared_memory=True needs a ShareManager on this host; the Redis backend "
            "always goes through Redis"
        )


def _reopen(url: str, prefix: str) -> RedisManager:
    return RedisManager(url, prefix, check=False)


if TYPE_CHECKING:
    # mypy checks that the declared interfaces are met.
    def _is_a_manager(manager: RedisManager) -> Manager:
        return manager

    def _is_a_transport(transport: RedisTransport) -> Transport:
        return transport
