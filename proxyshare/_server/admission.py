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
    """One admitted connection, until its handshake is over (``settle``) or it closes."""

    __slots__ = ("evicted", "fd", "since")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.since = time.monotonic()
        self.evicted = False


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
        self.max_connections = max_connections or default_max_connections()
        self.max_handshakes = max_handshakes or DEFAULT_MAX_HANDSHAKES
        for name, value in (
            ("max_connections", self.max_connections),
            ("max_handshakes", self.max_handshakes),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}")
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

    def admit(self, fd: int) -> Ticket | None:
        """A ticket for the connection on ``fd``, or None: over the cap, close it now."""
        established = self._established()
        now = time.monotonic()
        with self._lock:
            pending = self._pending
            for ticket in list(pending):  # oldest first: stop at the first young one
                if now - ticket.since < self.handshake_timeout:
                    break
                self._evict(ticket)
            if established + len(pending) >= self.max_connections:
                self.refused += 1
                refuse = True
            else:
                refuse = False
                while len(pending) >= self.max_handshakes:
                    self._evict(next(iter(pending)))
                ticket = Ticket(fd)
                pending[ticket] = None
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
