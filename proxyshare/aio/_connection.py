"""One session with a served proxyshare server, on an asyncio event loop.

:class:`Connection` is an ``asyncio.BufferedProtocol``: the event loop reads
the socket into the connection's buffer, which cuts it into frames (the 4-byte big-endian
length of ``_wire``, then a pickle) and resolves the future of the call that
waits.  Nothing here blocks the loop, and no thread is involved::

    call(request) ── write frame ──▶ server
       await reply  ◀── buffer_updated: a whole frame resolves the future

A connection carries one request at a time, like the sync ``Channel``: the
server ties locks and permits to the session, and a waiting request may be
followed only by a CANCEL.  The pool in ``_served`` gives each task that
acquires something its own connection.

**Cancellation** (a task cancelled while it waits, directly, by
``asyncio.wait_for`` or by ``asyncio.timeout``) sends ``(CANCEL, None,
seq)`` and drops frames until the exact bytes of the server's ACK (see
``proxyshare._protocol``): the server answers the request if it still waits,
undoes it if it completed (a granted acquire is released, items a get took go
back to the front), and the connection stays in step, keeping whatever else
its session holds.  The drain is shielded from further cancellation and
bounded by the call deadline; then ``CancelledError`` propagates.

**Deadlines**: a reply must come within ``PROXYSHARE_CALL_TIMEOUT`` seconds
(the call's own timeout plus that, for a call that may wait), else the
connection is closed and the call raises ``ServerUnavailableError``.  One
timer per connection, re-armed only when it fires, so a call costs no timer.

This module is where socket and handshake failures become proxyshare's
errors for the asyncio client, the counterpart of ``proxyshare._client``.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from proxyshare import _protocol as P
from proxyshare._address import Address, format_address
from proxyshare._client import (
    CALL_TIMEOUT_ENV,
    CONNECT_TIMEOUT,
    _describe,
    _tls_failure,
    _unpicklable,
    call_timeout,
    error_from_reply,
    result_of,
)
from proxyshare._errors import AuthenticationError, ProxyShareError, ServerUnavailableError
from proxyshare._wire import keepalive
from proxyshare.aio._handshake import HandshakeRefused, answer_challenge, deliver_challenge

if TYPE_CHECKING:
    from proxyshare._tls import TLSFiles

__all__ = ["CALL_TIMEOUT", "Connection", "open_connection"]

CALL_TIMEOUT = call_timeout()
_HEADER = struct.Struct("!i")
_BUFFER = 64 * 1024
_HOST = socket.gethostname()
_CANCEL = P.CANCEL.code
_dumps = pickle.dumps
_loads = pickle.loads


class _Closed(Exception):
    """Internal: the connection ended; ``error`` is what the call raises."""

    def __init__(self, error: ProxyShareError | None, *, silent: bool = False) -> None:
        super().__init__(error)
        self.error = error or ServerUnavailableError("the connection is closed")
        self.silent = silent  # the server did not answer in time (vs. the connection ended)


class Connection(asyncio.BufferedProtocol):
    """One authenticated session, used by one call at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: Address) -> None:
        self.loop = loop
        self.address = address
        self.where = format_address(address)
        self.max_message = 1 << 16  # until the server says how much it accepts
        self.seq = 0  # requests sent; a CANCEL names one by this count
        self.closed = False
        # The pool's bookkeeping (see ``_served``): what the task this connection is
        # pinned to holds through it, (kind, name) -> count; whether it fills a shared slot.
        self.held: dict[tuple[str, str], int] = {}
        self.shared = False
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray(_BUFFER)  # bytes [_start:_end) are read, not yet a whole frame
        self._start = self._end = 0
        self._frames: deque[bytes] = deque()  # arrived with no call waiting (the handshake)
        self._waiter: asyncio.Future[bytes] | None = None
        self._ack: bytes | None = None  # while draining after a CANCEL: the frame that ends it
        self._drained: asyncio.Future[None] | None = None
        self._error: ProxyShareError | None = None  # why it closed
        self._silent = False  # closed because a reply did not come in time
        self._closing_reason: str | None = None
        self._deadline: float | None = None  # of the reply awaited now (None: no limit)
        self._limit: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    # -- asyncio.BufferedProtocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream: asyncio's contract

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the loop reads into: the free end of this connection's own buffer.

        Reading into a buffer that lives as long as the connection costs no
        allocation per message (``data_received`` would get a fresh 256 KiB
        ``bytes`` for each read, an mmap and munmap every time).
        """
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = start = end = 0
            if len(self._buf) > _BUFFER:  # grown for a large message: give it back
                self._buf = bytearray(_BUFFER)
        need = _BUFFER // 4
        if end - start >= 4:  # room for the whole of the message being read, if larger
            (size,) = _HEADER.unpack_from(self._buf, start)
            need = max(need, start + 4 + size - end)
        if len(self._buf) - end < need:
            if start:  # move what is unread to the front first
                self._buf[: end - start] = self._buf[start:end]
                end -= start
                self._start, self._end = 0, end
            if len(self._buf) - end < need:
                # A new buffer rather than a resize: a view of the old one may live on.
                grown = bytearray(end + need)
                grown[:end] = self._buf[:end]
                self._buf = grown
        return memoryview(self._buf)[end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end = end = self._end + nbytes
        buf = self._buf
        start = self._start
        while end - start >= 4:
            (size,) = _HEADER.unpack_from(buf, start)
            if size < 0:
                self._fail(f"the server sent a bad frame length ({size})")
                return
            stop = start + 4 + size
            if stop > end:
                break
            frame = bytes(buf[start + 4 : stop])
            start = self._start = stop
            self._frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._error is None:
            reason = self._closing_reason or (
                "the server closed the connection" if exc is None else _describe(exc)
            )
            self._error = ServerUnavailableError(
                f"lost the connection to the proxyshare server at {self.where} ({reason}): "
                "is it still running? The next call reconnects."
            )
        self._wake_all(self._error)

    # -- frames -----------------------------------------------------------------------------

    def _frame(self, frame: bytes) -> None:
        if self._ack is not None:  # draining: everything up to the ACK is the cancelled reply
            if frame == self._ack:
                self._ack = None
                drained, self._drained = self._drained, None
                self._deadline = None
                if drained is not None and not drained.done():
                    drained.set_result(None)
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            self._deadline = None
            waiter.set_result(frame)
        else:  # before recv() asked (handshake), or the reply of a call just cancelled
            self._frames.append(frame)

    def _wake_all(self, error: ProxyShareError) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for future in (self._waiter, self._drained):
            if future is not None and not future.done():
                future.set_exception(_Closed(error, silent=self._silent))
        self._waiter = self._drained = None

    def _fail(self, reason: str) -> None:
        """Close over a protocol failure: whatever waits gets ``ServerUnavailableError``."""
        self._closing_reason = reason
        if self._transport is not None:
            self._transport.abort()

    def send(self, payload: bytes) -> None:
        transport = self._transport
        if transport is None or self.closed:
            raise _Closed(self._error or ServerUnavailableError(f"not connected to {self.where}"))
        transport.write(_HEADER.pack(len(payload)) + payload)

    async def recv(self, limit: float | None) -> bytes:
        """The next frame, within ``limit`` seconds."""
        if self._frames:
            return self._frames.popleft()
        if self.closed:
            raise _Closed(self._error)
        waiter: asyncio.Future[bytes] = self.loop.create_future()
        self._waiter = waiter
        self._arm(limit)
        return await waiter

    # -- the deadline ---------------------------------------------------------------------

    def _arm(self, limit: float | None) -> None:
        """The awaited frame must come within ``limit`` seconds (None: no limit)."""
        self._limit = limit
        if limit is None:
            self._deadline = None
            return
        self._deadline = deadline = self.loop.time() + limit
        watchdog = self._watchdog
        if watchdog is None:
            self._watchdog = self.loop.call_at(deadline, self._check_deadline)
        elif watchdog.when() > deadline:  # armed for a longer wait before: bring it forward
            watchdog.cancel()
            self._watchdog = self.loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._watchdog = None
        deadline = self._deadline
        if deadline is None or self.closed:
            return  # nothing awaited now: stay disarmed until the next call
        if self.loop.time() < deadline:
            self._watchdog = self.loop.call_at(deadline, self._check_deadline)
            return
        self._silent = True
        self._error = ServerUnavailableError(
            f"the proxyshare server at {self.where} did not answer within {self._limit:g}s: it "
            "is stopped (SIGSTOP, a debugger), overloaded or unreachable; set "
            f"{CALL_TIMEOUT_ENV} to wait longer. The next call reconnects."
        )
        self._wake_all(self._error)  # now, not when the transport gets round to closing
        self.close()

    # -- calls ------------------------------------------------------------------------------

    async def call(self, request: tuple[Any, ...], limit: float | None) -> Any:
        """Send one request and return its result, or raise its error.

        ``limit``: seconds the reply may take (None: no limit).
        """
        try:
            payload = _dumps(request, P.PICKLE_PROTOCOL)
        except Exception as exc:
            raise _unpicklable(request, exc) from exc
        if len(payload) > self.max_message:
            raise ProxyShareError(
                f"this request is {len(payload):,} bytes, over the server's limit of "
                f"{self.max_message:,} bytes: store large data elsewhere (a file, a "
                "database) and share its name or path instead"
            )
        try:
            self.send(payload)
            self.seq += 1
            reply = await self.recv(limit)
        except _Closed as closed:
            raise closed.error from None
        except asyncio.CancelledError:
            if not self.closed:
                self._cancel()
                await self._finish_drain()
            raise
        return result_of(reply)

    def _cancel(self) -> None:
        """Cancel request ``seq``: from now on, frames are dropped until its ACK."""
        self._frames.clear()  # the cancelled reply, if it came before the task woke
        self._waiter = None
        self._ack = P.ack_frame(self.seq)
        self._drained = self.loop.create_future()
        self.send(_dumps((_CANCEL, None, self.seq), P.PICKLE_PROTOCOL))
        self._arm(CALL_TIMEOUT)

    async def _finish_drain(self) -> None:
        """Wait for the ACK of a CANCEL, whatever else cancels this task meanwhile.

        Bounded by the deadline: with no ACK in time the connection closes, and
        the server releases what its session held.
        """
        drained = self._drained
        cancelled = False
        while drained is not None and not drained.done():
            try:
                await asyncio.shield(drained)
            except asyncio.CancelledError:
                cancelled = True  # keep the connection in step first; raise it after
            except _Closed:
                break
        if drained is not None and drained.done() and not drained.cancelled():
            drained.exception()  # retrieved: a closed connection is reported by the next call
        if cancelled:
            raise asyncio.CancelledError

    def close(self, error: ProxyShareError | None = None) -> None:
        """Close now; the server releases what this session held.

        ``error``: what a call still waiting here raises (default: a lost connection).
        """
        self.closed = True
        if self._error is None:
            self._error = error
            self._closing_reason = "this client closed it"
        if self._transport is not None:
            self._transport.abort()


async def open_connection(
    address: Address,
    authkey: bytes,
    *,
    timeout: float | None = None,
    tls: TLSFiles | None = None,
    label: str = "asyncio",
) -> Connection:
    """Connect, authenticate and say HELLO, each step within ``timeout`` seconds
    (default ``CONNECT_TIMEOUT``).

    ``tls``: speak TLS first, with these files (a ``tls://`` target).
    """
    if timeout is None:
        timeout = CONNECT_TIMEOUT
    loop = asyncio.get_running_loop()
    where = format_address(address)
    conn = Connection(loop, address)
    ssl_context = None
    if tls is not None:
        from proxyshare._tls import client_context

        ssl_context = client_context(tls)  # made once per process
    try:
        if isinstance(address, tuple):
            host, port = address
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, host, port, ssl=ssl_context), timeout
            )
            sock = conn._transport.get_extra_info("socket") if conn._transport else None
            if sock is not None:
                keepalive(sock)
        else:
            sock = await _connect_unix(loop, address, timeout)
            try:
                await loop.create_unix_connection(lambda: conn, sock=sock, ssl=ssl_context)
            except BaseException:
                sock.close()
                raise
    except (OSError, asyncio.TimeoutError) as exc:
        conn.close()
        if tls is not None:  # what a TLS failure means and what to change
            error = _tls_failure(exc, where, tls, after_handshake=False)
            if error is not None:
                raise error from None
        why = f"no answer within {timeout:g}s" if _timed_out(exc) else _describe(exc)
        raise ServerUnavailableError(
            f"no proxyshare server is listening at {where} ({why}): "
            "is it running? (`proxyshare serve` starts one) Check the address too"
        ) from None
    except BaseException:
        conn.close()
        raise
    try:
        await _handshake(conn, authkey, timeout, label)
    except BaseException:
        conn.close()
        raise
    return conn


async def _connect_unix(
    loop: asyncio.AbstractEventLoop, path: str, timeout: float
) -> socket.socket:
    """A connected unix socket; retried while the server's accept backlog is full.

    A full backlog fails at once with EAGAIN (and asyncio would take that for
    "connecting"): under a burst of new clients it means "busy", not "no server".
    """
    deadline = loop.time() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.connect(path)
                return sock
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.002)
    except BaseException:
        sock.close()
        raise


async def _handshake(conn: Connection, authkey: bytes, timeout: float, label: str) -> None:
    where = conn.where

    async def recv() -> bytes:
        return await conn.recv(timeout)

    try:
        await answer_challenge(recv, conn.send, authkey)
        await deliver_challenge(recv, conn.send, authkey)
        hello = (P.HELLO.code, None, os.getpid(), _HOST, f"{label} ({_thread()})")
        conn.send(_dumps(hello, P.PICKLE_PROTOCOL))
        status, value = _loads(await recv())
    except HandshakeRefused as refused:
        if refused.wrong_key:
            raise AuthenticationError(
                f"the server at {where} rejected the authkey: use the key the server was "
                "started with (PROXYSHARE_AUTHKEY, --authkey-file or the manager's authkey)"
            ) from None
        raise AuthenticationError(
            f"the peer at {where} did not speak the proxyshare handshake ({refused}): "
            "is it a proxyshare server?"
        ) from None
    except _Closed as closed:
        if closed.silent:
            raise ServerUnavailableError(
                f"the server at {where} did not complete the handshake within {timeout:g}s: "
                "is it a proxyshare server?"
            ) from None
        raise closed.error from None
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
        raise AuthenticationError(
            f"the peer at {where} did not speak the proxyshare handshake "
            f"({type(exc).__name__}): is it a proxyshare server?"
        ) from None
    if status != P.OK:
        raise error_from_reply(value)
    conn.max_message = int(value["max_message"])


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not getattr(exc, "errno", None)


def _thread() -> str:
    return threading.current_thread().name
