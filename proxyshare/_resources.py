"""Server-side resources: the objects the server holds by name.

Each resource guards its state with its own re-entrant mutex (re-entrant so a
pipeline can hold several mutexes at once while calling ordinary methods).
Blocking waits never hold that mutex: a waiter parks on its own event or on a
condition, wakes at least every ``WAIT_SLICE`` seconds to check that its
client is still connected, and leaves the wait list if not.

Every method takes the calling ``session`` first (see ``_server.Session``):
ownership of locks and semaphore permits belongs to a session, i.e. to one
thread of one client process, and ends when its connection drops.

No I/O happens here but through the session (``reply_early``, which a test
session may decline), so everything is testable with plain threads.

The server's reactor thread (see ``_reactor``) must never wait.  On that
thread an acquire that has to wait joins the FIFO and raises :class:`Parked`
(the reactor answers it later, with no thread), and any other call that
would wait raises :class:`MustWait`, having changed nothing, so the server
runs it again on a worker thread.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from proxyshare._errors import NotOwnerError, ProxyShareError, ResourceNotFoundError

__all__ = [
    "RESOURCE_TYPES",
    "WAIT_SLICE",
    "BarrierResource",
    "CounterResource",
    "DictResource",
    "EventResource",
    "LockResource",
    "MustWait",
    "Parked",
    "QueueResource",
    "ReplySent",
    "Resource",
    "SemaphoreResource",
    "SessionGone",
    "SessionLike",
    "forbid_waiting",
]

WAIT_SLICE = 0.1  # how often a blocked waiter checks that its client is alive
_MISSING = object()


def _deleted(resource: Resource) -> ResourceNotFoundError:
    return ResourceNotFoundError(
        f"{resource.kind} {resource.name!r} was deleted while this call was waiting on it"
    )


class SessionLike(Protocol):
    """What resources need to know about a caller."""

    def alive(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...

    def hold(self, resource: Resource) -> None: ...

    def reply_early(self, result: Any) -> bool:
        """Send the reply of the call this session is blocked in, from this thread.

        True if it was sent.  Lets a release hand a lock to the next waiter's
        client directly, instead of waking the waiter's thread to do it.
        """
        ...


class SessionGone(Exception):
    """The client went away while its request was blocked; nobody gets a reply."""


class ReplySent(Exception):
    """The call's reply already went out (see ``SessionLike.reply_early``)."""


class Parked(Exception):
    """Raised on the reactor thread by an acquire that joined the FIFO.

    Nothing waits for it: the reply comes from the grant (``reply_early``),
    from the reactor's timer (``cancel_wait``), or from a delete (``on_wake``
    with ``error`` set).
    """

    def __init__(self, resource: _FifoPermits, waiter: _Waiter, deadline: float | None) -> None:
        super().__init__()
        self.resource = resource
        self.waiter = waiter
        self.deadline = deadline


class MustWait(Exception):
    """Raised instead of waiting, on a thread that must not wait (the reactor).

    The call has changed nothing yet: run all of it again on a thread that may wait.
    """


_thread = threading.local()


def forbid_waiting() -> None:
    """From now on, calls on this thread raise ``MustWait`` instead of waiting."""
    _thread.no_waiting = True


def _no_waiting_here() -> bool:
    return getattr(_thread, "no_waiting", False)


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__} ({value!r})")
    return value


def _check_timeout(blocking: object, timeout: object, flag: str = "blocking") -> float | None:
    """Validate stdlib-style (blocking, timeout); return seconds or None (forever).

    ``flag`` is the caller's name for ``blocking`` (queues call it ``block``).
    """
    if not isinstance(blocking, (bool, int)):
        raise TypeError(f"{flag} must be a bool, not {type(blocking).__name__} ({blocking!r})")
    if timeout is None or timeout == -1:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            "timeout must be a number of seconds or None, "
            f"not {type(timeout).__name__} ({timeout!r})"
        )
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if not timeout >= 0:  # also NaN, which no deadline can be compared with
        raise ValueError("timeout must be a non-negative number of seconds (or None)")
    return float(timeout)


def _queue_timeout(block: object, timeout: object) -> float | None:
    """As ``queue.Queue``: the timeout is ignored when not blocking, and never negative."""
    if not block:
        _check_timeout(block, None, "block")
        return None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout < 0:
        raise ValueError(
            f"timeout must be a non-negative number of seconds (or None), not {timeout}"
        )
    return _check_timeout(block, timeout, "block")


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _slice(deadline: float | None) -> float:
    """How long to park before the next liveness check; <= 0 means time is up."""
    if deadline is None:
        return WAIT_SLICE
    return min(WAIT_SLICE, deadline - time.monotonic())


class Resource:
    """Base of server-side resources."""

    kind: ClassVar[str] = "resource"

    def __init__(self, name: str) -> None:
        self.name = name
        self.mutex = threading.RLock()

    @classmethod
    def create(cls, name: str, options: dict[str, Any]) -> Resource:
        return cls(name, **options)

    def check_options(self, options: dict[str, Any]) -> None:
        """Called when an existing resource is opened again; raise on a conflict."""

    def options(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """A plain-data summary for ``status``."""
        return {"name": self.name, "kind": self.kind}

    def session_closed(self, session: SessionLike) -> None:
        """Release whatever ``session`` held; called when its connection drops."""

    def destroy(self) -> None:
        """Called when the resource is deleted or the server stops: wake waiters, free files."""


# -- counter -----------------------------------------------------------------


class CounterResource(Resource):
    kind = "counter"

    def __init__(self, name: str, initial: int = 0) -> None:
        super().__init__(name)
        self.value = _check_int(initial, "initial")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "value": self.value}

    def get(self, session: SessionLike) -> int:
        return self.value

    def add(self, session: SessionLike, n: int = 1) -> int:
        _check_int(n, "increment(n)")
        with self.mutex:
            self.value += n
            return self.value

    def sub(self, session: SessionLike, n: int = 1) -> int:
        _check_int(n, "decrement(n)")
        with self.mutex:
            self.value -= n
            return self.value

    def set(self, session: SessionLike, value: int) -> None:
        _check_int(value, "set(value)")
        with self.mutex:
            self.value = value

    def compare_and_set(self, session: SessionLike, expected: int, new: int) -> bool:
        _check_int(new, "compare_and_set(new)")
        with self.mutex:
            if self.value != expected:
                return False
            self.value = new
            return True

    def get_and_set(self, session: SessionLike, new: int) -> int:
        _check_int(new, "get_and_set(new)")
        with self.mutex:
            old, self.value = self.value, new
            return old


# -- ownership with FIFO hand-off (lock, semaphore) -----------------------------


class _Waiter:
    """A parked acquirer.  ``_wake`` is a raw lock held until it is woken:
    waking through it costs far less than ``threading.Event`` (no Condition),
    which matters because every contended hand-off pays it."""

    __slots__ = ("_wake", "error", "granted", "on_wake", "replied", "session")

    def __init__(self, session: SessionLike) -> None:
        self.session = session
        self._wake = threading.Lock()
        self._wake.acquire()
        self.granted = False
        self.replied = False
        self.error: Exception | None = None  # why it was woken without a grant
        # Set while the waiter is parked in the reactor, which has no thread to wake.
        self.on_wake: Callable[[_Waiter], None] | None = None

    def park(self, seconds: float) -> None:
        """Sleep until woken (a hand-off or close()) or ``seconds`` pass."""
        self._wake.acquire(timeout=seconds)

    def wake(self) -> None:
        """Called once, under the resource mutex, by whoever removed it from the list."""
        self._wake.release()
        if self.on_wake is not None:
            self.on_wake(self)


class _FifoPermits(Resource):
    """``permits`` units handed to sessions first come, first served.

    A release hands the unit straight to the oldest waiter (so nobody can
    barge in between), and a session's units come back when it disconnects.
    """

    noun: ClassVar[str] = "permit"

    def __init__(self, name: str, permits: int) -> None:
        super().__init__(name)
        self.available = permits
        self.holders: dict[SessionLike, list[float]] = {}  # session -> acquisition times
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.deleted = False

    def _grant(self, session: SessionLike) -> None:
        self.available -= 1
        self.holders.setdefault(session, []).append(time.time())
        session.hold(self)

    def _take_back(self, session: SessionLike) -> None:
        times = self.holders[session]
        times.pop()
        if not times:
            del self.holders[session]
        self.available += 1
        while self.available > 0 and self.waiters:
            waiter = self.waiters.popleft()
            self._grant(waiter.session)
            waiter.granted = True
            # The waiter's client learns of the grant now, from this thread:
            # one thread wake-up less on the path of every contended hand-off.
            waiter.replied = waiter.session.reply_early(True)
            waiter.wake()

    def _before_acquire(self, session: SessionLike, blocking: bool, timeout: float | None) -> None:
        """Hook: lets the lock refuse a self-deadlock."""

    def _expire(self) -> None:
        """Hook: lets a leased lock drop a holder whose lease ran out."""

    def acquire(
        self, session: SessionLike, blocking: bool = True, timeout: float | None = None
    ) -> bool:
        seconds = _check_timeout(blocking, timeout)
        with self.mutex:
            if self.deleted:
                raise _deleted(self)
            self._expire()
            if self.available > 0 and not self.waiters:
                self._grant(session)
                return True
            if not blocking:
                return False
            self._before_acquire(session, bool(blocking), seconds)
            waiter = _Waiter(session)
            self.waiters.append(waiter)  # here, so the FIFO order is the arrival order
        deadline = _deadline(seconds)
        if _no_waiting_here():
            raise Parked(self, waiter, deadline)
        return self._await_grant(session, waiter, deadline)

    def cancel_wait(self, waiter: _Waiter) -> bool:
        """A parked waiter's time is up: leave the FIFO.  False if it was granted first."""
        with self.mutex:
            try:
                self.waiters.remove(waiter)
            except ValueError:
                return False
            return True

    def needs_ticks(self) -> bool:
        """Whether parked waiters must call ``tick`` now and then (a lease may run out)."""
        return False

    def tick(self) -> None:
        with self.mutex:
            self._expire()

    def _await_grant(self, session: SessionLike, waiter: _Waiter, deadline: float | None) -> bool:
        while True:
            step = _slice(deadline)
            if step > 0:
                waiter.park(step)  # woken by a hand-off or by close()
            with self.mutex:
                if waiter.granted:
                    if waiter.replied:
                        # Its client may already be sending its next request, so
                        # alive() would misread it; a dead client shows up as EOF
                        # in the session loop, which releases what it held.
                        raise ReplySent
                    if session.alive():
                        return True
                    self._take_back(session)
                    raise SessionGone
                if self.deleted:
                    raise _deleted(self)  # close() already emptied the wait list
                if not session.alive():
                    self.waiters.remove(waiter)
                    raise SessionGone
                if step <= 0:
                    self.waiters.remove(waiter)
                    return False
                self._expire()

    def release(self, session: SessionLike) -> None:
        with self.mutex:
            self._expire()
            if session not in self.holders:
                raise NotOwnerError(
                    f"{self.kind} {self.name!r} cannot be released by this caller: it holds no "
                    f"{self.noun} (a {self.kind} is owned by the process and thread that "
                    "acquired it)"
                )
            self._take_back(session)

    def session_closed(self, session: SessionLike) -> None:
        with self.mutex:
            while session in self.holders:
                self._take_back(session)
            for waiter in [w for w in self.waiters if w.session is session]:
                self.waiters.remove(waiter)

    def destroy(self) -> None:
        """Deleted: wake every waiter so it fails instead of waiting forever."""
        with self.mutex:
            self.deleted = True
            while self.waiters:
                waiter = self.waiters.popleft()
                waiter.error = _deleted(self)
                waiter.wake()

    def _holders_info(self) -> list[dict[str, Any]]:
        return [
            {**session.describe(), "since": since}
            for session, times in self.holders.items()
            for since in times
        ]

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {
                **super().describe(),
                "holders": self._holders_info(),
                "waiters": [w.session.describe() for w in self.waiters],
            }


class LockResource(_FifoPermits):
    kind = "lock"

    def __init__(self, name: str, lease: float | None = None) -> None:
        super().__init__(name, 1)
        if lease is not None:
            if isinstance(lease, bool) or not isinstance(lease, (int, float)) or lease <= 0:
                raise ValueError(
                    f"lease must be a positive number of seconds or None, not {lease!r}"
                )
            lease = float(lease)
        self.lease = lease

    def options(self) -> dict[str, Any]:
        return {"lease": self.lease}

    def needs_ticks(self) -> bool:
        return self.lease is not None

    def _before_acquire(self, session: SessionLike, blocking: bool, timeout: float | None) -> None:
        if timeout is None and session in self.holders:
            raise ProxyShareError(
                f"lock {self.name!r} is already held by this thread; acquiring it again "
                "would wait forever (proxyshare locks are not re-entrant)"
            )

    def _expire(self) -> None:
        if self.lease is None or not self.holders:
            return
        ((session, times),) = self.holders.items()
        if time.time() - times[0] >= self.lease:
            self._take_back(session)

    def locked(self, session: SessionLike) -> bool:
        with self.mutex:
            self._expire()
            return self.available == 0

    def owner(self, session: SessionLike) -> dict[str, Any] | None:
        with self.mutex:
            self._expire()
            for holder, times in self.holders.items():
                info = holder.describe()
                return {"pid": info["pid"], "host": info["host"], "since": times[0]}
            return None

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            self._expire()
            return {**super().describe(), "locked": self.available == 0, "lease": self.lease}


class SemaphoreResource(_FifoPermits):
    kind = "semaphore"
    noun = "permit"

    def __init__(self, name: str, value: int = 1) -> None:
        if _check_int(value, "value") < 1:
            # Permits belong to whoever acquired them, and only a holder can
            # release: a semaphore that starts empty could never be acquired.
            raise ValueError(
                f"semaphore value must be >= 1, not {value}: a proxyshare semaphore's permits "
                "are owned by the callers that acquire them; to signal between processes "
                "use mgr.event() or mgr.queue()"
            )
        super().__init__(name, value)
        self.initial = value

    def options(self) -> dict[str, Any]:
        return {"value": self.initial}

    def value(self, session: SessionLike) -> int:
        with self.mutex:
            return self.available

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {**super().describe(), "value": self.available, "initial": self.initial}


# -- dict ----------------------------------------------------------------------


class DictResource(Resource):
    kind = "dict"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.data: dict[Any, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "size": len(self.data)}

    def get(self, session: SessionLike, key: Any) -> Any:
        return self.data[key]

    def get_default(self, session: SessionLike, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, session: SessionLike, key: Any, value: Any) -> None:
        with self.mutex:
            self.data[key] = value

    def delete(self, session: SessionLike, key: Any) -> None:
        with self.mutex:
            del self.data[key]

    def len(self, session: SessionLike) -> int:
        return len(self.data)

    def contains(self, session: SessionLike, key: Any) -> bool:
        return key in self.data

    def snapshot(self, session: SessionLike) -> dict[Any, Any]:
        with self.mutex:
            return dict(self.data)

    def keys(self, session: SessionLike) -> list[Any]:
        with self.mutex:
            return list(self.data)

    def pop(
        self, session: SessionLike, key: Any, has_default: bool = False, default: Any = None
    ) -> Any:
        with self.mutex:
            if has_default:
                return self.data.pop(key, default)
            return self.data.pop(key)

    def setdefault(self, session: SessionLike, key: Any, default: Any = None) -> Any:
        with self.mutex:
            return self.data.setdefault(key, default)

    def update(self, session: SessionLike, items: dict[Any, Any]) -> None:
        if not isinstance(items, dict):
            raise TypeError(f"update() needs a dict, not {type(items).__name__}")
        with self.mutex:
            self.data.update(items)

    def clear(self, session: SessionLike) -> None:
        with self.mutex:
            self.data.clear()

    def increment(self, session: SessionLike, key: Any, n: int = 1, default: int = 0) -> int:
        _check_int(n, "increment(n)")
        with self.mutex:
            current = self.data.get(key, default)
            if isinstance(current, bool) or not isinstance(current, int):
                raise TypeError(
                    f"dict {self.name!r}: cannot increment key {key!r}: its value is a "
                    f"{type(current).__name__}, not an int"
                )
            self.data[key] = current = current + n
            return current

    def compare_and_set(self, session: SessionLike, key: Any, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` if it is present and equal to ``expected``."""
        with self.mutex:
            if key in self.data and self.data[key] == expected:
                self.data[key] = new
                return True
            return False


# -- queue ---------------------------------------------------------------------


class QueueResource(Resource):
    """A FIFO of pickled-by-the-transport items.

    ``close()`` refuses further puts and lets getters drain what is left;
    getting from a closed, empty queue raises (the client's iteration helper
    stops there).  Items handed to a client that died before it received them
    go back to the front (``unget``, called by the server).
    """

    kind = "queue"

    def __init__(self, name: str, maxsize: int = 0) -> None:
        super().__init__(name)
        self.maxsize = _check_int(maxsize, "maxsize")
        self.items: collections.deque[Any] = collections.deque()
        self.closed = False
        self.deleted = False
        self.blocked = {"get": 0, "put": 0}  # callers parked in get/put, for status
        self.changed = threading.Condition(self.mutex)

    def options(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize}

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {
                **super().describe(),
                "size": len(self.items),
                "maxsize": self.maxsize,
                "closed": self.closed,
                "blocked_getters": self.blocked["get"],
                "blocked_putters": self.blocked["put"],
            }

    def _full(self, adding: int = 1) -> bool:
        """Whether ``adding`` more items would overflow (an empty queue takes any batch)."""
        return adding > 0 and 0 < self.maxsize < len(self.items) + adding and bool(self.items)

    def _check_usable(self, putting: bool) -> None:
        if self.deleted:
            raise _deleted(self)
        if putting and self.closed:
            raise ProxyShareError(f"queue {self.name!r} is closed: it accepts no more items")

    def _wait(
        self, session: SessionLike, role: str, ready: Callable[[], bool], deadline: float | None
    ) -> bool:
        """Park on the condition (mutex released) until ``ready()``; False on timeout."""
        self.blocked[role] += 1
        try:
            while not ready():
                step = _slice(deadline)
                if step <= 0:
                    return False
                if _no_waiting_here():
                    raise MustWait  # nothing taken or added yet
                self.changed.wait(step)
                if self.deleted:
                    raise _deleted(self)
                if not session.alive():
                    raise SessionGone  # before taking anything: the item stays queued
            return True
        finally:
            self.blocked[role] -= 1

    def _room_for(self, n: int, session: SessionLike, block: bool, seconds: float | None) -> None:
        """Return once ``n`` items fit; ``queue.Full`` if they do not in time."""
        self._check_usable(putting=True)
        if not self._full(n):
            return
        if not block or not self._wait(
            session, "put", lambda: not self._full(n) or self.closed, _deadline(seconds)
        ):
            raise queue.Full
        self._check_usable(putting=True)  # closed while we waited

    def put(
        self, session: SessionLike, item: Any, block: bool = True, timeout: float | None = None
    ) -> None:
        seconds = _queue_timeout(block, timeout)
        with self.mutex:
            self._room_for(1, session, bool(block), seconds)
            self.items.append(item)
            self.changed.notify_all()

    def put_many(
        self,
        session: SessionLike,
        items: list[Any],
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Append all ``items`` at once, in order, or none of them.

        A bounded queue waits until the whole batch fits (or is empty, so a
        batch larger than ``maxsize`` still goes in rather than never).  In a
        pipeline it never waits: ``queue.Full`` if the batch does not fit.
        """
        if not isinstance(items, list):
            raise TypeError(f"put_many() needs a list of items, not {type(items).__name__}")
        seconds = _queue_timeout(block, timeout)
        # Already holding the mutex means a pipeline is applying this: waiting
        # would let others in mid-batch while it holds other mutexes, so don't.
        if self.mutex._is_owned():  # type: ignore[attr-defined]
            block, seconds = False, None
        with self.mutex:
            self._room_for(len(items), session, bool(block), seconds)
            if items:
                self.items.extend(items)
                self.changed.notify_all()

    def _closed_and_empty(self) -> ProxyShareError:
        return ProxyShareError(f"queue {self.name!r} is closed and empty: no more items will come")

    def get(self, session: SessionLike, block: bool = True, timeout: float | None = None) -> Any:
        seconds = _queue_timeout(block, timeout)
        with self.mutex:
            self._check_usable(putting=False)
            if not self.items:
                if self.closed:
                    raise self._closed_and_empty()
                if not block or not self._wait(
                    session, "get", lambda: bool(self.items) or self.closed, _deadline(seconds)
                ):
                    raise queue.Empty
                if not self.items:
                    raise self._closed_and_empty()
            item = self.items.popleft()
            self.changed.notify_all()
            return item

    def get_many(
        self, session: SessionLike, max_items: int, timeout: float | None = None
    ) -> list[Any]:
        """Up to ``max_items``; waits (up to ``timeout``) only while the queue is empty.

        ``[]`` means the timeout ran out, or the queue is closed and drained.
        """
        if _check_int(max_items, "max_items") < 1:
            raise ValueError(f"max_items must be >= 1, not {max_items}")
        seconds = _queue_timeout(True, timeout)
        with self.mutex:
            self._check_usable(putting=False)
            if not self.items and not self.closed:
                self._wait(
                    session, "get", lambda: bool(self.items) or self.closed, _deadline(seconds)
                )
            taken = [self.items.popleft() for _ in range(min(max_items, len(self.items)))]
            if taken:
                self.changed.notify_all()
            return taken

    def unget(self, items: Iterable[Any]) -> None:
        """Put back items whose reply could not be delivered (the taker died)."""
        with self.mutex:
            self.items.extendleft(reversed(list(items)))
            self.changed.notify_all()

    def qsize(self, session: SessionLike) -> int:
        return len(self.items)

    def info(self, session: SessionLike) -> tuple[int, int, bool]:
        with self.mutex:
            return (len(self.items), self.maxsize, self.closed)

    def close(self, session: SessionLike) -> None:
        with self.mutex:
            self.closed = True
            self.changed.notify_all()

    def destroy(self) -> None:
        with self.mutex:
            self.deleted = True
            self.changed.notify_all()


# -- event ---------------------------------------------------------------------


class EventResource(Resource):
    """A ``threading.Event``.

    ``set()`` bumps a generation number, so a waiter wakes with True even if
    ``clear()`` follows at once (as with the stdlib event).
    """

    kind = "event"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.flag = False
        self.generation = 0
        self.deleted = False
        self.waiting = 0
        self.changed = threading.Condition(self.mutex)

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {**super().describe(), "set": self.flag, "waiting": self.waiting}

    def set(self, session: SessionLike) -> None:
        with self.mutex:
            self.flag = True
            self.generation += 1
            self.changed.notify_all()

    def clear(self, session: SessionLike) -> None:
        with self.mutex:
            self.flag = False

    def is_set(self, session: SessionLike) -> bool:
        return self.flag

    def wait(self, session: SessionLike, timeout: float | None = None) -> bool:
        deadline = _deadline(_check_timeout(True, timeout))
        with self.mutex:
            if self.deleted:
                raise _deleted(self)
            if self.flag:
                return True
            seen = self.generation
            self.waiting += 1
            try:
                while self.generation == seen:
                    step = _slice(deadline)
                    if step <= 0:
                        return False
                    if _no_waiting_here():
                        raise MustWait
                    self.changed.wait(step)
                    if self.generation != seen:
                        break
                    if self.deleted:
                        raise _deleted(self)
                    if not session.alive():
                        raise SessionGone
                return True
            finally:
                self.waiting -= 1

    def destroy(self) -> None:
        with self.mutex:
            self.deleted = True
            self.changed.notify_all()


# -- barrier -------------------------------------------------------------------


class _Round:
    """One filling of the barrier; waiters keep a reference to their own round."""

    __slots__ = ("broken", "passed", "waiters")

    def __init__(self) -> None:
        self.waiters: list[SessionLike] = []
        self.passed = False
        self.broken = False

    def settled(self) -> bool:
        return self.passed or self.broken


class BarrierResource(Resource):
    """A ``threading.Barrier`` (no ``action``) whose parties can die.

    A waiting party whose client disconnects breaks the barrier, so the others
    get ``threading.BrokenBarrierError`` instead of waiting forever.
    """

    kind = "barrier"

    def __init__(self, name: str, parties: int) -> None:
        if _check_int(parties, "parties") < 1:
            raise ValueError(f"parties must be >= 1, not {parties}")
        super().__init__(name)
        self.parties = parties
        self.broken = False
        self.deleted = False
        self.round = _Round()
        self.changed = threading.Condition(self.mutex)

    def options(self) -> dict[str, Any]:
        return {"parties": self.parties}

    def check_options(self, options: dict[str, Any]) -> None:
        parties = options.get("parties", self.parties)
        if parties != self.parties:
            raise ValueError(
                f"barrier {self.name!r} already exists with parties={self.parties}, "
                f"not {parties}: use another name or delete it first"
            )

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {
                **super().describe(),
                "parties": self.parties,
                "n_waiting": len(self.round.waiters),
                "waiters": [s.describe() for s in self.round.waiters],
                "broken": self.broken,
            }

    def _break(self) -> None:
        self.broken = True
        self.round.broken = True
        self.round = _Round()
        self.changed.notify_all()

    def wait(self, session: SessionLike, timeout: float | None = None) -> int:
        """Block until ``parties`` callers arrived; return this caller's arrival index."""
        deadline = _deadline(_check_timeout(True, timeout))
        with self.mutex:
            if self.deleted:
                raise _deleted(self)
            if self.broken:
                raise threading.BrokenBarrierError
            current = self.round
            index = len(current.waiters)
            if index + 1 < self.parties and _no_waiting_here():
                raise MustWait  # before taking a place
            current.waiters.append(session)
            if len(current.waiters) == self.parties:
                current.passed = True
                self.round = _Round()
                self.changed.notify_all()
                return index
            while not current.settled():
                step = _slice(deadline)
                if step <= 0:
                    self._break()  # as the stdlib does: a timeout breaks it for everyone
                    raise threading.BrokenBarrierError
                self.changed.wait(step)
                if current.settled():
                    break
                if not session.alive():
                    self._break()  # a party died: the others must not wait forever
                    raise SessionGone
            if current.passed:
                return index
            if self.deleted:
                raise _deleted(self)
            raise threading.BrokenBarrierError

    def abort(self, session: SessionLike) -> None:
        with self.mutex:
            self._break()

    def reset(self, session: SessionLike) -> None:
        """Back to empty and unbroken; current waiters get ``BrokenBarrierError``."""
        with self.mutex:
            if self.round.waiters:
                self.round.broken = True
                self.round = _Round()
                self.changed.notify_all()
            self.broken = False

    def n_waiting(self, session: SessionLike) -> int:
        return len(self.round.waiters)

    def info(self, session: SessionLike) -> tuple[int, int, bool]:
        with self.mutex:
            return (self.parties, len(self.round.waiters), self.broken)

    def destroy(self) -> None:
        with self.mutex:
            self.deleted = True
            self._break()


RESOURCE_TYPES: dict[str, type[Resource]] = {
    cls.kind: cls
    for cls in (
        CounterResource,
        LockResource,
        DictResource,
        QueueResource,
        SemaphoreResource,
        EventResource,
        BarrierResource,
    )
}
