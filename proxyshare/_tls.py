"""TLS for the served transport: the files a client names, the contexts, framing over SSL.

Only a process that uses a ``tls://`` address, or serves TLS, imports this
module and with it ``ssl`` (tens of milliseconds to import): ``_client``
and the server load it lazily.

**What a pickled proxy carries.**  A ``ServerRef`` to a ``tls://`` server
pickles as its address, the authkey (as for any server) and a
:class:`TLSFiles`: the absolute *paths* of the CA bundle, the client
certificate and the client's private key, never their contents.  A pool
worker reads those files itself when it first connects, so they must be
readable there under the same paths (same machine and user, or a shared
filesystem).

**Framing over SSL.**  After the TLS handshake every frame goes through the
SSL object (:class:`TLSFramedSocket`).  The server's reactor reads without
blocking while worker threads read and write the same connection blocking,
so the SSL socket stays non-blocking and the blocking calls wait in
``poll`` when OpenSSL asks for it (``SSLWantReadError``/``SSLWantWriteError``).
OpenSSL may hold decrypted bytes that ``epoll`` cannot see
(``SSLSocket.pending()``): the reactor reads with a buffer larger than a TLS
record, so one read takes a whole record, and bytes left inside SSL after a
whole message are a protocol error (as on a plain socket), so no request
waits there unseen.  An SSL object must not be used by two threads at once;
each SSL call holds a per-connection lock (never while waiting).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import stat
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from proxyshare._errors import ProxyShareError
from proxyshare._wire import INCOMPLETE, QUIET, SENT, FramedSocket

__all__ = [
    "ENV_CA",
    "ENV_CERT",
    "ENV_KEY",
    "HELLO_WAIT",
    "TLSFiles",
    "TLSFramedSocket",
    "client_context",
    "client_files",
    "server_context",
    "start_server_tls",
]

ENV_CA = "PROXYSHARE_TLS_CA"
ENV_CERT = "PROXYSHARE_TLS_CERT"
ENV_KEY = "PROXYSHARE_TLS_KEY"

# A TLS client sends its hello as soon as TCP connects; a peer that has sent
# nothing after this long is probably a plain client waiting for the HMAC
# challenge, so the server tells it, in its own framing, that TLS is needed.
HELLO_WAIT = 1.5

_HEADER = struct.Struct("!i")
_MAX_READ = 1 << 20  # one SSL read returns a record (16 KiB) at most anyway
_BUFFER = 64 * 1024  # FramedSocket's buffer
_SMALL = 16 * 1024  # below this, a frame is written in one go (as FramedSocket does)
_GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO


@dataclass(frozen=True)
class TLSFiles:
    """How a client checks the server and, under mutual TLS, shows who it is.

    Absolute paths only, so they pickle into pool workers unchanged:
    ``ca`` (PEM CA bundle; None: the system's trusted CAs), ``cert`` (the
    client certificate, for mutual TLS) and ``key`` (its private key,
    readable by its owner only; None: it is in ``cert``).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def client_files(
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TLSFiles:
    """The files for a ``tls://`` connection: arguments, else ``PROXYSHARE_TLS_*``."""
    env = os.environ if environ is None else environ
    chosen = [
        _absolute(given if given is not None else env.get(variable) or None)
        for given, variable in ((ca, ENV_CA), (cert, ENV_CERT), (key, ENV_KEY))
    ]
    files = TLSFiles(*chosen)
    if files.key is not None and files.cert is None:
        raise ProxyShareError(
            f"a TLS client key ({files.key!r}) was given without its certificate: pass "
            f"tls_cert=FILE too (or set {ENV_CERT})"
        )
    return files


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    if path is None:
        return None
    text = os.fspath(path)
    if not text:
        return None
    return os.path.abspath(os.path.expanduser(text))


# -- contexts -------------------------------------------------------------------------

_client_contexts: dict[TLSFiles, ssl.SSLContext] = {}


def _forget_contexts() -> None:
    _client_contexts.clear()


if hasattr(os, "register_at_fork"):  # one set of contexts per process
    os.register_at_fork(after_in_child=_forget_contexts)


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """The client context for ``files``, made once per process (loading files costs ms)."""
    context = _client_contexts.get(files)
    if context is None:
        context = _client_contexts[files] = _new_client_context(files)
    return context


def _new_client_context(files: TLSFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and hostname
    _harden(context)
    if files.ca is not None:
        _load(context.load_verify_locations, files.ca, what="TLS CA file", given=f"tls_ca/{ENV_CA}")
    else:
        context.load_default_certs()
    if files.cert is not None:
        _check_private_key(files.key or files.cert, given=f"tls_key/{ENV_KEY}")
        _load(
            context.load_cert_chain,
            files.cert,
            files.key,
            what="TLS client certificate and key",
            given=f"tls_cert/{ENV_CERT} and tls_key/{ENV_KEY}",
        )
    return context


def server_context(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str] | None = None,
    client_ca: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """The server's context: its certificate and key; with ``client_ca``, mutual TLS.

    The key file must be readable by its owner only, as authkey files are.
    """
    cert_path = os.fspath(cert)
    key_path = None if key is None else os.fspath(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _harden(context)
    # Clients never resume sessions; TLS 1.3 tickets would only cost a write per connection.
    context.num_tickets = 0
    _check_private_key(key_path or cert_path, given="--tls-key")
    _load(
        context.load_cert_chain,
        cert_path,
        key_path,
        what="TLS certificate and key",
        given="--tls-cert and --tls-key",
    )
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        _load(
            context.load_verify_locations,
            os.fspath(client_ca),
            what="TLS client CA file",
            given="--tls-client-ca",
        )
    return context


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION


def _check_private_key(path: str, given: str) -> None:
    """Refuse a private key that the group or others can read (as key files are refused)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ProxyShareError(
            f"cannot read the TLS private key {path!r} (given by {given}): {exc.strerror}"
        ) from None
    if mode & _GROUP_OTHER:
        raise ProxyShareError(
            f"the TLS private key {path!r} (given by {given}) is readable by other users "
            f"(mode {stat.S_IMODE(mode):04o}): run `chmod 600 {path}`"
        )


def _load(load: Any, *paths: str | None, what: str, given: str) -> None:
    named = " and ".join(repr(p) for p in paths if p is not None)
    try:
        load(*paths)
    except ssl.SSLError as exc:
        raise ProxyShareError(
            f"the {what} {named} (given by {given}) cannot be used ({exc.reason or exc}): "
            "they must be PEM files, and a key must match its certificate"
        ) from None
    except OSError as exc:
        raise ProxyShareError(
            f"cannot read the {what} {named} (given by {given}): {exc.strerror or exc}"
        ) from None


# -- the server's side of the handshake ---------------------------------------------------


def start_server_tls(
    sock: socket.socket, context: ssl.SSLContext, deadline: float, notice: bytes
) -> ssl.SSLSocket:
    """Wrap a newly accepted connection for the server's TLS handshake (not begun yet).

    A peer that sends nothing for ``HELLO_WAIT`` s gets ``notice`` as one
    plain frame: a plain proxyshare client, which waits for the HMAC
    challenge, then says "connect to tls://" instead of timing out.  The
    returned socket owns ``sock``'s descriptor and times out at ``deadline``;
    the caller runs ``do_handshake()`` and closes it.
    """
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    wait = min(HELLO_WAIT, deadline - time.monotonic())
    if not poller.poll(max(0.0, wait) * 1000):
        sock.settimeout(1.0)
        sock.sendall(_HEADER.pack(len(notice)) + notice)
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


# -- framing over SSL ----------------------------------------------------------------------


class _TLSStream:
    """A blocking face on a non-blocking SSL socket: what ``FramedSocket`` reads and writes.

    Offers the few socket methods ``FramedSocket`` and its users call
    (``recv_into``, ``sendall``, ``settimeout``, ``shutdown``, ...).
    ``timeout`` bounds each wait (None: wait for ever), as on a socket.

    Reads and writes call the SSL socket's C object (``SSLSocket._sslobj``)
    when it has one: ``SSLSocket.recv_into``/``send`` wrap it in Python that
    cost about 10 µs per round trip here, half of what TLS adds to one.
    """

    __slots__ = ("_lock", "_poll_in", "_poll_out", "_read", "_write", "pending", "ssl", "timeout")

    def __init__(self, ssl_sock: ssl.SSLSocket, timeout: float | None) -> None:
        ssl_sock.setblocking(False)
        self.ssl = ssl_sock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._poll_in = select.poll()
        self._poll_in.register(ssl_sock.fileno(), select.POLLIN)
        self._poll_out = select.poll()
        self._poll_out.register(ssl_sock.fileno(), select.POLLOUT)
        raw: Any = getattr(ssl_sock, "_sslobj", None)
        if all(hasattr(raw, name) for name in ("read", "write", "pending")):
            self._read: Any = raw.read  # (n, buffer) -> bytes read
            self._write: Any = raw.write
            self.pending: Any = raw.pending  # decrypted bytes held inside SSL
        else:  # another ssl implementation: the public methods
            self._read = lambda n, buffer: ssl_sock.recv_into(buffer, n)
            self._write = ssl_sock.send
            self.pending = ssl_sock.pending

    def fileno(self) -> int:
        return self.ssl.fileno()

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def gettimeout(self) -> float | None:
        return self.timeout

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        size = nbytes or min(len(buffer), _MAX_READ)
        deadline = None
        while True:
            with self._lock:
                try:
                    got: int = self._read(size, buffer)
                    return got
                except ssl.SSLWantReadError:
                    poller = self._poll_in
                except ssl.SSLWantWriteError:
                    poller = self._poll_out
                except ssl.SSLEOFError:  # closed without a TLS goodbye: EOF all the same
                    return 0
            deadline = self._wait(poller, deadline)

    def sendall(self, data: Any) -> None:
        view = memoryview(data)
        size = len(view)
        sent = 0
        deadline = None
        while sent < size:
            # After a "want", OpenSSL must be given the same bytes again: it may
            # have taken some of them already, and says so only when all are taken.
            with self._lock:
                try:
                    sent += self._write(view[sent:])
                    continue
                except ssl.SSLWantWriteError:
                    poller = self._poll_out
                except ssl.SSLWantReadError:
                    poller = self._poll_in
            deadline = self._wait(poller, deadline)

    def _wait(self, poller: select.poll, deadline: float | None) -> float | None:
        if self.timeout is None:
            poller.poll()
            return None
        now = time.monotonic()
        if deadline is None:
            deadline = now + self.timeout
        if now >= deadline or not poller.poll((deadline - now) * 1000):
            # As a socket with SO_RCVTIMEO: the caller tells a deadline from other errors.
            raise BlockingIOError(errno.EAGAIN, "timed out")
        return deadline

    def shutdown(self, how: int) -> None:
        # The plain socket's shutdown: SSLSocket.shutdown would also drop the SSL
        # object under a thread that may be using it.  Waiters see EOF and stop.
        socket.socket.shutdown(self.ssl, how)

    def close(self) -> None:
        self.ssl.close()


class TLSFramedSocket(FramedSocket):
    """``FramedSocket`` over TLS: the same frames, read and written through the SSL object.

    The reads and writes that must not block (the reactor's ``recv_ready``,
    ``send_some``) and the peer check use no socket flags (SSL sockets refuse
    them); ``readable`` and ``buffered`` also report bytes held inside SSL.
    """

    __slots__ = ("_lock", "_read", "_stream", "_unsent", "_write")

    def __init__(self, ssl_sock: ssl.SSLSocket, timeout: float | None = None) -> None:
        stream = _TLSStream(ssl_sock, timeout)
        # The stream offers every socket method FramedSocket calls.
        super().__init__(cast(socket.socket, stream))
        self._stream = stream
        # The hot paths below call these straight: each layer of Python costs
        # about a microsecond per message on the VM this is measured on.
        self._lock, self._read, self._write = stream._lock, stream._read, stream._write
        self._unsent: bytes | None = None  # a frame OpenSSL must be offered again
        poll = self.readable
        pending = stream.pending
        fd = ssl_sock.fileno()

        def readable(timeout: float | None = 0) -> list[tuple[int, int]]:
            if pending():
                return [(fd, select.POLLIN)]
            return poll(timeout)

        self.readable = readable

    def send_bytes(self, payload: bytes) -> None:
        size = len(payload)
        if size >= _SMALL:
            super().send_bytes(payload)  # through the stream, which waits as needed
            return
        frame = _HEADER.pack(size) + payload
        with self._lock:
            try:
                self._write(frame)
                return
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        self._stream.sendall(frame)  # the same bytes again, as OpenSSL requires

    def buffered(self) -> bool:
        """Bytes of a next message read already: in our buffer, or decrypted inside SSL
        (where no socket event will report them)."""
        return self._start < self._end or self._stream.pending() > 0

    def recv_ready(self, maxlength: int | None = None) -> memoryview | object | None:
        frame = self._take(maxlength)
        if frame is not None:
            return frame
        self._make_room(_BUFFER // 2)
        end = self._end
        with self._lock:
            try:
                got: int = self._read(_BUFFER - end, self._view[end:])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return INCOMPLETE if self._start < end else None
            except ssl.SSLEOFError:  # closed without a TLS goodbye: EOF all the same
                got = 0
        if not got:
            raise EOFError("connection closed")
        self._end = end + got
        frame = self._take(maxlength)
        return INCOMPLETE if frame is None else frame

    def send_some(self, data: memoryview) -> int:
        # OpenSSL takes all of it or reports "want write"; then it must be offered
        # the same bytes again, which the session's outbox does (it keeps them whole).
        with self._lock:
            try:
                sent: int = self._write(data)
                return sent
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return 0

    def set_recv_timeout(self, seconds: float | None) -> None:
        self._stream.timeout = seconds  # the stream's waits raise BlockingIOError after it

    def peer_state(self) -> int:
        # A peer waiting for a reply sends nothing but a CANCEL: anything readable
        # (bytes, an alert, EOF) is reported as sent; reading it tells which.
        return SENT if self.buffered() or self.readable(0) else QUIET

    def pending(self) -> int:
        """Decrypted bytes waiting inside SSL (invisible to ``epoll``)."""
        held: int = self._stream.pending()
        return held
