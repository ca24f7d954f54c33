"""One client connection (one thread of one client process) as the server sees it.

A session owns what its thread acquired: locks, semaphore permits, barrier
places.  When its connection drops, the server releases all of it.  While
the thread waits in ``acquire()``, the session is *waiting*: parked in the
resource's FIFO, with the reactor still watching its socket (so a client
that dies is noticed at once) and, for a timed acquire, a timer.  Queue
items it was handed stay in flight (``unacked``) until its next request.
"""

from __future__ import annotations

import itertools
import pickle
import time
from collections.abc import Callable
from typing import Any

from proxyshare import _protocol as P
from proxyshare._server.reactor import Timer
from proxyshare._server.resources.base import Resource
from proxyshare._wire import FramedSocket

__all__ = ["Session", "Waiting"]

_ids = itertools.count(1)


class Waiting:
    """What a session parked in the reactor waits for: which resource, as which
    waiter, and the timer of its timeout (None: no timeout)."""

    __slots__ = ("resource", "timer", "waiter")

    def __init__(self, resource: Any, waiter: Any, timer: Timer | None) -> None:
        self.resource = resource
        self.waiter = waiter
        self.timer = timer


class Session:
    """One client connection (one thread of one client process)."""

    __slots__ = (
        "attached",
        "ended",
        "held",
        "host",
        "id",
        "ops",
        "pid",
        "resume",
        "since",
        "thread",
        "unacked",
        "waiting",
        "wire",
    )

    def __init__(
        self,
        wire: FramedSocket,
        pid: int,
        host: str,
        thread: str,
        resume: Callable[[Session], None],
    ) -> None:
        self.id = next(_ids)
        self.wire = wire
        self.pid = pid
        self.host = host
        self.thread = thread
        self.since = time.time()
        self.ops = 0
        self.held: set[Resource] = set()
        self.unacked: list[Resource] = []  # queues whose items its next request acknowledges
        self.attached = False  # watched by the reactor (else a worker owns it)
        self.ended = False  # being dropped: detached, but no worker's to hand back
        self.waiting: Waiting | None = None  # while parked in the reactor
        self.resume = resume  # hands the session back to the reactor

    def alive(self) -> bool:
        """False once the client has gone: its socket reads as EOF.

        While a request is being served the client sends nothing more, so a
        readable socket can only mean the peer closed it.
        """
        return not self.wire.peer_closed()

    def describe(self) -> dict[str, Any]:
        return {"client": self.id, "pid": self.pid, "host": self.host, "thread": self.thread}

    def hold(self, resource: Resource) -> None:
        self.held.add(resource)

    def awaits_ack(self, resource: Resource) -> None:
        self.unacked.append(resource)

    def unpark(self) -> Waiting | None:
        """No longer parked (answered, or gone); cancels the timeout.  Returns what it was."""
        waiting, self.waiting = self.waiting, None
        if waiting is not None and waiting.timer is not None:
            waiting.timer.cancel()
        return waiting

    def answer(self, reply: tuple[int, Any]) -> bool:
        """Send a small reply from whatever thread decided it; False if the client is gone."""
        try:
            self.wire.send_bytes(pickle.dumps(reply, P.PICKLE_PROTOCOL))
        except OSError:
            return False
        self.ops += 1
        return True

    def reply_early(self, result: Any) -> bool:
        """Answer the acquire this session waits in, from the granting thread.

        A session parked in the reactor stays watched there; one whose wait
        runs on a worker goes back to the reactor now, so its client's next
        request is served without waiting for that worker to wake.
        """
        self.unpark()  # before the reply: the client's next request may follow at once
        if not self.answer((P.OK, result)):
            return False  # the client is gone: its EOF ends the session
        # A worker's wait (see server.py): hand the session back.  Read ``attached``
        # first: ``_drop`` sets ``ended`` before it detaches a session.
        if not self.attached and not self.ended:
            self.resume(self)
        return True
