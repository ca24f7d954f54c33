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
import threading
import time
from collections.abc import Callable
from typing import Any

from proxyshare import _protocol as P
from proxyshare._server.reactor import Timer
from proxyshare._server.resources.base import Resource
from proxyshare._wire import QUIET, SENT, FramedSocket, frame_parts

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
        "cancel_pending",
        "ended",
        "held",
        "host",
        "id",
        "last",
        "ops",
        "outbox",
        "pid",
        "received",
        "resume",
        "send_lock",
        "since",
        "stopping",
        "thread",
        "unacked",
        "waiting",
        "wire",
        "writable",
    )

    def __init__(
        self,
        wire: FramedSocket,
        pid: int,
        host: str,
        thread: str,
        resume: Callable[[Session], None],
        writable: Callable[[Session], None],
        stopping: threading.Event,
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
        self.received = 0  # requests read so far (a CANCEL names one by this count)
        # What the last request did that a CANCEL undoes: (resource, method, result).
        self.last: tuple[Resource, str, Any] | None = None
        self.cancel_pending = False  # the client sent a CANCEL while a worker waited
        self.resume = resume  # hands the session back to the reactor
        # Replies the socket did not take at once, oldest first: the reactor sends
        # them when it is writable, and reads no request from it before.
        self.outbox: list[memoryview] = []
        self.send_lock = threading.Lock()  # replies come from several threads
        self.writable = writable  # asks the reactor to wait for the socket to be writable
        self.stopping = stopping  # the server's stop_event

    def alive(self) -> bool:
        """False once the client has gone, or has cancelled the call it waits in.

        While a request is being served the client sends nothing but a CANCEL
        (see ``proxyshare._protocol``), so bytes waiting to be read mean that,
        and EOF means the client is gone.  Either way the wait ends having
        taken nothing.
        """
        state = self.wire.peer_state()
        if state == QUIET:
            return True
        if state == SENT:
            self.cancel_pending = True
        return False

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
        if not self.send(pickle.dumps(reply, P.PICKLE_PROTOCOL)):
            return False
        self.ops += 1
        return True

    def send(self, payload: bytes) -> bool:
        """Send one frame without ever blocking; False if the client is gone.

        What the socket does not take now waits in ``outbox``, in order, and
        the reactor sends it once the socket is writable: a client that does
        not read its replies stalls nobody but itself.
        """
        parts = frame_parts(payload)
        with self.send_lock:
            if self.outbox:
                self.outbox += parts
                return True
            try:
                sent = self.wire.send_some(parts[0])
            except OSError:
                return False
            if sent == len(parts[0]) and len(parts) == 1:
                return True  # the common case: a small reply, all taken at once
            parts[0] = parts[0][sent:]
            self.outbox = parts
            if self.attached and not self.ended:
                self.writable(self)
        return True

    def flush(self) -> bool:
        """Reactor thread: send what waits in ``outbox``; True once it is empty."""
        with self.send_lock:
            outbox = self.outbox
            while outbox:
                sent = self.wire.send_some(outbox[0])
                if sent < len(outbox[0]):
                    outbox[0] = outbox[0][sent:]
                    return False
                del outbox[0]
            return True

    def reply_early(self, result: Any, resource: Resource) -> bool:
        """Answer the acquire this session waits in, from the granting thread.

        A session parked in the reactor stays watched there; one whose wait
        runs on a worker goes back to the reactor now, so its client's next
        request is served without waiting for that worker to wake.
        """
        self.unpark()  # before the reply: the client's next request may follow at once
        self.last = (resource, "acquire", result)  # a CANCEL that crossed the reply undoes it
        # A stopping server grants nothing (see ShareServer._end_session): a lock
        # freed now, by a release or a lease running out, must not tell a waiter
        # True from a server that is going away.  Sent no reply, the waiter sees
        # its connection end at close() (ServerUnavailableError).
        if not self.stopping.is_set() and not self.answer((P.OK, result)):
            return False  # the client is gone: its EOF ends the session
        # A worker's wait (see server.py): hand the session back.  Read ``attached``
        # first: ``_drop`` sets ``ended`` before it detaches a session.
        if not self.attached and not self.ended:
            self.resume(self)
        return True
