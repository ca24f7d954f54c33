"""Message framing straight on a socket, for the lean session protocol.

Same frame as ``multiprocessing.connection``: a 4-byte big-endian length,
then the payload, so either side may use a ``Connection`` for the handshake.
Reading with ``recv_into`` a reusable buffer takes one system call per small
message instead of ``Connection``'s two (header, then body): measured here,
a round trip drops from ~21 to ~13 µs.

A session is strictly request/response, so a read never finds the start of
the next message behind the current one.

Waiting for a message polls for a few tens of µs before it sleeps (see
``recv_view``).  The reply to a small request, and a busy client's next
request, usually come within that time, and a thread that has not slept
needs no wake-up: on the 2-core VM this project is measured on, waking a
sleeping thread on the other core costs more than the whole request.

The server's reactor (see ``proxyshare._server.reactor``) must never block, so it uses
``recv_ready``/``send_ready``: one non-blocking system call each.  The rare
message that does not fit in one call (large, or split by the network) is
finished with the blocking ``recv_view``/``send_rest`` on a worker thread.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

__all__ = [
    "MAX_FRAME",
    "SPIN_ENV",
    "FramedSocket",
    "Pollers",
    "default_pollers",
    "keepalive",
    "next_budget",
    "spin_seconds",
]

_HEADER = struct.Struct("!i")
_BUFFER = 64 * 1024
_SMALL = 16 * 1024  # below this, header and payload go out in one send
MAX_FRAME = 0x7FFFFFFF  # the largest message a frame's (signed 32-bit) length can carry

SPIN_ENV = "PROXYSHARE_SPIN_US"
_DEFAULT_SPIN_US = 50.0


def spin_seconds(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """How long a wait polls before it sleeps: ``$PROXYSHARE_SPIN_US`` µs (0: never)."""
    text = environ.get(SPIN_ENV, "").strip()
    if not text:
        return _DEFAULT_SPIN_US * 1e-6
    try:
        micros = float(text)
    except ValueError:
        micros = -1.0
    if not 0 <= micros <= 10_000:
        raise ValueError(
            f"{SPIN_ENV}={text!r}: expected microseconds from 0 to 10000 (0 turns polling "
            f"off; the default is {_DEFAULT_SPIN_US:g})"
        )
    return micros * 1e-6


_SPIN = spin_seconds()
_now = time.perf_counter
_yield = os.sched_yield if hasattr(os, "sched_yield") else lambda: None


def next_budget(budget: float, waited: float, full: float) -> float:
    """The polling budget after a wait that slept and took ``waited`` seconds.

    Full again if polling longer would have caught the message (it came
    within twice the full budget); otherwise halved, down to 0 (no polling).
    """
    if waited < 2 * full:
        return full
    return budget / 2 if budget >= full / 8 else 0.0


class Pollers:
    """Lets at most ``n`` threads of a process poll at once.

    Polling threads take turns on one GIL, so more of them than cores only
    slow down the threads with work to do.  Raw locks, because acquiring a
    ``threading.Semaphore`` costs about a microsecond of Python per message.
    """

    def __init__(self, n: int) -> None:
        self._slots = [threading.Lock() for _ in range(max(1, n))]
        if hasattr(os, "register_at_fork"):  # a child must not inherit a held slot
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._slots = [threading.Lock() for _ in self._slots]

    def take(self) -> threading.Lock | None:
        """A free slot (release it when done polling), or None: sleep instead."""
        for slot in self._slots:
            if slot.acquire(False):
                return slot
        return None


def default_pollers() -> int:
    """Pollers per process: one per core, at most two (there is one GIL)."""
    return min(2, os.cpu_count() or 1)


class FramedSocket:
    """Length-prefixed messages over a connected stream socket.

    Offers ``send_bytes``/``recv_bytes`` so the stdlib's HMAC handshake
    (``answer_challenge``/``deliver_challenge``) runs on it unchanged.
    """

    __slots__ = ("_buf", "_spin", "_view", "readable", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray(_BUFFER)
        self._view = memoryview(self._buf)
        self._spin = _SPIN  # this connection's current polling budget, seconds
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        # readable(0): events now (POLLIN, or POLLHUP/POLLERR once the peer is gone)
        self.readable = poller.poll

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_bytes(self, payload: bytes) -> None:
        size = len(payload)
        if size > MAX_FRAME:
            raise ValueError(f"message of {size} bytes is too large to send")
        if size < _SMALL:
            self.sock.sendall(_HEADER.pack(size) + payload)
        else:
            self.sock.sendall(_HEADER.pack(size))
            self.sock.sendall(payload)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        return bytes(self.recv_view(maxlength))

    def _wait_first_bytes(self, pollers: Pollers | None) -> int:
        """Receive into the buffer: poll for up to the budget, then sleep.

        The budget adapts per connection: it stays full while messages come
        within twice the full budget, and halves down to zero (never polling)
        while they come later, i.e. while polling would only burn CPU.  With
        no free slot in ``pollers``, enough threads poll already: sleep.
        """
        view = self._view
        sock = self.sock
        budget = self._spin
        start = _now()
        slot = pollers.take() if budget and pollers is not None else None
        if slot is not None:
            try:
                # poll(0) rather than a non-blocking recv: no exception to raise
                # and catch each time round, which costs more than the system call.
                readable = self.readable
                end = start + budget
                while not readable(0):
                    if _now() >= end:
                        break
                    _yield()  # let a runnable thread on this core go first
                else:
                    self._spin = _SPIN
                    return sock.recv_into(view)  # there is data (or EOF): no wait
            finally:
                slot.release()
        got = sock.recv_into(view)
        if _SPIN:
            self._spin = next_budget(budget, _now() - start, _SPIN)
        return got

    def recv_ready(self, maxlength: int | None = None) -> memoryview | int:
        """Read what has arrived, without blocking.

        Returns the message (a view into the buffer, valid until the next
        read) if all of it was there; otherwise how many of its bytes are in
        the buffer (0: none), for ``recv_view(maxlength, have=...)`` to finish.
        """
        try:
            got = self.sock.recv_into(self._view, 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0
        if not got:
            raise EOFError("connection closed")
        if got >= 4:
            end = 4 + self._size(maxlength)
            if got == end:
                return self._view[4:end]
            if got > end:
                raise OSError("protocol error: data after a message")
        return got

    def send_ready(self, payload: bytes) -> int:
        """Send what the socket takes now, without blocking; return bytes of the frame sent.

        A large payload is not tried at all (0): copying it into one frame
        would cost more than the worker thread that sends it.
        """
        if len(payload) >= _SMALL:
            return 0
        try:
            return self.sock.send(_HEADER.pack(len(payload)) + payload, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0

    def send_rest(self, payload: bytes, sent: int) -> None:
        """Finish sending the frame of ``payload`` of which ``send_ready`` sent ``sent`` bytes."""
        if not sent:
            self.send_bytes(payload)
        else:
            self.sock.sendall((_HEADER.pack(len(payload)) + payload)[sent:])

    def _size(self, maxlength: int | None) -> int:
        (size,) = _HEADER.unpack_from(self._view)
        if size < 0 or (maxlength is not None and size > maxlength):
            raise OSError(f"bad message length {size}")
        return int(size)

    def recv_view(
        self, maxlength: int | None = None, pollers: Pollers | None = None, have: int = 0
    ) -> memoryview | bytearray:
        """The next message; a view into the buffer, valid until the next read.

        ``pollers``: see ``_wait_first_bytes``; None never polls (the handshake).
        ``have``: bytes of the message already in the buffer (from ``recv_ready``).
        """
        view = self._view
        sock = self.sock
        got = have or self._wait_first_bytes(pollers)
        if not got:
            raise EOFError("connection closed")
        while got < 4:
            more = sock.recv_into(view[got:])
            if not more:
                raise EOFError("connection closed inside a message header")
            got += more
        size = self._size(maxlength)
        end = 4 + size
        if end <= _BUFFER:
            while got < end:
                more = sock.recv_into(view[got:end])
                if not more:
                    raise EOFError("connection closed inside a message")
                got += more
            if got > end:
                raise OSError("protocol error: data after a message")
            return view[4:end]
        body = bytearray(size)
        body_view = memoryview(body)
        have = got - 4
        body_view[:have] = view[4:got]
        while have < size:
            more = sock.recv_into(body_view[have:])
            if not more:
                raise EOFError("connection closed inside a message")
            have += more
        return body

    def peer_closed(self) -> bool:
        """True if the peer has closed (or sent unexpected data) — never blocks."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        # Readable: either b"" (the peer closed) or bytes sent while the peer
        # should be waiting for our reply, which only a broken client does.
        return True

    def close(self) -> None:
        self.sock.close()


# A server host that vanishes without closing its sockets (power loss, network
# partition) would leave a client blocked in a reply forever; TCP keepalive
# turns that into ServerUnavailableError after about IDLE + INTERVAL * COUNT s.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3


def keepalive(sock: socket.socket) -> None:
    """Probe an idle TCP peer so a vanished host shows up as a broken connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):  # Linux and most BSDs; macOS lacks TCP_KEEPIDLE
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
