"""Ownership with a FIFO hand-off: what a lock and a semaphore share."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from proxyshare import _rules as rules
from proxyshare._server.resources.base import (
    ReplySent,
    Resource,
    SessionGone,
    SessionLike,
    deadline_after,
    no_waiting_here,
    time_slice,
)

__all__ = ["FifoPermits", "Parked", "Waiter"]


class Parked(Exception):
    """Raised on the reactor thread by an acquire that joined the FIFO.

    Nothing waits for it: the reply comes from the grant (``reply_early``),
    from the reactor's timer (``cancel_wait``), or from a delete (``on_wake``
    with ``error`` set).
    """

    def __init__(self, resource: FifoPermits, waiter: Waiter, deadline: float | None) -> None:
        super().__init__()
        self.resource = resource
        self.waiter = waiter
        self.deadline = deadline


class Waiter:
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
        self.on_wake: Callable[[Waiter], None] | None = None

    def park(self, seconds: float) -> None:
        """Sleep until woken (a hand-off or close()) or ``seconds`` pass."""
        self._wake.acquire(timeout=seconds)

    def wake(self) -> None:
        """Called once, under the resource mutex, by whoever removed it from the list."""
        self._wake.release()
        if self.on_wake is not None:
            self.on_wake(self)


class FifoPermits(Resource):
    """``permits`` units handed to sessions first come, first served.

    A release hands the unit straight to the oldest waiter (so nobody can
    barge in between), and a session's units come back when it disconnects.
    """

    noun: ClassVar[str] = "permit"

    def __init__(self, name: str, permits: int) -> None:
        super().__init__(name)
        self.available = permits
        self.holders: dict[SessionLike, list[float]] = {}  # session -> acquisition times
        self.waiters: collections.deque[Waiter] = collections.deque()
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
            waiter.replied = waiter.session.reply_early(True, self)
            waiter.wake()

    def _before_acquire(self, session: SessionLike, blocking: bool, timeout: float | None) -> None:
        """Hook: lets the lock refuse a self-deadlock."""

    def _expire(self) -> None:
        """Hook: lets a leased lock drop a holder whose lease ran out."""

    def acquire(
        self, session: SessionLike, blocking: bool = True, timeout: float | None = None
    ) -> bool:
        seconds = rules.check_timeout(blocking, timeout)
        with self.mutex:
            if self.deleted:
                raise rules.deleted_while_waiting(self.kind, self.name)
            self._expire()
            if self.available > 0 and not self.waiters:
                self._grant(session)
                return True
            if not blocking:
                return False
            self._before_acquire(session, bool(blocking), seconds)
            waiter = Waiter(session)
            self.waiters.append(waiter)  # here, so the FIFO order is the arrival order
        deadline = deadline_after(seconds)
        if no_waiting_here():
            raise Parked(self, waiter, deadline)
        return self._await_grant(session, waiter, deadline)

    def cancel_wait(self, waiter: Waiter) -> bool:
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

    def _await_grant(self, session: SessionLike, waiter: Waiter, deadline: float | None) -> bool:
        while True:
            step = time_slice(deadline)
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
                if self.deleted:  # destroy() already emptied the wait list
                    raise rules.deleted_while_waiting(self.kind, self.name)
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
                raise rules.not_owner(self.kind, self.name)
            self._take_back(session)

    def undo(self, session: SessionLike, method: str, result: Any) -> None:
        """A granted acquire that its caller cancelled: give the permit back."""
        if result is True:
            with self.mutex:
                if session in self.holders:
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
                waiter.error = rules.deleted_while_waiting(self.kind, self.name)
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
