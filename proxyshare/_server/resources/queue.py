"""The served queue: FIFO items, bounded or not, closable."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any

from proxyshare import _rules as rules
from proxyshare._errors import ProxyShareError
from proxyshare._server.resources.base import (
    MustWait,
    Resource,
    SessionGone,
    SessionLike,
    deadline_after,
    no_waiting_here,
    time_slice,
)

__all__ = ["QueueResource"]


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
        self.maxsize = rules.check_maxsize(maxsize)
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
                self.changed.notify_all()
            return taken

    def undo(self, session: SessionLike, method: str, result: Any) -> None:
        """A get that its caller cancelled: its items go back to the front."""
        self.unget(result if method == "get_many" else [result])

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
