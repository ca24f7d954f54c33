"""The asyncio proxies: the sync proxies' methods, as coroutines.

Each method is one operation of the table in ``proxyshare._protocol``, awaited
through ``AsyncTransport.call``, exactly as the sync proxies send it through
``Transport.call``: same names, same arguments, same results and errors.
Identity and repr come from the sync side (``proxyshare._proxies._Handle``).

What cannot be a coroutine has a method instead: a dict is read with
``await d.get(k)`` (not ``d[k]``), its length is ``await d.len()``, a
counter's value is ``await c.get()``, a barrier's ``n_waiting``, ``parties``
and ``broken`` are coroutines.

A proxy is bound to its manager's connections, and so to one event loop: it
does not pickle.  Pass the name instead, or use the sync proxy
(``proxyshare.connect()``) in other processes.
"""

from __future__ import annotations

import queue as _queue
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, ClassVar, NoReturn

from proxyshare import _protocol as P
from proxyshare._errors import NotOwnerError, ProxyShareError, ResourceNotFoundError
from proxyshare._errors import ServerUnavailableError as _Unavailable
from proxyshare._protocol import Op
from proxyshare._proxies import _MISSING, _add_note, _Handle
from proxyshare._transport import AsyncTransport

__all__ = ["Barrier", "Counter", "Dict", "Event", "Lock", "Queue", "Semaphore"]


class _AsyncProxy(_Handle[AsyncTransport]):
    """An asyncio proxy: a transport bound to an event loop, and a name."""

    __slots__ = ()
    _namespace = "proxyshare.aio"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            f"an asyncio proxy ({self!r}) cannot be pickled: it uses its manager's "
            "connections on one event loop. Send the name, and open the resource there "
            "(proxyshare.connect() or aio.connect())"
        )


class Counter(_AsyncProxy):
    """A shared integer; every method is one atomic round trip.

    >>> hits = await mgr.counter("hits")      # doctest: +SKIP
    >>> await hits.increment()                # doctest: +SKIP
    1
    """

    __slots__ = ()
    kind = "counter"

    async def increment(self, n: int = 1) -> int:
        """Add ``n`` and return the new value."""
        return await self._transport.call(P.COUNTER_ADD, self._name, n)

    async def decrement(self, n: int = 1) -> int:
        """Subtract ``n`` and return the new value."""
        return await self._transport.call(P.COUNTER_SUB, self._name, n)

    async def get(self) -> int:
        """The current value."""
        return await self._transport.call(P.COUNTER_GET, self._name)

    async def set(self, value: int) -> None:
        """Replace the value."""
        await self._transport.call(P.COUNTER_SET, self._name, value)

    async def compare_and_set(self, expected: int, new: int) -> bool:
        """Set ``new`` only if the value is ``expected``; True if it was set."""
        return await self._transport.call(P.COUNTER_CAS, self._name, expected, new)

    async def get_and_set(self, new: int) -> int:
        """Set ``new`` and return the previous value."""
        return await self._transport.call(P.COUNTER_SWAP, self._name, new)


class _Acquirable(_AsyncProxy):
    """What a lock and a semaphore share: acquire/release owned by the task, ``async with``."""

    __slots__ = ()
    _ACQUIRE: ClassVar[Op[bool]]
    _RELEASE: ClassVar[Op[None]]

    async def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire for this task; False if ``blocking`` is false or ``timeout`` ran out first.

        Cancelling the waiting task leaves nothing acquired, now or later.
        """
        return await self._transport.call(self._ACQUIRE, self._name, blocking, timeout)

    async def release(self) -> None:
        """Release; ``NotOwnerError`` if this task does not hold it."""
        await self._transport.call(self._RELEASE, self._name)

    async def __aenter__(self) -> bool:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.release()
        except NotOwnerError as lost:
            if exc is None:
                raise
            _add_note(exc, f"on the way out, {self.kind} {self._name!r} was no longer held: {lost}")


class Lock(_Acquirable):
    """A shared lock, owned by the task that acquired it.

    Another task's ``release()`` raises ``NotOwnerError``; waiters are served
    first come, first served; if the holder's process dies (or the task ends
    holding it) the lock is released at once.

    >>> async with await mgr.lock("guard"):   # doctest: +SKIP
    ...     ...
    """

    __slots__ = ()
    kind = "lock"
    _ACQUIRE = P.LOCK_ACQUIRE
    _RELEASE = P.LOCK_RELEASE

    async def locked(self) -> bool:
        """Whether anybody holds it."""
        return await self._transport.call(P.LOCK_LOCKED, self._name)

    async def owner(self) -> dict[str, Any] | None:
        """``{"pid", "host", "since"}`` of the holder, or None."""
        return await self._transport.call(P.LOCK_OWNER, self._name)


class Semaphore(_Acquirable):
    """A shared counting semaphore with FIFO waiters; permits are owned by tasks."""

    __slots__ = ()
    kind = "semaphore"
    _ACQUIRE = P.SEM_ACQUIRE
    _RELEASE = P.SEM_RELEASE

    async def value(self) -> int:
        """Permits available now."""
        return await self._transport.call(P.SEM_VALUE, self._name)


class Dict(_AsyncProxy):
    """A shared dict.  ``await d.get(k)``, ``await d.set(k, v)``, ``await d.len()``, ...

    >>> stats = await mgr.dict("stats")        # doctest: +SKIP
    >>> await stats.increment("calls")         # doctest: +SKIP
    1
    """

    __slots__ = ()
    kind = "dict"

    async def get(self, key: Any, default: Any = None) -> Any:
        """``d[key]``, or ``default`` if absent."""
        return await self._transport.call(P.DICT_GET_DEFAULT, self._name, key, default)

    async def set(self, key: Any, value: Any) -> None:
        """``d[key] = value``."""
        await self._transport.call(P.DICT_SET, self._name, key, value)

    async def delete(self, key: Any) -> None:
        """``del d[key]``: ``KeyError`` if absent."""
        await self._transport.call(P.DICT_DEL, self._name, key)

    async def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; ``default`` (else ``KeyError``) if absent."""
        if default is _MISSING:
            return await self._transport.call(P.DICT_POP, self._name, key, False, None)
        return await self._transport.call(P.DICT_POP, self._name, key, True, default)

    async def setdefault(self, key: Any, default: Any = None) -> Any:
        return await self._transport.call(P.DICT_SETDEFAULT, self._name, key, default)

    async def update(self, other: Any = (), /, **kwargs: Any) -> None:
        items = dict(other, **kwargs)
        if items:
            await self._transport.call(P.DICT_UPDATE, self._name, items)

    async def clear(self) -> None:
        await self._transport.call(P.DICT_CLEAR, self._name)

    async def contains(self, key: Any) -> bool:
        """``key in d``."""
        return await self._transport.call(P.DICT_CONTAINS, self._name, key)

    async def len(self) -> int:
        """``len(d)``."""
        return await self._transport.call(P.DICT_LEN, self._name)

    async def keys(self) -> list[Any]:
        """The keys, in one round trip."""
        return await self._transport.call(P.DICT_KEYS, self._name)

    async def values(self) -> list[Any]:
        """The values of one snapshot."""
        return list((await self.snapshot()).values())

    async def items(self) -> list[tuple[Any, Any]]:
        """The items of one snapshot."""
        return list((await self.snapshot()).items())

    async def increment(self, key: Any, n: int = 1, default: int = 0) -> int:
        """Atomically add ``n`` to ``d[key]`` (``default`` if absent); return it."""
        return await self._transport.call(P.DICT_INCR, self._name, key, n, default)

    async def compare_and_set(self, key: Any, expected: Any, new: Any) -> bool:
        """Set ``d[key] = new`` if it is present and equals ``expected``."""
        return await self._transport.call(P.DICT_CAS, self._name, key, expected, new)

    async def snapshot(self) -> dict[Any, Any]:
        """A plain-dict copy, taken atomically in one round trip."""
        return await self._transport.call(P.DICT_SNAPSHOT, self._name)


class Queue(_AsyncProxy):
    """A shared FIFO queue with the ``queue.Queue`` methods and errors, awaited.

    ``get``/``put`` raise the stdlib's ``queue.Empty``/``queue.Full``.  A get
    whose task is cancelled takes nothing: an item already handed out goes
    back to the front.  ``async for item in q`` runs until the queue is closed
    and drained.
    """

    __slots__ = ()
    kind = "queue"
    Empty = _queue.Empty
    Full = _queue.Full

    async def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Append ``item``; ``queue.Full`` if bounded and still full after ``timeout``."""
        await self._transport.call(P.QUEUE_PUT, self._name, item, block, timeout)

    async def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; ``queue.Empty`` when there is none in time."""
        return await self._transport.call(P.QUEUE_GET, self._name, block, timeout)

    async def put_nowait(self, item: Any) -> None:
        await self.put(item, block=False)

    async def get_nowait(self) -> Any:
        return await self.get(block=False)

    async def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Append all ``items``, in order, in one round trip: all of them or none."""
        await self._transport.call(P.QUEUE_PUT_MANY, self._name, list(items), block, timeout)

    async def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Up to ``max_items`` items in one round trip; waits only while the queue is empty."""
        return await self._transport.call(P.QUEUE_GET_MANY, self._name, max_items, timeout)

    async def qsize(self) -> int:
        return await self._transport.call(P.QUEUE_SIZE, self._name)

    async def empty(self) -> bool:
        return await self.qsize() == 0

    async def full(self) -> bool:
        size, maxsize, _closed = await self._transport.call(P.QUEUE_INFO, self._name)
        return bool(0 < maxsize <= size)

    async def close(self) -> None:
        """Refuse further puts; getters drain what is left, then iteration stops."""
        await self._transport.call(P.QUEUE_CLOSE, self._name)

    async def iter(
        self, sentinel: Any = _MISSING, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        """Yield items until ``sentinel`` arrives or the queue is closed and drained."""
        while True:
            try:
                item = await self.get(timeout=timeout)
            except (_Unavailable, ResourceNotFoundError):
                raise
            except ProxyShareError:
                if (await self._transport.call(P.QUEUE_INFO, self._name))[2]:
                    return  # closed and drained
                raise
            if sentinel is not _MISSING and type(item) is type(sentinel) and item == sentinel:
                return
            yield item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self.iter()


class Event(_AsyncProxy):
    """A shared ``threading.Event``, awaited."""

    __slots__ = ()
    kind = "event"

    async def set(self) -> None:
        await self._transport.call(P.EVENT_SET, self._name)

    async def clear(self) -> None:
        await self._transport.call(P.EVENT_CLEAR, self._name)

    async def is_set(self) -> bool:
        return await self._transport.call(P.EVENT_IS_SET, self._name)

    async def wait(self, timeout: float | None = None) -> bool:
        """True once set; False if ``timeout`` ran out."""
        return await self._transport.call(P.EVENT_WAIT, self._name, timeout)


class Barrier(_AsyncProxy):
    """A shared ``threading.Barrier`` (without ``action``), awaited."""

    __slots__ = ()
    kind = "barrier"

    async def wait(self, timeout: float | None = None) -> int:
        """Wait for all parties; return this caller's arrival index."""
        return await self._transport.call(P.BARRIER_WAIT, self._name, timeout)

    async def abort(self) -> None:
        await self._transport.call(P.BARRIER_ABORT, self._name)

    async def reset(self) -> None:
        await self._transport.call(P.BARRIER_RESET, self._name)

    async def n_waiting(self) -> int:
        return await self._transport.call(P.BARRIER_N_WAITING, self._name)

    async def parties(self) -> int:
        return (await self._transport.call(P.BARRIER_INFO, self._name))[0]

    async def broken(self) -> bool:
        return (await self._transport.call(P.BARRIER_INFO, self._name))[2]
