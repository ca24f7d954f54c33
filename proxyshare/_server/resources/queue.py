"""The served queue: FIFO items, bounded or not, closable, delivered at least once."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable
from typing import Any

from proxyshare import _rules as rules
from proxyshare._errors import ProxyShareError
from proxyshare._server.resources.base import (
    MustWait,
    Resource,
    SessionGone,
    SessionLike,
    deadline_after,
    in_pipeline,
    no_waiting_here,
    time_slice,
)

__all__ = ["QueueResource"]


class QueueResource(Resource):
    """A FIFO of pickled-by-the-transport items, delivered at least once.

    ``close()`` refuses further puts and lets getters drain what is left;
    getting from a closed, empty queue raises (the client's iteration helper
    stops there).

    An item (or a ``get_many`` batch) handed to a session stays *in flight*
    for that session until its next request, which acknowledges it (``ack``,
    called by the server; a clean close is a last request), or until its
    connection drops, which puts the items back at the front, in order
    (``requeue``, through ``session_closed``).  So an item is delivered again
    only after a consumer died holding it, once per such death.  In-flight
    items count neither in ``qsize()`` nor against ``maxsize``; a state dir
    keeps them, and a restart puts them back at the front (``requeue_all``).
    """

    kind = "queue"

    def __init__(self, name: str, maxsize: int = 0) -> None:
        super().__init__(name)
        self.maxsize = rules.check_maxsize(maxsize)
        self.items: collections.deque[Any] = collections.deque()
        self.closed = False
        self.deleted = False
        self.blocked = {"get": 0, "put": 0}  # callers parked in get/put, for status
        self.changed = threading.Condition(self.mutex)
        # session -> (batch number, items it was handed and has not acknowledged)
        self.in_flight: dict[SessionLike, tuple[int, list[Any]]] = {}
        self._batches = 0  # numbers batches in the order they were handed out

    def options(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize}

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {
                **super().describe(),
                "size": len(self.items),
                "maxsize": self.maxsize,
                "closed": self.closed,
                "in_flight": sum(len(batch) for _, batch in self.in_flight.values()),
                "blocked_getters": self.blocked["get"],
                "blocked_putters": self.blocked["put"],
            }

    def _full(self, adding: int = 1) -> bool:
        """Whether ``adding`` more items would overflow (an empty queue takes any batch)."""
        return adding > 0 and 0 < self.maxsize < len(self.items) + adding and bool(self.items)

    def _check_usable(self, putting: bool) -> None:
        if self.deleted:
            raise rules.deleted_while_waiting(self.kind, self.name)
        if putting and self.closed:
            raise rules.queue_closed(self.name)

    def _wait(
        self, session: SessionLike, role: str, ready: Callable[[], bool], deadline: float | None
    ) -> bool:
        """Park on the condition (mutex released) until ``ready()``; False on timeout."""
        self.blocked[role] += 1
        try:
            while not ready():
                step = time_slice(deadline)
                if step <= 0:
                    return False
                if no_waiting_here():
                    raise MustWait  # nothing taken or added yet
                self.changed.wait(step)
                if self.deleted:
                    raise rules.deleted_while_waiting(self.kind, self.name)
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
            session, "put", lambda: not self._full(n) or self.closed, deadline_after(seconds)
        ):
            raise queue.Full
        self._check_usable(putting=True)  # closed while we waited

    def put(
        self, session: SessionLike, item: Any, block: bool = True, timeout: float | None = None
    ) -> None:
        seconds = rules.check_queue_timeout(block, timeout)
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
        seconds = rules.check_queue_timeout(block, timeout)
        # A pipeline holds other mutexes: waiting would let others in mid-batch.
        # (Holding this mutex proves nothing: a server with a state dir applies
        # every change under it, and a wait on the condition releases it.)
        if in_pipeline():
            block, seconds = False, None
        with self.mutex:
            self._room_for(len(items), session, bool(block), seconds)
            if items:
                self.items.extend(items)
                self.changed.notify_all()

    def _closed_and_empty(self) -> ProxyShareError:
        return rules.queue_closed_and_empty(self.name)

    def get(self, session: SessionLike, block: bool = True, timeout: float | None = None) -> Any:
        seconds = rules.check_queue_timeout(block, timeout)
        with self.mutex:
            self._check_usable(putting=False)
            if not self.items:
                if self.closed:
                    raise self._closed_and_empty()
                if not block or not self._wait(
                    session, "get", lambda: bool(self.items) or self.closed, deadline_after(seconds)
                ):
                    raise queue.Empty
                if not self.items:
                    raise self._closed_and_empty()
            item = self.items.popleft()
            self._hand_out(session, [item])
            self.changed.notify_all()
            return item

    def get_many(
        self, session: SessionLike, max_items: int, timeout: float | None = None
    ) -> list[Any]:
        """Up to ``max_items``; waits (up to ``timeout``) only while the queue is empty.

        ``[]`` means the timeout ran out, or the queue is closed and drained.
        """
        max_items = rules.check_max_items(max_items)
        seconds = rules.check_queue_timeout(True, timeout)
        with self.mutex:
            self._check_usable(putting=False)
            if not self.items and not self.closed:
                self._wait(
                    session, "get", lambda: bool(self.items) or self.closed, deadline_after(seconds)
                )
            taken = [self.items.popleft() for _ in range(min(max_items, len(self.items)))]
            if taken:
                self._hand_out(session, taken)
                self.changed.notify_all()
            return taken

    def undo(self, session: SessionLike, method: str, result: Any) -> None:
        """A get that its caller cancelled after its reply went out: the items go back."""
        self.requeue(session)

    # -- at least once -----------------------------------------------------------

    def _hand_out(self, session: SessionLike, items: list[Any]) -> None:
        """``items`` go to ``session``: in flight until it acknowledges them (under the mutex)."""
        entry = self.in_flight.get(session)
        if entry is None:
            self._batches += 1
            self.in_flight[session] = (self._batches, list(items))
            session.hold(self)  # its drop calls session_closed
            session.awaits_ack(self)  # its next request calls ack
        else:
            entry[1].extend(items)  # a second get in one pipeline

    def ack(self, session: SessionLike) -> None:
        """``session`` made its next request: what it was handed is done with."""
        with self.mutex:
            if self.in_flight.pop(session, None) is not None and self.journal is not None:
                self.journal.record(self, session, "ack")

    def requeue(self, session: SessionLike) -> int:
        """Put what ``session`` has in flight back at the front, in order; how many items.

        The server calls this when the session's connection drops (and when a
        get whose reply already went out is cancelled).
        """
        with self.mutex:
            entry = self.in_flight.pop(session, None)
            if entry is None:
                return 0
            self.items.extendleft(reversed(entry[1]))
            self.changed.notify_all()
            if self.journal is not None:
                self.journal.record(self, session, "requeue")
            return len(entry[1])

    def requeue_all(self) -> int:
        """Every in-flight item back at the front, oldest batch first (at a restart)."""
        with self.mutex:
            batches = sorted(self.in_flight.values(), key=lambda entry: entry[0])
            self.in_flight.clear()
            items = [item for _, batch in batches for item in batch]
            if items:
                self.items.extendleft(reversed(items))
                self.changed.notify_all()
            return len(items)

    def session_closed(self, session: SessionLike) -> None:
        self.requeue(session)

    def dump_state(self) -> dict[str, Any]:
        return {
            "items": list(self.items),
            "closed": self.closed,
            "in_flight": [
                (session.id, number, list(batch))
                for session, (number, batch) in self.in_flight.items()
            ],
        }

    def load_state(self, state: Any, session_of: Callable[[int], SessionLike]) -> None:
        self.items = collections.deque(state["items"])
        self.closed = bool(state["closed"])
        self.in_flight = {
            session_of(sid): (int(number), list(batch)) for sid, number, batch in state["in_flight"]
        }
        self._batches = max((number for number, _ in self.in_flight.values()), default=0)

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
