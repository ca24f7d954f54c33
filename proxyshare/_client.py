"""The one client call path: connections, requests, replies, error mapping.

Every proxy method ends in :meth:`ServerRef.call`.  It finds this thread's
connection to the server (one per process, thread and server; re-made after
``fork``), sends one lean request (see ``_protocol``), reads one reply, and
turns transport failures into proxyshare errors.  This is the *only* place
where ``EOFError``/``OSError``/``multiprocessing.AuthenticationError`` become
``ServerUnavailableError``/``AuthenticationError``.

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
import multiprocessing
import os
import pickle
import socket
import threading
import time
import weakref
from multiprocessing import connection as mpc
from multiprocessing import util
from typing import Any, TypeVar

from proxyshare import _protocol as P
from proxyshare._address import Address, format_address, parse_address
from proxyshare._errors import (
    AuthenticationError,
    ProxyShareError,
    RemoteTraceback,
    ServerUnavailableError,
    UnshareableArgumentError,
)
from proxyshare._protocol import Op
from proxyshare._wire import FramedSocket, Pollers, default_pollers, keepalive

__all__ = ["CONNECT_TIMEOUT", "Channel", "ServerRef", "close_all_channels"]

CONNECT_TIMEOUT = 5.0  # seconds for TCP connect and for the handshake
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
            wire.sock.send(_BYE_FRAME, socket.MSG_DONTWAIT)
    wire.close()


class Channel:
    """One authenticated session with a server, used by one thread."""

    __slots__ = (
        "__weakref__",
        "_busy",
        "_farewell",
        "_wire",
        "address",
        "closed",
        "max_message",
        "pid",
        "server_info",
    )

    def __init__(self, address: Address, authkey: bytes, timeout: float = CONNECT_TIMEOUT) -> None:
        self.address = address
        self.pid = _pid[0]
        self.max_message = 1 << 16  # until the server says how much it accepts
        self.closed = False
        self._busy = False
        self._farewell: weakref.finalize[Any, Any] | None = None
        self._wire = _open_connection(address, authkey, timeout)
        try:
            hello = (P.HELLO.code, None, self.pid, _HOST, threading.current_thread().name)
            self.server_info: dict[str, Any] = self.call(hello)
            self.max_message = int(self.server_info["max_message"])
        except BaseException:
            self._wire.close()
            raise
        # When this channel is collected (its thread ended): a clean close.  At exit
        # multiprocessing's finalizers do it instead, in order (see _close_all_at_exit).
        self._farewell = weakref.finalize(self, _say_bye, self._wire, self.pid)
        self._farewell.atexit = False
        self._wire.sock.settimeout(None)  # handshake done: calls may block (acquire)

    def stale(self) -> bool:
        """True if the server closed this idle connection (it restarted or dropped us).

        Between calls the server sends nothing, so any event means EOF or an
        error; checking before a request is sent makes reconnecting safe.
        """
        return bool(self._wire.readable(0))

    def call(self, request: tuple[Any, ...]) -> Any:
        """Send one request and return its result, or raise its error."""
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
        self._busy = True
        try:
            wire.send_bytes(payload)
            reply = bytes(wire.recv_view(None, _POLLERS))  # a copy: unpickling may run user code
        except (EOFError, OSError) as exc:
            self.close()
            raise ServerUnavailableError(
                f"lost the connection to the proxyshare server at {format_address(self.address)} "
                f"({_describe(exc)}): is it still running? The next call reconnects."
            ) from None
        except BaseException:
            # Interrupted mid-call (e.g. KeyboardInterrupt during a blocking
            # acquire): the reply would arrive later and be read as the answer to
            # the next request.  Drop the connection; the server then releases
            # whatever this session held.
            self.close()
            raise
        finally:
            self._busy = False
        try:
            status, value = _loads(reply)
        except Exception as exc:  # the whole reply was read: the connection is in step
            raise ProxyShareError(
                f"the server's reply could not be unpickled in this process "
                f"({type(exc).__name__}: {exc}): is the value's class importable here?"
            ) from exc
        if status == P.OK:
            return value
        raise error_from_reply(value)

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
        self._farewell()


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


def _open_connection(address: Address, authkey: bytes, timeout: float) -> FramedSocket:
    """Connect and authenticate; every read and write is bounded by ``timeout``."""
    where = format_address(address)
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
    wire = FramedSocket(sock)
    try:
        mpc.answer_challenge(wire, authkey)  # type: ignore[arg-type]
        mpc.deliver_challenge(wire, authkey)  # type: ignore[arg-type]
    except multiprocessing.AuthenticationError:
        wire.close()
        raise AuthenticationError(
            f"the server at {where} rejected the authkey: use the key the server was "
            "started with (PROXYSHARE_AUTHKEY, --authkey-file or the manager's authkey)"
        ) from None
    except (EOFError, OSError) as exc:
        wire.close()
        raise ServerUnavailableError(
            f"the server at {where} did not complete the handshake within {timeout:g}s "
            f"({_describe(exc)}): is it a proxyshare server?"
        ) from None
    except Exception as exc:  # answer_challenge asserts on a foreign greeting
        wire.close()
        raise AuthenticationError(
            f"the peer at {where} did not speak the proxyshare handshake "
            f"({type(exc).__name__}): is it a proxyshare server?"
        ) from None
    return wire


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

    Pickles as ``(address, authkey)`` so proxies work in any process, under
    any start method, with a custom authkey (the stdlib drops it).
    """

    __slots__ = ("_key", "address", "authkey")

    def __init__(self, address: object, authkey: bytes) -> None:
        self.address: Address = parse_address(address)
        if not isinstance(authkey, (bytes, bytearray)):
            raise TypeError(f"authkey must be bytes, not {type(authkey).__name__}")
        self.authkey = bytes(authkey)
        self._key = (self.address, self.authkey)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ServerRef, (self.address, self.authkey))

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
            channel = Channel(self.address, self.authkey)
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
        result: R = self.channel().call((op.code, name, *args))
        return result

    def where(self) -> str:
        return format_address(self.address)


def error_from_reply(value: Any) -> BaseException:
    """Rebuild an error sent by the server, its traceback attached as ``__cause__``."""
    error, remote_tb = value
    if not isinstance(error, BaseException):
        return ProxyShareError(repr(error))
    error.__cause__ = RemoteTraceback(remote_tb)
    return error
