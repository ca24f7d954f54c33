"""Client-side proxies: small, picklable handles on named server resources.

A proxy is ``(transport, name)`` and pickles as exactly that: for a served
resource the transport is the server's address and authkey (``_client``),
for the shared-memory fast path a file (``_backends.shm``), for Redis a URL
(``_backends.redis``), inside ``mgr.pipeline()`` a recorder (``_pipeline``).
So a proxy can be passed to any process pool under any start method, and
unpickling it imports nothing heavy.  Proxies are not reference-counted: the
resource lives until ``mgr.delete(name)`` or the server stops, so a proxy
passed as a temporary keeps working.

Every method is written once, as one operation of the table in
``_protocol`` sent through ``Transport.call`` (see ``_transport``); a
backend overrides a method only where a measured hot path needs it.
"""

from __future__ import annotations

import logging
import queue as _queue
import sys
from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from proxyshare import _protocol as P
from proxyshare._errors import (
    NotOwnerError,
    ProxyShareError,
    ResourceNotFoundError,
    ServerUnavailableError,
)
from proxyshare._protocol import Op
from proxyshare._transport import Transport

__all__ = ["Barrier", "Counter", "Dict", "Event", "Lock", "Queue", "Semaphore"]

_MISSING: Any = object()


class _Located(Protocol):
    def where(self) -> str: ...


T = TypeVar("T", bound=_Located)  # a Transport, or an asyncio one


class _Handle(Generic[T]):
    """What every proxy is, sync or asyncio (``proxyshare.aio``): a transport and a
    name.  Identity, pickling and repr live here once."""

    __slots__ = ("_name", "_transport")
    kind: ClassVar[str] = ""
    _namespace: ClassVar[str] = "proxyshare"  # how repr() names the class

    def __init__(self, transport: T, name: str) -> None:
        self._transport = transport
        self._name = name

    @property
    def name(self) -> str:
        """The resource's name on the server."""
        return self._name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._transport, self._name))

    def __repr__(self) -> str:
        where = self._transport.where()
        return f"<{self._namespace}.{type(self).__name__} {self._name!r} at {where}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Handle) or type(other) is not type(self):
            return NotImplemented
        return bool(other._transport == self._transport and other._name == self._name)

    def __hash__(self) -> int:
        return hash((type(self), self._transport, self._name))


class _Proxy(_Handle[Transport]):
    """Shared plumbing of the sync proxies."""

    __slots__ = ()


class Counter(_Proxy):
    """A shared integer; every method is one atomic round trip.

    >>> hits = mgr.counter("hits")         # doctest: +SKIP
    >>> hits.increment()                   # doctest: +SKIP
    1
    """

    __slots__ = ()
    kind = "counter"

    def increment(self, n: int = 1) -> int:
        """Add ``n`` and return the new value."""
        return self._transport.call(P.COUNTER_ADD, self._name, n)

    def decrement(self, n: int = 1) -> int:
        """Subtract ``n`` and return the new value."""
        return self._transport.call(P.COUNTER_SUB, self._name, n)

    def get(self) -> int:
        """The current value."""
        return self._transport.call(P.COUNTER_GET, self._name)

    def set(self, value: int) -> None:
        """Replace the value."""
        self._transport.call(P.COUNTER_SET, self._name, value)

    @property
    def value(self) -> int:
        """The current value (``get()``); assigning calls ``set()``."""
        return self.get()

    @value.setter
    def value(self, value: int) -> None:
        self.set(value)

    def compare_and_set(self, expected: int, new: int) -> bool:
        """Set ``new`` only if the value is ``expected``; True if it was set."""
        return self._transport.call(P.COUNTER_CAS, self._name, expected, new)

    def get_and_set(self, new: int) -> int:
        """Set ``new`` and return the previous value."""
        return self._transport.call(P.COUNTER_SWAP, self._name, new)


class _Acquirable(_Proxy):
    """What a lock and a semaphore share: owned acquire/release and ``with``."""

    __slots__ = ()
    _ACQUIRE: ClassVar[Op[bool]]
    _RELEASE: ClassVar[Op[None]]

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire; False if ``blocking`` is false or ``timeout`` ran out first."""
        return self._transport.call(self._ACQUIRE, self._name, blocking, timeout)

    def release(self) -> None:
        """Release; ``NotOwnerError`` if this thread does not hold it."""
        self._transport.call(self._RELEASE, self._name)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except NotOwnerError as lost:
            if exc is None:
                raise
            # The block is already failing, and that failure may be why the lock
            # is gone (an interrupted call drops this thread's connection, which
            # releases what it held): keep it in front, with this as a note.
            _add_note(exc, f"on the way out, {self.kind} {self._name!r} was no longer held: {lost}")


def _add_note(exc: BaseException, note: str) -> None:
    if sys.version_info >= (3, 11):
        exc.add_note(note)
        return
    # Python 3.10 has no add_note: keep the note where 3.11 keeps it (tools such as
    # pytest and exceptiongroup read ``__notes__``), and log it, because 3.10's
    # traceback printing does not show it.
    notes = getattr(exc, "__notes__", None)
    exc.__notes__ = [*notes, note] if isinstance(notes, list) else [note]  # type: ignore[attr-defined]
    logging.getLogger("proxyshare").warning("%s (while handling %r)", note, exc)


class Lock(_Acquirable):
    """A shared lock, owned by the thread of the process that acquired it.

    Waiters are served first come, first served.  If the holder's process
    dies its connection drops and the lock is released at once.

    >>> with mgr.lock("guard"):            # doctest: +SKIP
    ...     ...
    """

    __slots__ = ()
    kind = "lock"
    _ACQUIRE = P.LOCK_ACQUIRE
    _RELEASE = P.LOCK_RELEASE

    def locked(self) -> bool:
        """Whether anybody holds it."""
        return self._transport.call(P.LOCK_LOCKED, self._name)

    def owner(self) -> dict[str, Any] | None:
        """``{"pid", "host", "since"}`` of the holder, or None."""
        return self._transport.call(P.LOCK_OWNER, self._name)


class Dict(_Proxy, MutableMapping[Any, Any]):
    """A shared dict: a complete ``MutableMapping`` plus atomic helpers.

    ``keys()``, ``values()`` and ``items()`` are views of one snapshot taken in
    one round trip, so they work in any worker and never change under you.

    >>> cache = mgr.dict("cache")          # doctest: +SKIP
    >>> cache["a"] = 1; cache.increment("a")   # doctest: +SKIP
    2
    """

    __slots__ = ()
    kind = "dict"
    __hash__ = None  # type: ignore[assignment]  # a mapping compares by content

    def __eq__(self, other: object) -> bool:
        if (
            isinstance(other, Dict)
            and other._transport == self._transport
            and other._name == self._name
        ):
            return True
        if isinstance(other, Mapping):
            return self.snapshot() == dict(other.items())
        return NotImplemented

    def __getitem__(self, key: Any) -> Any:
        return self._transport.call(P.DICT_GET, self._name, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._transport.call(P.DICT_SET, self._name, key, value)

    def __delitem__(self, key: Any) -> None:
        self._transport.call(P.DICT_DEL, self._name, key)

    def __len__(self) -> int:
        return self._transport.call(P.DICT_LEN, self._name)

    def __contains__(self, key: object) -> bool:
        return self._transport.call(P.DICT_CONTAINS, self._name, key)

    def __iter__(self) -> Iterator[Any]:
        keys = self._transport.call(P.DICT_KEYS, self._name)
        return iter(keys)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._transport.call(P.DICT_GET_DEFAULT, self._name, key, default)

    def keys(self) -> KeysView[Any]:
        return self.snapshot().keys()

    def values(self) -> ValuesView[Any]:
        return self.snapshot().values()

    def items(self) -> ItemsView[Any, Any]:
        return self.snapshot().items()

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        if default is _MISSING:
            return self._transport.call(P.DICT_POP, self._name, key, False, None)
        return self._transport.call(P.DICT_POP, self._name, key, True, default)

    def popitem(self) -> tuple[Any, Any]:
        for key in self:
            try:
                return (key, self.pop(key))
            except KeyError:
                continue  # removed by someone else meanwhile
        raise KeyError("popitem(): dictionary is empty")

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return self._transport.call(P.DICT_SETDEFAULT, self._name, key, default)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        items = dict(other, **kwargs)
        if items:
            self._transport.call(P.DICT_UPDATE, self._name, items)

    def clear(self) -> None:
        self._transport.call(P.DICT_CLEAR, self._name)

    def increment(self, key: Any, n: int = 1, default: int = 0) -> int:
        """Atomically add ``n`` to ``self[key]`` (``default`` if absent); return it."""
        return self._transport.call(P.DICT_INCR, self._name, key, n, default)

    def compare_and_set(self, key: Any, expected: Any, new: Any) -> bool:
        """Set ``self[key] = new`` if it is present and equals ``expected``."""
        return self._transport.call(P.DICT_CAS, self._name, key, expected, new)

    def snapshot(self) -> dict[Any, Any]:
        """A plain-dict copy, taken atomically in one round trip."""
        return self._transport.call(P.DICT_SNAPSHOT, self._name)

    def copy(self) -> dict[Any, Any]:
        return self.snapshot()

    def __repr__(self) -> str:
        return _Proxy.__repr__(self)


class Queue(_Proxy):
    """A shared FIFO queue with the ``queue.Queue`` methods and errors.

    ``get``/``put`` raise the stdlib's ``queue.Empty``/``queue.Full``.
    ``close()`` ends the stream: puts are refused, getters drain what is left,
    and ``for item in q`` stops once it is drained.  An item taken by a client
    that dies before receiving it goes back to the front of the queue.

    >>> q = mgr.queue("results")           # doctest: +SKIP
    >>> q.put(1); q.get()                  # doctest: +SKIP
    1
    """

    __slots__ = ()
    kind = "queue"

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Append ``item``; ``queue.Full`` if bounded and still full after ``timeout``."""
        self._transport.call(P.QUEUE_PUT, self._name, item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; ``queue.Empty`` when there is none in time.

        On a closed queue that is empty this raises ``ProxyShareError``.
        """
        return self._transport.call(P.QUEUE_GET, self._name, block, timeout)

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(block=False)

    def put_many(
        self, items: Iterable[Any], block: bool = True, timeout: float | None = None
    ) -> None:
        """Append all ``items``, in order, in one round trip: all of them or none.

        A bounded queue waits until the whole batch fits (an empty queue takes
        any batch); ``queue.Full`` if it does not fit in time.
        """
        self._transport.call(P.QUEUE_PUT_MANY, self._name, list(items), block, timeout)

    def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        """Up to ``max_items`` items in one round trip; waits only while the queue is empty.

        Returns ``[]`` when ``timeout`` runs out, or when the queue is closed and drained.
        """
        return self._transport.call(P.QUEUE_GET_MANY, self._name, max_items, timeout)

    def qsize(self) -> int:
        """Items in the queue now."""
        return self._transport.call(P.QUEUE_SIZE, self._name)

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        size, maxsize, _closed = self._transport.call(P.QUEUE_INFO, self._name)
        return bool(0 < maxsize <= size)

    def close(self) -> None:
        """Refuse further puts; getters drain what is left, then iteration stops."""
        self._transport.call(P.QUEUE_CLOSE, self._name)

    def iter(self, sentinel: Any = _MISSING, timeout: float | None = None) -> Iterator[Any]:
        """Yield items until ``sentinel`` arrives or the queue is closed and drained.

        The sentinel is consumed, not yielded; it matches an item of the same
        type that compares equal (so ``None`` never compares with an array).
        ``queue.Empty`` if no item arrives within ``timeout``.
        """
        while True:
            try:
                item = self.get(timeout=timeout)
            except (ServerUnavailableError, ResourceNotFoundError):
                raise
            except ProxyShareError:
                if self._transport.call(P.QUEUE_INFO, self._name)[2]:  # closed and drained
                    return
                raise
            if sentinel is not _MISSING and type(item) is type(sentinel) and item == sentinel:
                return
            yield item

    def __iter__(self) -> Iterator[Any]:
        """Iterate until the queue is closed and drained (see ``iter``)."""
        return self.iter()

    Empty = _queue.Empty
    Full = _queue.Full


class Semaphore(_Acquirable):
    """A shared counting semaphore with FIFO waiters.

    Permits are owned, like a lock: the thread that acquired one releases it
    (anyone else gets ``NotOwnerError``), and a process that dies holding
    permits gives them back as soon as its connection drops.

    >>> with mgr.semaphore("db", 2):       # doctest: +SKIP
    ...     ...                            # at most 2 callers in here at once
    """

    __slots__ = ()
    kind = "semaphore"
    _ACQUIRE = P.SEM_ACQUIRE
    _RELEASE = P.SEM_RELEASE

    def value(self) -> int:
        """Permits available now."""
        return self._transport.call(P.SEM_VALUE, self._name)


class Event(_Proxy):
    """A shared ``threading.Event``.

    >>> stop = mgr.event("stop")           # doctest: +SKIP
    >>> stop.wait(timeout=1.0)             # doctest: +SKIP
    False
    """

    __slots__ = ()
    kind = "event"

    def set(self) -> None:
        """Set the flag and wake every waiter."""
        self._transport.call(P.EVENT_SET, self._name)

    def clear(self) -> None:
        """Reset the flag; later ``wait()`` calls block again."""
        self._transport.call(P.EVENT_CLEAR, self._name)

    def is_set(self) -> bool:
        return self._transport.call(P.EVENT_IS_SET, self._name)

    def wait(self, timeout: float | None = None) -> bool:
        """True once set (even if cleared again at once); False if ``timeout`` ran out."""
        return self._transport.call(P.EVENT_WAIT, self._name, timeout)


class Barrier(_Proxy):
    """A shared ``threading.Barrier`` (without ``action``).

    A party whose process dies while waiting breaks the barrier, so the
    others get ``threading.BrokenBarrierError`` instead of waiting forever.
    As with the stdlib, a ``wait`` that times out breaks it too.
    """

    __slots__ = ()
    kind = "barrier"

    def wait(self, timeout: float | None = None) -> int:
        """Wait for all parties; return this caller's arrival index (0 .. parties-1).

        ``threading.BrokenBarrierError`` if the barrier is or becomes broken.
        """
        return self._transport.call(P.BARRIER_WAIT, self._name, timeout)

    def abort(self) -> None:
        """Break the barrier: current and later waiters get ``BrokenBarrierError``."""
        self._transport.call(P.BARRIER_ABORT, self._name)

    def reset(self) -> None:
        """Make it usable again; parties waiting now get ``BrokenBarrierError``."""
        self._transport.call(P.BARRIER_RESET, self._name)

    @property
    def n_waiting(self) -> int:
        """Parties waiting now."""
        return self._transport.call(P.BARRIER_N_WAITING, self._name)

    @property
    def parties(self) -> int:
        return self._transport.call(P.BARRIER_INFO, self._name)[0]

    @property
    def broken(self) -> bool:
        return self._transport.call(P.BARRIER_INFO, self._name)[2]
