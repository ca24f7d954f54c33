"""Message framing straight on a socket, for the lean session protocol.

Same frame as ``multiprocessing.connection``: a 4-byte big-endian length,
then the payload, so either side may use a ``Connection`` for the handshake.
Reading with ``recv_into`` a reusable buffer takes one system call per small
message instead of ``Connection``'s two (header, then body): measured here,
a round trip drops from ~21 to ~13 µs.

A session is strictly request/response, so a read never finds the start of
the next message behind the current one.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["FramedSocket"]

_HEADER = struct.Struct("!i")
_BUFFER = 64 * 1024
_SMALL = 16 * 1024  # below this, header and payload go out in one send


class FramedSocket:
    """Length-prefixed messages over a connected stream socket.

    Offers ``send_bytes``/``recv_bytes`` so the stdlib's HMAC handshake
    (``answer_challenge``/``deliver_challenge``) runs on it unchanged.
    """

    __slots__ = ("_buf", "_view", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray(_BUFFER)
        self._view = memoryview(self._buf)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send_bytes(self, payload: bytes) -> None:
        size = len(payload)
        if size > 0x7FFFFFFF:
            raise ValueError(f"message of {size} bytes is too large to send")
        if size < _SMALL:
            self.sock.sendall(_HEADER.pack(size) + payload)
        else:
            self.sock.sendall(_HEADER.pack(size))
            self.sock.sendall(payload)

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        return bytes(self.recv_view(maxlength))

    def recv_view(self, maxlength: int | None = None) -> memoryview | bytearray:
        """The next message; a view into the buffer, valid until the next read."""
        view = self._view
        sock = self.sock
        got = sock.recv_into(view)
        if not got:
            raise EOFError("connection closed")
        while got < 4:
            more = sock.recv_into(view[got:])
            if not more:
                raise EOFError("connection closed inside a message header")
            got += more
        (size,) = _HEADER.unpack_from(view)
        if size < 0 or (maxlength is not None and size > maxlength):
            raise OSError(f"bad message length {size}")
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
