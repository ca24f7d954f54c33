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

The server's reactor (see ``proxyshare._server.reactor``) must never block, so it
reads with ``recv_ready`` and writes with ``send_some``: one non-blocking system
call each.  A request that does not fit in one read (large, or split by the
network) is finished with the blocking ``recv_view`` on a worker thread; a
reply the socket does not take at once waits in the session's outbox until
the socket is writable.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

__all__ = [
    "CLOSED",
    "INCOMPLETE",
    "MAX_FRAME",
    "QUIET",
    "SENT",
    "SMALL_FRAME",
    "SPIN_ENV",
    "FramedSocket",
    "Pollers",
    "default_pollers",
    "frame_parts",
    "keepalive",
    "next_budget",
    "spin_seconds",
]

_HEADER = struct.Struct("!i")
_TIMEVAL = struct.Struct("ll")
QUIET, SENT, CLOSED = 0, 1, 2  # FramedSocket.peer_state()
INCOMPLETE = object()  # recv_ready(): part of a message has come, recv_view() finishes it
_BUFFER = 64 * 1024
SMALL_FRAME = _SMALL = 16 * 1024  # below this, header and payload go out in one send
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


def frame_parts(payload: bytes) -> list[memoryview]:
    """A frame (header, payload) as views to send; one part for a small payload."""
    header = _HEADER.pack(len(payload))
    if len(payload) < _SMALL:
        return [memoryview(header + payload)]
    return [memoryview(header), memoryview(payload)]


def default_pollers() -> int:
    """Pollers per process: one per core, at most two (there is one GIL)."""
    return min(2, os.cpu_count() or 1)


class FramedSocket:
    """Length-prefixed messages over a connected stream socket.

    Offers ``send_bytes``/``recv_bytes`` so the stdlib's HMAC handshake
    (``answer_challenge``/``deliver_challenge``) runs on it unchanged.

    One read may bring more than one message (a CANCEL right behind the
    request it cancels, a reply and the ACK that follows it): bytes
    ``[_start:_end)`` of the buffer are read but not yet returned, and the
    next ``recv_view``/``recv_ready`` returns them first (``buffered()``).
    """

    __slots__ = ("_buf", "_end", "_spin", "_start", "_view", "readable", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray(_BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
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

    def buffered(self) -> bool:
        """Whether bytes of a next message were read already (no socket event will say so)."""
        return self._start < self._end

    def _wait_first_bytes(self, pollers: Pollers | None) -> int:
        """Receive into the empty buffer: poll for up to the budget, then sleep.

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

    def _take(self, maxlength: int | None) -> memoryview | None:
        """The next whole message from the buffer, or None if it is not all there."""
        start = self._start
        if self._end - start < 4:
            return None
        (size,) = _HEADER.unpack_from(self._buf, start)
        if size < 0 or (maxlength is not None and size > maxlength):
            raise OSError(f"bad message length {size}")
        stop = start + 4 + size
        if stop > self._end:
            return None
        if stop == self._end:
            self._start = self._end = 0  # all read: the next read starts at the front
        else:
            self._start = stop
        return self._view[start + 4 : stop]

    def _make_room(self, need: int) -> None:
        """Move the unread bytes to the front if ``need`` more would not fit behind them."""
        start, end = self._start, self._end
        if start and end + need > _BUFFER:
            self._view[: end - start] = self._view[start:end]
            self._start, self._end = 0, end - start

    def recv_ready(self, maxlength: int | None = None) -> memoryview | object | None:
        """Read what has arrived, without blocking.

        Returns the next message (a view into the buffer, valid until the
        next read) if all of it is there; ``INCOMPLETE`` if only part of it
        is (``recv_view`` finishes it, blocking); None if nothing came.
        """
        frame = self._take(maxlength)
        if frame is not None:
            return frame
        self._make_room(_BUFFER // 2)
        try:
            got = self.sock.recv_into(self._view[self._end :], 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return INCOMPLETE if self._start < self._end else None
        if not got:
            raise EOFError("connection closed")
        self._end += got
        frame = self._take(maxlength)
        return INCOMPLETE if frame is None else frame

    def send_some(self, data: memoryview) -> int:
        """Send what the socket takes now, without blocking; the bytes sent (maybe 0)."""
        try:
            return self.sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return 0

    def recv_view(
        self, maxlength: int | None = None, pollers: Pollers | None = None
    ) -> memoryview | bytearray:
        """The next message; a view into the buffer, valid until the next read.

        ``pollers``: see ``_wait_first_bytes``; None never polls (the handshake).
        """
        frame = self._take(maxlength)
        if frame is not None:
            return frame
        view = self._view
        sock = self.sock
        if self._start == self._end:
            got = self._wait_first_bytes(pollers)
            if not got:
                raise EOFError("connection closed")
            self._start, self._end = 0, got
            frame = self._take(maxlength)
            if frame is not None:
                return frame
        while True:
            have = self._end - self._start
            if have < 4:
                wanted = 4 - have
            else:
                (size,) = _HEADER.unpack_from(self._buf, self._start)
                if size < 0 or (maxlength is not None and size > maxlength):
                    raise OSError(f"bad message length {size}")
                if 4 + size > _BUFFER:
                    return self._recv_large(size)
                wanted = 4 + size - have
            self._make_room(wanted)
            # Only as much as this message needs: what follows it stays in the socket.
            more = sock.recv_into(view[self._end : self._end + wanted])
            if not more:
                raise EOFError("connection closed inside a message")
            self._end += more
            frame = self._take(maxlength)
            if frame is not None:
                return frame

    def _recv_large(self, size: int) -> bytearray:
        """A message larger than the buffer, read straight into its own bytearray."""
        body = bytearray(size)
        body_view = memoryview(body)
        have = self._end - self._start - 4
        body_view[:have] = self._view[self._start + 4 : self._end]
        self._start = self._end = 0
        while have < size:
            more = self.sock.recv_into(body_view[have:])
            if not more:
                raise EOFError("connection closed inside a message")
            have += more
        return body

    def peer_state(self) -> int:
        """``QUIET`` (nothing to read), ``SENT`` (bytes wait to be read) or ``CLOSED``;
        never blocks and reads nothing."""
        if self._start < self._end:
            return SENT
        try:
            data = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return QUIET
        except OSError:
            return CLOSED
        return SENT if data else CLOSED

    def peer_closed(self) -> bool:
        """True if the peer has closed (or sent something) — never blocks."""
        return self.peer_state() != QUIET

    def set_recv_timeout(self, seconds: float | None) -> None:
        """Make a blocking read fail with ``BlockingIOError`` after ``seconds`` (None: never).

        The kernel's ``SO_RCVTIMEO``, so a call's deadline costs no system call
        per message, and the socket stays in blocking mode.
        """
        whole = int(seconds or 0)
        micros = int(((seconds or 0) - whole) * 1e6)
        if seconds and not whole and not micros:
            micros = 1  # 0 would mean "no limit"
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(whole, micros))

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
