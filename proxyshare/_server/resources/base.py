"""What every server-side resource shares, and how a call that must wait says so.

Each resource guards its state with its own re-entrant mutex (re-entrant so a
pipeline can hold several mutexes at once while calling ordinary methods).
Blocking waits never hold that mutex: a waiter parks on its own event or on a
condition, wakes at least every ``WAIT_SLICE`` seconds to check that its
client is still connected, and leaves the wait list if not.

Every method takes the calling ``session`` first (see ``_server.session``):
ownership of locks and semaphore permits belongs to a session, i.e. to one
thread of one client process, and ends when its connection drops.

No I/O happens here but through the session (``reply_early``, which a test
session may decline), so everything is testable with plain threads.

The server's reactor thread (see ``_server.reactor``) must never wait.  On
that thread an acquire that has to wait joins the FIFO and raises ``Parked``
(see ``permits``: the reactor answers it later, with no thread), and any
other call that would wait raises :class:`MustWait`, having changed nothing,
so the server runs it again on a worker thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar, Protocol

__all__ = [
    "WAIT_SLICE",
    "MustWait",
    "ReplySent",
    "Resource",
    "SessionGone",
    "SessionLike",
    "deadline_after",
    "forbid_waiting",
    "no_waiting_here",
    "time_slice",
]


WAIT_SLICE = 0.1  # how often a blocked waiter checks that its client is alive


class SessionLike(Protocol):
    """What resources need to know about a caller."""

    def alive(self) -> bool: ...

    def describe(self) -> dict[str, Any]: ...

    def hold(self, resource: Resource) -> None: ...

    def reply_early(self, result: Any, resource: Resource) -> bool:
        """Send the reply of the call this session is blocked in, from this thread.

        True if it was sent.  Lets a release hand a lock to the next waiter's
        client directly, instead of waking the waiter's thread to do it.
        """
        ...


class SessionGone(Exception):
    """The client went away while its request was blocked; nobody gets a reply."""


class ReplySent(Exception):
    """The call's reply already went out (see ``SessionLike.reply_early``)."""


class MustWait(Exception):
    """Raised instead of waiting, on a thread that must not wait (the reactor).

    The call has changed nothing yet: run all of it again on a thread that may wait.
    """


_thread = threading.local()


def forbid_waiting() -> None:
    """From now on, calls on this thread raise ``MustWait`` instead of waiting."""
    _thread.no_waiting = True


def no_waiting_here() -> bool:
    return getattr(_thread, "no_waiting", False)


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def time_slice(deadline: float | None) -> float:
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

    def undo(self, session: SessionLike, method: str, result: Any) -> None:
        """Take back what ``method`` did for ``session`` (a CANCEL crossed its reply).

        Called only for operations the table marks ``undoable``.
        """

    def destroy(self) -> None:
        """Called when the resource is deleted or the server stops: wake waiters, free files."""
