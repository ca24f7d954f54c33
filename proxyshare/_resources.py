"""Server-side resources: the objects the server holds by name.

Each resource guards its state with its own re-entrant mutex (re-entrant so a
pipeline can hold several mutexes at once while calling ordinary methods).
Blocking waits never hold that mutex: a waiter parks on its own event or on a
condition, wakes at least every ``WAIT_SLICE`` seconds to check that its
client is still connected, and leaves the wait list if not.

Every method takes the calling ``session`` first (see ``_server.Session``):
ownership of locks and semaphore permits belongs to a session, i.e. to one
thread of one client process, and ends when its connection drops.

No I/O happens here, so everything is testable with plain threads.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from proxyshare._errors import NotOwnerError, ProxyShareError

__all__ = [
    "RESOURCE_TYPES",
    "WAIT_SLICE",
    "BarrierResource",
    "CounterResource",
    "DictResource",
    "EventResource",
    "LockResource",
    "QueueResource",
    "Resource",
    "SemaphoreResource",
    "SessionGone",
    "SessionLike",
]

WAIT_SLICE = 0.1  # how often a blocked waiter checks that its client is alive
_MISSING = object()


class SessionLike(Protocol):
    """What resources need to know about a caller."""

    def alive(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...

    def hold(self, resource: Resource) -> None: ...


class SessionGone(Exception):
    """The client went away while its request was blocked; nobody gets a reply."""


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__} ({value!r})")
    return value


def _check_timeout(blocking: object, timeout: object) -> float | None:
    """Validate stdlib-style (blocking, timeout); return seconds or None (forever)."""
    if not isinstance(blocking, (bool, int)):
        raise TypeError(f"blocking must be a bool, not {type(blocking).__name__}")
    if timeout is None or timeout == -1:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    if timeout < 0:
        raise ValueError("timeout must be a non-negative number of seconds (or None)")
    return float(timeout)


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

    def close(self) -> None:
        """Called when the resource is deleted or the server stops."""


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
    """A parked acquirer.  ``wake`` is a raw lock held until the grant: waking
    through it costs far less than ``threading.Event`` (no Condition), which
    matters because every contended hand-off pays it."""

    __slots__ = ("granted", "session", "wake")

    def __init__(self, session: SessionLike) -> None:
        self.session = session
        self.wake = threading.Lock()
        self.wake.acquire()
        self.granted = False

    def park(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the grant; True once granted."""
        return self.wake.acquire(timeout=seconds) or self.granted

    def grant(self) -> None:
        self.granted = True
        self.wake.release()


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
            waiter.grant()

    def _before_acquire(self, session: SessionLike, blocking: bool, timeout: float | None) -> None:
        """Hook: lets the lock refuse a self-deadlock."""

    def _expire(self) -> None:
        """Hook: lets a leased lock drop a holder whose lease ran out."""

    def acquire(self, session: SessionLike, blocking: bool = True, timeout: float | None = None) -> bool:
        seconds = _check_timeout(blocking, timeout)
        with self.mutex:
            self._expire()
            if self.available > 0 and not self.waiters:
                self._grant(session)
                return True
            if not blocking:
                return False
            self._before_acquire(session, bool(blocking), seconds)
            waiter = _Waiter(session)
            self.waiters.append(waiter)
        deadline = _deadline(seconds)
        while True:
            step = _slice(deadline)
            if step > 0 and waiter.park(step):
                return True
            with self.mutex:
                if waiter.granted:
                    if session.alive():
                        return True
                    self._take_back(session)
                    raise SessionGone
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
                    f"{self.noun} (a {self.kind} is owned by the process and thread that acquired it)"
                )
            self._take_back(session)

    def session_closed(self, session: SessionLike) -> None:
        with self.mutex:
            while session in self.holders:
                self._take_back(session)
            for waiter in [w for w in self.waiters if w.session is session]:
                self.waiters.remove(waiter)

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
                raise ValueError(f"lease must be a positive number of seconds or None, not {lease!r}")
            lease = float(lease)
        self.lease = lease

    def options(self) -> dict[str, Any]:
        return {"lease": self.lease}

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
        if _check_int(value, "value") < 0:
            raise ValueError("semaphore value must be >= 0")
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

    def pop(self, session: SessionLike, key: Any, has_default: bool = False, default: Any = None) -> Any:
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
    kind = "queue"

    def __init__(self, name: str, maxsize: int = 0) -> None:
        super().__init__(name)
        self.maxsize = _check_int(maxsize, "maxsize")
        self.items: collections.deque[Any] = collections.deque()
        self.closed = False
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
            }

    def _full(self) -> bool:
        return 0 < self.maxsize <= len(self.items)

    def _wait(self, session: SessionLike, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Park on the condition (mutex released) until ``ready()``; False on timeout."""
        while not ready():
            step = _slice(deadline)
            if step <= 0:
                return False
            self.changed.wait(step)
            if not session.alive():
                raise SessionGone
        return True

    def put(self, session: SessionLike, item: Any, block: bool = True, timeout: float | None = None) -> None:
        seconds = _check_timeout(block, timeout)
        with self.mutex:
            if self.closed:
                raise ProxyShareError(f"queue {self.name!r} is closed")
            if self._full():
                if not block or not self._wait(session, lambda: not self._full() or self.closed, _deadline(seconds)):
                    raise queue.Full
                if self.closed:
                    raise ProxyShareError(f"queue {self.name!r} is closed")
            self.items.append(item)
            self.changed.notify_all()

    def put_many(self, session: SessionLike, items: list[Any]) -> None:
        """Append all ``items`` at once, ignoring ``maxsize`` (one round trip, no partial state)."""
        with self.mutex:
            if self.closed:
                raise ProxyShareError(f"queue {self.name!r} is closed")
            self.items.extend(items)
            self.changed.notify_all()

    def get(self, session: SessionLike, block: bool = True, timeout: float | None = None) -> Any:
        seconds = _check_timeout(block, timeout)
        with self.mutex:
            if not self.items:
                if self.closed:
                    raise ProxyShareError(f"queue {self.name!r} is closed and empty")
                if not block or not self._wait(session, lambda: bool(self.items) or self.closed, _deadline(seconds)):
                    raise queue.Empty
                if not self.items:
                    raise ProxyShareError(f"queue {self.name!r} is closed and empty")
            item = self.items.popleft()
            self.changed.notify_all()
            return item

    def get_many(self, session: SessionLike, max_items: int, timeout: float | None = None) -> list[Any]:
        """Up to ``max_items``: waits (up to ``timeout``) only while the queue is empty."""
        if _check_int(max_items, "max_items") < 1:
            raise ValueError("max_items must be >= 1")
        seconds = _check_timeout(True, timeout)
        with self.mutex:
            if not self.items and not self.closed:
                self._wait(session, lambda: bool(self.items) or self.closed, _deadline(seconds))
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

    def close_queue(self, session: SessionLike) -> None:
        with self.mutex:
            self.closed = True
            self.changed.notify_all()


# -- event ---------------------------------------------------------------------


class EventResource(Resource):
    kind = "event"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.flag = False
        self.changed = threading.Condition(self.mutex)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "set": self.flag}

    def set(self, session: SessionLike) -> None:
        with self.mutex:
            self.flag = True
            self.changed.notify_all()

    def clear(self, session: SessionLike) -> None:
        with self.mutex:
            self.flag = False

    def is_set(self, session: SessionLike) -> bool:
        return self.flag

    def wait(self, session: SessionLike, timeout: float | None = None) -> bool:
        deadline = _deadline(_check_timeout(True, timeout))
        with self.mutex:
            while not self.flag:
                step = _slice(deadline)
                if step <= 0:
                    return False
                self.changed.wait(step)
                if not session.alive():
                    raise SessionGone
            return True


# -- barrier -------------------------------------------------------------------


class _Round:
    __slots__ = ("arrived", "broken", "passed")

    def __init__(self) -> None:
        self.arrived = 0
        self.passed = False
        self.broken = False


class BarrierResource(Resource):
    kind = "barrier"

    def __init__(self, name: str, parties: int) -> None:
        if _check_int(parties, "parties") < 1:
            raise ValueError("parties must be >= 1")
        super().__init__(name)
        self.parties = parties
        self.broken = False
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
                "n_waiting": self.round.arrived,
                "broken": self.broken,
            }

    def _break(self) -> None:
        self.broken = True
        self.round.broken = True
        self.round = _Round()
        self.changed.notify_all()

    def wait(self, session: SessionLike, timeout: float | None = None) -> int:
        deadline = _deadline(_check_timeout(True, timeout))
        with self.mutex:
            if self.broken:
                raise threading.BrokenBarrierError
            current = self.round
            index = current.arrived
            current.arrived += 1
            if current.arrived == self.parties:
                current.passed = True
                self.round = _Round()
                self.changed.notify_all()
                return index
            while not (current.passed or current.broken):
                step = _slice(deadline)
                if step <= 0:
                    self._break()
                    raise threading.BrokenBarrierError
                self.changed.wait(step)
                if not (current.passed or current.broken) and not session.alive():
                    self._break()  # a party died: the others must not wait forever
                    raise SessionGone
            if current.passed:
                return index
            raise threading.BrokenBarrierError

    def abort(self, session: SessionLike) -> None:
        with self.mutex:
            self._break()

    def reset(self, session: SessionLike) -> None:
        with self.mutex:
            if self.round.arrived:
                self.round.broken = True
                self.round = _Round()
                self.changed.notify_all()
            self.broken = False

    def n_waiting(self, session: SessionLike) -> int:
        return self.round.arrived

    def info(self, session: SessionLike) -> tuple[int, int, bool]:
        with self.mutex:
            return (self.parties, self.round.arrived, self.broken)


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
