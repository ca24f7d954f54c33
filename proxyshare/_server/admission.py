"""Who may be connected: a cap on open connections, and on those still in the handshake.

Each accepted connection gets a thread for its handshake (TLS, then the HMAC
challenge, then the first request): the stdlib's handshake functions block,
and a thread that waits on a socket costs little.  What must not happen is
that peers who never finish a handshake (idle, half-open, sending garbage)
pile up threads and descriptors until nobody else gets in.  So:

* at most ``max_handshakes`` connections are in the handshake at once; a new
  one beyond that evicts the *oldest* (its socket is shut down, which wakes
  its thread).  A real client finishes in milliseconds, so the oldest is the
  one most likely to be a peer that will never finish, and a newcomer —
  perhaps a real client — always gets its chance;
* the evicted connection's thread takes the newcomer's handshake next
  (``Ticket.successor``), so a flood costs no thread starts: starting one
  waits for the new thread to get the GIL, about a millisecond under load,
  and 1,000 queued connections then kept a real client waiting a second;
* a handshake older than ``handshake_timeout`` is evicted when the next
  connection arrives (its own socket timeouts end it otherwise);
* at most ``max_connections`` connections are open (in the handshake or
  served): one more is closed at once, before any byte, so the process stays
  clear of its file-descriptor limit.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_MAX_HANDSHAKES", "Admission", "Ticket", "default_max_connections"]

logger = logging.getLogger("proxyshare.server")

DEFAULT_MAX_HANDSHAKES = 256
_FD_RESERVE = 64  # descriptors kept for the listener, resources' files, logs, pipes
_REFUSAL_LOG_EVERY = 10.0  # seconds between two "connection refused" warnings


def default_max_connections() -> int:
    """The process's open-file limit, less a reserve (at least 64, at most 65536)."""
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 1024
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(64, min(65536, soft - _FD_RESERVE))


class Ticket:
    """One admitted connection: ``greet(client, ticket)`` runs its handshake, on a thread.

    ``inherited``: the thread of an evicted connection runs it (see
    ``successor``), so the accepter starts none.
    """

    __slots__ = ("client", "done", "evicted", "fd", "greet", "inherited", "since", "successor")

    def __init__(self, fd: int, greet: Callable[[Any, Ticket], None], client: Any) -> None:
        self.fd = fd
        self.greet = greet
        self.client = client
        self.since = time.monotonic()
        self.evicted = False
        self.done = False  # its greet returned: its thread takes no successor any more
        self.inherited = False
        self.successor: Ticket | None = None


class Admission:
    """Counts connections in the handshake; evicts and refuses as the caps say.

    ``established()`` tells how many connections are past the handshake
    (sessions and stdlib connections), counted where they are kept.
    """

    def __init__(
        self,
        established: Callable[[], int],
        max_connections: int | None = None,
        max_handshakes: int | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        for name, value in (
            ("max_connections", max_connections),
            ("max_handshakes", max_handshakes),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise ValueError(f"{name} must be a positive int, not {value!r}")
        self.max_connections = max_connections or default_max_connections()
        self.max_handshakes = max_handshakes or DEFAULT_MAX_HANDSHAKES
        self.handshake_timeout = handshake_timeout
        self._established = established
        self._lock = threading.Lock()
        self._pending: dict[Ticket, None] = {}  # oldest first
        self.evicted = 0  # handshakes cut short, since the start
        self.refused = 0  # connections closed at once, over max_connections
        self._last_refusal_log = 0.0

    @property
    def in_handshake(self) -> int:
        return len(self._pending)

    def admit(self, fd: int, greet: Callable[[Any, Ticket], None], client: Any) -> Ticket | None:
        """A ticket for ``client`` (on ``fd``), or None: over the cap, close it now.

        Start a thread for it (``run``) unless it is ``inherited``.
        """
        established = self._established()
        now = time.monotonic()
        heir = None  # an evicted connection whose thread will run this one
        with self._lock:
            pending = self._pending
            for old in list(pending):  # oldest first: stop at the first young one
                if now - old.since < self.handshake_timeout:
                    break
                self._evict(old)
                heir = heir or old
            if established + len(pending) >= self.max_connections:
                self.refused += 1
                refuse = True
            else:
                refuse = False
                while len(pending) >= self.max_handshakes:
                    old = next(iter(pending))
                    self._evict(old)
                    heir = heir or old
                ticket = Ticket(fd, greet, client)
                pending[ticket] = None
                if heir is not None and not heir.done:
                    heir.successor = ticket
                    ticket.inherited = True
        if refuse:
            if now - self._last_refusal_log >= _REFUSAL_LOG_EVERY:
                self._last_refusal_log = now
                logger.warning(
                    "refusing new connections: %d are open, the limit is %d "
                    "(--max-connections / PROXYSHARE_MAX_CONNECTIONS)",
                    established + len(pending),
                    self.max_connections,
                )
            return None
        return ticket

    def _evict(self, ticket: Ticket) -> None:
        """Under the lock: end the handshake on ``ticket`` (its thread sees EOF)."""
        del self._pending[ticket]
        ticket.evicted = True
        self.evicted += 1
        # The thread closes the descriptor only after leaving _pending (under
        # this lock), so ``fd`` is still this connection's.
        sock = socket.socket(fileno=ticket.fd)
        try:
            with contextlib.suppress(OSError):  # the peer may have reset it already
                sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()

    def settle(self, ticket: Ticket) -> bool:
        """The handshake is over; False if the connection was evicted meanwhile (drop it)."""
        with self._lock:
            if ticket.evicted:
                return False
            self._pending.pop(ticket, None)
            return True

    def release(self, ticket: Ticket) -> None:
        """The handshake thread is done with the connection; call before closing its fd."""
        with self._lock:
            self._pending.pop(ticket, None)

    def run(self, ticket: Ticket) -> None:
        """A handshake thread's body: ``ticket``'s greet, then those of its successors."""
        next_ticket: Ticket | None = ticket
        while next_ticket is not None:
            ticket = next_ticket
            try:
                ticket.greet(ticket.client, ticket)
            except Exception:  # a bug: the successor must still be served
                logger.exception("a handshake failed; its connection was dropped")
            finally:
                with self._lock:
                    ticket.done = True
                    next_ticket = ticket.successor
                    ticket.successor = ticket.client = None
