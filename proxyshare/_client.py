"""The one client call path: connections, requests, replies, error mapping.

Every proxy method ends in :meth:`ServerRef.call`.  It finds this thread's
connection to the server (one per process, thread and server; re-made after
``fork``), sends one lean request (see ``_protocol``), reads one reply, and
turns transport failures into proxyshare errors.  This is the *only* place
where ``EOFError``/``OSError``/``ssl.SSLError``/``multiprocessing.AuthenticationError``
become ``ServerUnavailableError``/``AuthenticationError`` (for TLS, with what
to change: see ``_tls_failure``).

A call never hangs on a server that stopped answering (SIGSTOP, a debugger):
a reply must come within ``PROXYSHARE_CALL_TIMEOUT`` seconds (10), or the
call's own timeout plus that for a call that may wait, else
``ServerUnavailableError``.  The kernel enforces it (``SO_RCVTIMEO``), so it
costs no system call per message.

A call interrupted by the caller's own exception (Ctrl-C, a signal handler
that raises) cancels only itself: the client sends a CANCEL for that one
request and reads until the server acknowledges it (see ``_protocol``), so
the thread keeps its connection, and with it every other lock it holds, and
the caller's exception propagates unchanged.  Only transport failures
become ``ServerUnavailableError``.

Why one connection per thread: the server ties lock ownership to a
connection, so two threads of one process must not share one, and a
connection carries one request at a time.

A connection ends cleanly (a ``BYE`` frame, then close) when its thread
ends, when the process exits, or on ``close_all_channels()``: the server then
takes the queue items it last handed out as done with.  A connection that
just drops (the process was killed, a call was interrupted) gets them put
back in their queue instead.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import socket
import threading
import time
import weakref
from collections.abc import Mapping
from multiprocessing import connection as mpc
from multiprocessing import util
from typing import TYPE_CHECKING, Any, TypeVar, cast

from proxyshare import _protocol as P
from proxyshare._address import Address, TlsAddress, format_address, parse_address
from proxyshare._errors import (
    AuthenticationError,
    ProxyShareError,
    RemoteTraceback,
    ServerUnavailableError,
    UnshareableArgumentError,
)
from proxyshare._protocol import Op
from proxyshare._wire import SMALL_FRAME as _SMALL_FRAME
from proxyshare._wire import FramedSocket, Pollers, default_pollers, keepalive

if TYPE_CHECKING:
    from proxyshare._tls import TLSFiles

__all__ = [
    "CALL_TIMEOUT_ENV",
    "CONNECT_TIMEOUT",
    "Channel",
    "ServerRef",
    "call_timeout",
    "close_all_channels",
    "error_from_reply",
    "result_of",
]

CONNECT_TIMEOUT = 5.0  # seconds for TCP connect and for the handshake
CALL_TIMEOUT_ENV = "PROXYSHARE_CALL_TIMEOUT"
_DEFAULT_CALL_TIMEOUT = 10.0


def call_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds a reply may take: ``$PROXYSHARE_CALL_TIMEOUT`` (default 10)."""
    text = environ.get(CALL_TIMEOUT_ENV, "").strip()
    if not text:
        return _DEFAULT_CALL_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 86_400:
        raise ValueError(
            f"{CALL_TIMEOUT_ENV}={text!r}: expected seconds, more than 0 and at most 86400 "
            f"(the default is {_DEFAULT_CALL_TIMEOUT:g})"
        )
    return seconds


_CALL_TIMEOUT = call_timeout()
_CANCEL = P.CANCEL.code
_HOST = socket.gethostname()
R = TypeVar("R")
_dumps = pickle.dumps
_loads = pickle.loads
_POLLERS = Pollers(default_pollers())  # threads of this process that poll for a reply

# This process's pid, kept by a fork hook: os.getpid() is a system call, and
# every call checks that its connection was not inherited from a parent.
_pid = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


_BYE = _dumps((P.BYE.code, None), P.PICKLE_PROTOCOL)
_BYE_FRAME = len(_BYE).to_bytes(4, "big") + _BYE


def _say_bye(wire: FramedSocket, pid: int) -> None:
    """End a connection cleanly: BYE (never blocking), then close."""
    if pid == _pid[0]:  # never on a connection inherited through fork: it is the parent's
        with contextlib.suppress(OSError):  # the server has gone already: nobody to tell
            wire.send_some(memoryview(_BYE_FRAME))  # TLS too; a partial BYE is no BYE
    wire.close()


class Channel:
    """One authenticated session with a server, used by one thread."""

    __slots__ = (
        "__weakref__",
        "_busy",
        "_farewell",
        "_limit",
        "_wire",
        "address",
        "closed",
        "max_message",
        "pid",
        "seq",
        "server_info",
    )

    def __init__(
        self,
        address: Address,
        authkey: bytes,
        timeout: float = CONNECT_TIMEOUT,
        tls: TLSFiles | None = None,
    ) -> None:
        self.address = address
        self.pid = _pid[0]
        self.max_message = 1 << 16  # until the server says how much it accepts
        self.closed = False
        self._busy = False
        self.seq = 0  # requests sent; a CANCEL names one by this count
        self._farewell: weakref.finalize[Any, Any] | None = None
        self._wire = wire = _open_connection(address, authkey, timeout, tls)
        try:
            hello = (P.HELLO.code, None, self.pid, _HOST, threading.current_thread().name)
            wire.send_bytes(_dumps(hello, P.PICKLE_PROTOCOL))
            status, value = _loads(bytes(wire.recv_view()))
            if status != P.OK:
                raise error_from_reply(value)
            self.server_info: dict[str, Any] = value
            self.max_message = int(value["max_message"])
            wire.sock.settimeout(None)  # blocking from here on: calls may wait (acquire) ...
            wire.set_recv_timeout(_CALL_TIMEOUT)  # ... but never longer than allowed
            self._limit: float | None = _CALL_TIMEOUT
        except (EOFError, OSError) as exc:
            wire.close()
            raise ServerUnavailableError(
                f"the server at {format_address(address)} did not complete the handshake "
                f"within {timeout:g}s ({_describe(exc)}): is it a proxyshare server?"
            ) from None
        except BaseException:
            wire.close()
            raise
        # When this channel is collected (its thread ended): a clean close.  At exit
        # multiprocessing's finalizers do it instead, in order (see _close_all_at_exit).
        self._farewell = weakref.finalize(self, _say_bye, wire, self.pid)
        self._farewell.atexit = False

    def stale(self) -> bool:
        """True if the server closed this idle connection (it restarted or dropped us).

        Between calls the server sends nothing, so any event means EOF or an
        error; checking before a request is sent makes reconnecting safe.
        """
        return bool(self._wire.readable(0))

    def call(self, request: tuple[Any, ...], limit: float | None = _CALL_TIMEOUT) -> Any:
        """Send one request and return its result, or raise its error.

        ``limit``: seconds the reply may take (None: no limit), see the module docstring.
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
        if self._busy:
            # A signal handler (or an unpickler) calling a proxy while this thread
            # waits for a reply would interleave two requests on one connection.
            raise ProxyShareError(
                "a proxyshare call was made while this thread is already waiting for "
                "one (from a signal handler?): a connection carries one call at a time "
                "per thread; make the call outside the handler"
            )
        wire = self._wire
        if limit != self._limit:
            wire.set_recv_timeout(limit)
            self._limit = limit
        self._busy = True
        self.seq += 1
        sent = False
        try:
            wire.send_bytes(payload)
            sent = True
            reply = bytes(wire.recv_view(None, _POLLERS))  # a copy: unpickling may run user code
        except BaseException as exc:
            failure = self._failed(exc, sent, len(payload))
            if failure is not None:
                raise failure from None
            raise  # the caller's own exception, unchanged; its request was cancelled
        finally:
            self._busy = False
        return result_of(reply)

    def _failed(self, exc: BaseException, sent: bool, size: int) -> ServerUnavailableError | None:
        """A call failed while it sent or waited: the error to raise instead, if any.

        A transport failure closes the connection and becomes
        ``ServerUnavailableError``.  Anything else is the caller's own exception
        (raised by a signal handler, or Ctrl-C): cancel just this request and
        keep the connection, so the thread keeps what it holds.
        """
        where = format_address(self.address)
        if isinstance(exc, BlockingIOError) and sent:  # SO_RCVTIMEO ran out
            limit = self._limit
            self.close()
            return ServerUnavailableError(
                f"the proxyshare server at {where} did not answer within {limit:g}s: it is "
                "stopped (SIGSTOP, a debugger), overloaded or unreachable; set "
                f"{CALL_TIMEOUT_ENV} to wait longer. The next call reconnects."
            )
        # Socket errors carry an errno; an exception a signal handler raises
        # (even a TimeoutError, an OSError too) does not.
        if isinstance(exc, EOFError) or (isinstance(exc, OSError) and exc.errno is not None):
            self.close()
            return ServerUnavailableError(
                f"lost the connection to the proxyshare server at {where} "
                f"({_describe(exc)}): is it still running? The next call reconnects."
            )
        if not sent and size >= _SMALL_FRAME:
            self.close()  # part of a large frame may have gone out: the stream is lost
            return None
        try:
            self._cancel()
        except BaseException:  # no acknowledgement in time, or interrupted again
            self.close()  # the server then releases what this session held
        return None

    def _cancel(self) -> None:
        """Cancel request ``seq`` and read until the server acknowledges it."""
        wire = self._wire
        if self._limit != _CALL_TIMEOUT:
            wire.set_recv_timeout(_CALL_TIMEOUT)
            self._limit = _CALL_TIMEOUT
        wire.send_bytes(_dumps((_CANCEL, None, self.seq), P.PICKLE_PROTOCOL))
        ack = P.ack_frame(self.seq)
        while bytes(wire.recv_view()) != ack:  # the cancelled request's reply, if not read yet
            pass

    def close(self) -> None:
        """Drop the connection (after a failure): no BYE, so queue items it got go back."""
        self.closed = True
        _forget(self)
        if self._farewell is not None:
            self._farewell.detach()
        self._wire.close()

    def bye(self) -> None:
        """Close cleanly: the server takes what this thread was handed as done with."""
        if self._busy or self._farewell is None:
            self.close()  # a call is under way (from another thread at exit): just drop it
            return
        self.closed = True
        _forget(self)
        # Not ``self._farewell()``: at exit weakref.finalize's own atexit hook may
        # have run first (Python 3.13 runs multiprocessing's finalizers from
        # atexit too, after it), and a finalize called after that does nothing.
        if self._farewell.detach() is not None:
            _say_bye(self._wire, self.pid)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    return f"{type(exc).__name__}: {exc}"


def _unpicklable(request: tuple[Any, ...], exc: Exception) -> UnshareableArgumentError:
    args = ", ".join(type(a).__name__ for a in request[2:])
    return UnshareableArgumentError(
        f"cannot send this value to the proxyshare server: it cannot be pickled "
        f"({type(exc).__name__}: {exc}). Argument types: ({args}). Send plain data "
        "(numbers, strings, lists, dicts, ...) instead."
    )


def _connect_unix(sock: socket.socket, path: str, timeout: float) -> None:
    """``connect()``, retried while the server's accept backlog is full.

    A full unix-socket backlog fails at once with EAGAIN (TCP retries the SYN
    instead): under a burst of new clients that means "busy", not "no server".
    """
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while True:
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.002)


def _open_connection(
    address: Address, authkey: bytes, timeout: float, tls: TLSFiles | None = None
) -> FramedSocket:
    """Connect (TLS first if ``tls``) and authenticate, each step within ``timeout``."""
    where = format_address(address)
    context = None
    if tls is not None:
        from proxyshare._tls import client_context

        context = client_context(tls)  # before connecting: a bad file is not the server's fault
    try:
        if isinstance(address, tuple):
            sock = socket.create_connection(address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keepalive(sock)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                _connect_unix(sock, address, timeout)
            except BaseException:
                sock.close()
                raise
    except OSError as exc:
        raise ServerUnavailableError(
            f"no proxyshare server is listening at {where} ({_describe(exc)}): "
            "is it running? (`proxyshare serve` starts one) Check the address too"
        ) from None
    if tls is not None:
        wire: FramedSocket = _start_tls(sock, context, address, tls, timeout)
    else:
        wire = FramedSocket(sock)
    try:
        greeting = wire.recv_bytes(256)  # the challenge, or a TLS server's notice
        if greeting == P.TLS_REQUIRED:
            raise AuthenticationError(
                f"the server at {where} speaks TLS: connect to tls://{where} (with "
                "tls_ca=FILE, or PROXYSHARE_TLS_CA, if a private CA signed its certificate)"
            )
        # The stdlib's handshake needs only send_bytes/recv_bytes, which these offer.
        mpc.answer_challenge(cast(mpc.Connection, _Replay(wire, greeting)), authkey)
        mpc.deliver_challenge(cast(mpc.Connection, wire), authkey)
    except AuthenticationError:
        wire.close()
        raise
    except multiprocessing.AuthenticationError:
        wire.close()
        raise AuthenticationError(
            f"the server at {where} rejected the authkey: use the key the server was "
            "started with (PROXYSHARE_AUTHKEY, --authkey-file or the manager's authkey)"
        ) from None
    except (EOFError, OSError) as exc:
        wire.close()
        if tls is not None:
            tls_error = _tls_failure(exc, where, tls, after_handshake=True)
            if tls_error is not None:
                raise tls_error from None
        raise _handshake_broke(where, exc, timeout, "handshake", "") from None
    except Exception as exc:  # answer_challenge asserts on a foreign greeting
        wire.close()
        raise AuthenticationError(
            f"the peer at {where} did not speak the proxyshare handshake "
            f"({type(exc).__name__}): is it a proxyshare server?"
        ) from None
    return wire


class _Replay:
    """The handshake's connection, with the first message already read (to look at it)."""

    __slots__ = ("_first", "_wire")

    def __init__(self, wire: FramedSocket, first: bytes) -> None:
        self._wire = wire
        self._first: bytes | None = first

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        first, self._first = self._first, None
        return first if first is not None else self._wire.recv_bytes(maxlength)

    def send_bytes(self, payload: bytes) -> None:
        self._wire.send_bytes(payload)


def _start_tls(
    sock: socket.socket, context: Any, address: Address, tls: TLSFiles, timeout: float
) -> FramedSocket:
    """The TLS handshake, before any byte of proxyshare's own (the HMAC challenge included)."""
    from proxyshare._tls import TLSFramedSocket

    where = format_address(address)
    wrapped = None
    try:
        wrapped = context.wrap_socket(
            sock, server_hostname=address[0], do_handshake_on_connect=False
        )
        wrapped.do_handshake()  # bounded by the socket's timeout
    except (EOFError, OSError) as exc:
        (sock if wrapped is None else wrapped).close()
        error = _tls_failure(exc, where, tls, after_handshake=False)
        if error is not None:
            raise error from None
        hint = " started with --tls-cert"
        raise _handshake_broke(where, exc, timeout, "TLS handshake", hint) from None
    return TLSFramedSocket(wrapped, timeout)


def _handshake_broke(
    where: str, exc: BaseException, timeout: float, what: str, hint: str
) -> ServerUnavailableError:
    if isinstance(exc, TimeoutError):
        return ServerUnavailableError(
            f"the server at {where} did not complete the {what} within {timeout:g}s: "
            f"is it a proxyshare server{hint}?"
        )
    return ServerUnavailableError(
        f"the server at {where} closed the connection during the {what} ({_describe(exc)}): "
        f"is it a proxyshare server{hint}? One at its connection limit (--max-connections) "
        "does this too"
    )


# Reasons OpenSSL gives when the peer answered the hello with something that is not TLS.
_NOT_TLS = {
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "RECORD_TOO_LARGE",
}
_NO_CLIENT_CERT = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"}
_CLIENT_CERT_REFUSED = {
    "TLSV1_ALERT_UNKNOWN_CA",
    "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
    "TLSV1_ALERT_ACCESS_DENIED",
    "TLSV1_ALERT_DECRYPT_ERROR",
}


def _tls_failure(
    exc: BaseException, where: str, tls: TLSFiles, after_handshake: bool
) -> ProxyShareError | None:
    """What a TLS failure means and what to change; None: not a TLS failure."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message
        host = where.removeprefix("tls://").rpartition(":")[0].strip("[]")
        if code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            return AuthenticationError(
                f"certificate verify failed: the certificate of the server at {where} is not "
                f"valid for the name {host!r} ({detail}): connect with a name the certificate "
                f"lists (its subjectAltName), or give the server a certificate for {host!r}"
            )
        if code in (18, 19, 20, 21):  # self-signed, or signed by a CA not trusted here
            trusted = (
                f"the CA file {tls.ca!r} (tls_ca) did not sign it"
                if tls.ca is not None
                else "no CA this machine trusts signed it"
            )
            return AuthenticationError(
                f"certificate verify failed: the server at {where} sent a certificate that "
                f"cannot be trusted ({detail}; {trusted}): pass tls_ca=FILE (or set "
                "PROXYSHARE_TLS_CA, or --tls-ca) naming the CA that signed the server's "
                "certificate"
            )
        return AuthenticationError(
            f"certificate verify failed: the certificate of the server at {where} was "
            f"refused ({detail}): check the server's certificate, and tls_ca"
        )
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _NOT_TLS and not after_handshake:
            plain = where.removeprefix("tls://")
            return AuthenticationError(
                f"the server at {where} does not speak TLS ({reason}): connect to {plain} "
                "without tls://, or start the server with --tls-cert and --tls-key"
            )
        if reason in _NO_CLIENT_CERT and tls.cert is None:
            return AuthenticationError(
                f"the server at {where} requires a client certificate (mutual TLS; {reason}): "
                "pass tls_cert=FILE and tls_key=FILE (or set PROXYSHARE_TLS_CERT and "
                "PROXYSHARE_TLS_KEY, or --tls-cert and --tls-key)"
            )
        if reason in _CLIENT_CERT_REFUSED or reason in _NO_CLIENT_CERT:
            return AuthenticationError(
                f"the server at {where} refused this client's certificate {tls.cert!r} "
                f"({reason}): use a certificate signed by a CA the server trusts (its "
                "--tls-client-ca)"
            )
        if reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"):
            return AuthenticationError(
                f"the server at {where} does not offer TLS 1.2 or later ({reason}), "
                "the oldest version proxyshare accepts"
            )
        if not isinstance(exc, ssl.SSLEOFError):
            return AuthenticationError(
                f"the TLS connection to {where} failed ({reason or exc}): check the "
                "server's certificate and the client's TLS settings"
            )
    return None


# -- per-process, per-thread channel registry ---------------------------------

_tls = threading.local()
_all_lock = threading.Lock()
# Every open channel of this process, for close_all_channels().  Weak, so a
# thread that ends takes its channels with it (and the server sees the close).
_all: weakref.WeakSet[Channel] = weakref.WeakSet()


def _reset_after_fork() -> None:
    """A forked child must never use the parent's sockets: start empty."""
    global _tls, _all_lock, _all
    _tls = threading.local()
    _all_lock = threading.Lock()
    _all = weakref.WeakSet()


os.register_at_fork(after_in_child=_reset_after_fork)


def _forget(channel: Channel) -> None:
    channels: dict[Any, Channel] | None = getattr(_tls, "channels", None)
    if channels is not None:
        for key, value in list(channels.items()):
            if value is channel:
                del channels[key]
    with _all_lock:
        _all.discard(channel)


def close_all_channels() -> None:
    """Close every connection this process holds, cleanly (tests, shutdown, exit)."""
    with _all_lock:
        channels = list(_all)
    for channel in channels:
        channel.bye()


def _close_all_at_exit(_hook: object = None) -> None:
    """Close every channel cleanly when this process exits.

    Processes started by multiprocessing end with ``os._exit()``, which runs
    no atexit hook (so no ``weakref.finalize``) but does run multiprocessing's
    finalizers; a new process clears those, so this runs again after each start.
    """
    util.Finalize(None, close_all_channels, exitpriority=0)


class _AtExit:
    """A weak-referenceable anchor for ``util.register_after_fork``."""


_at_exit = _AtExit()
_close_all_at_exit()
util.register_after_fork(_at_exit, _close_all_at_exit)


class ServerRef:
    """Where a server is and how to get in: what every proxy carries.

    Pickles as ``(address, authkey, tls)`` so proxies work in any process,
    under any start method, with a custom authkey (the stdlib drops it).
    ``tls`` (``tls://`` addresses only) holds file *paths*, never key
    material: see ``proxyshare._tls``.
    """

    __slots__ = ("_key", "address", "authkey", "tls")

    def __init__(self, address: object, authkey: bytes, tls: TLSFiles | None = None) -> None:
        self.address: Address = parse_address(address)
        if not isinstance(authkey, (bytes, bytearray)):
            raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
        self.authkey = bytes(authkey)
        if isinstance(self.address, TlsAddress):
            if tls is None:
                from proxyshare._tls import TLSFiles

                tls = TLSFiles()  # the system's CAs, no client certificate
        elif tls is not None:
            raise ValueError(
                f"TLS files were given for {format_address(self.address)}, which is not a "
                "tls:// address: connect to tls://host:port"
            )
        self.tls = tls
        self._key = (self.address, self.authkey, tls)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ServerRef, (self.address, self.authkey, self.tls))

    def __repr__(self) -> str:  # never show the key
        return f"ServerRef({format_address(self.address)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerRef) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def channel(self) -> Channel:
        """This thread's connection to the server, opened on first use."""
        try:
            channels: dict[Any, Channel] = _tls.channels
        except AttributeError:
            channels = _tls.channels = {}
        channel = channels.get(self._key)
        pid = _pid[0]
        if channel is None or channel.closed or channel.pid != pid or channel.stale():
            if channel is not None and channel.pid == pid and not channel.closed:
                channel.close()  # the server dropped it; nothing was in flight
            channel = Channel(self.address, self.authkey, tls=self.tls)
            channels[self._key] = channel
            with _all_lock:
                _all.add(channel)
        return channel

    def acknowledge(self) -> None:
        """Tell the server this thread is done with the queue items it last took.

        Any request acknowledges them; this one round trip is for a server
        about to be stopped on purpose, which would otherwise keep them in
        flight (and, with a state dir, deliver them again after a restart).
        Unlike a close, it releases nothing this thread holds.
        """
        channels: dict[Any, Channel] | None = getattr(_tls, "channels", None)
        channel = None if channels is None else channels.get(self._key)
        if channel is None or channel.closed or channel.pid != _pid[0] or channel._busy:
            return  # nothing taken through this thread's connection, or a call under way
        with contextlib.suppress(ServerUnavailableError):  # gone: nothing is in flight there
            channel.call((P.PING.code, None, None))

    def call(self, op: Op[R], name: str | None, /, *args: Any) -> R:
        """Run ``op`` on the resource ``name``; return its result or raise its error."""
        request = (op.code, name, *args)
        limit = op.wait_limit(request, _CALL_TIMEOUT) if op.blocks else _CALL_TIMEOUT
        result: R = self.channel().call(request, limit)
        return result

    def where(self) -> str:
        return format_address(self.address)


def result_of(reply: bytes) -> Any:
    """A whole reply's value, or its error raised (the connection stays in step)."""
    try:
        status, value = _loads(reply)
    except Exception as exc:
        raise ProxyShareError(
            f"the server's reply could not be unpickled in this process "
            f"({type(exc).__name__}: {exc}): is the value's class importable here?"
        ) from exc
    if status == P.OK:
        return value
    raise error_from_reply(value)


def error_from_reply(value: Any) -> BaseException:
    """Rebuild an error sent by the server, its traceback attached as ``__cause__``."""
    error, remote_tb = value
    if not isinstance(error, BaseException):
        return ProxyShareError(repr(error))
    error.__cause__ = RemoteTraceback(remote_tb)
    return error
