"""The client side of the fast path: counter and lock operations run in this process.

``mgr.counter(name, shared_memory=True)`` asks the server once, to create (or
find) the resource by name; every operation after that runs here, on the
file the server made, under a kernel lock (see ``layout``)::

    any process on the same host
    ────────────────────────────
    hits.increment()                     a SharedMemoryCounter over a ShmTransport
      └─ this thread's descriptor
           flock(fd, LOCK_EX)      ┐ the kernel lock: freed if we die
           value += n in the mmap  │
           flock(fd, LOCK_UN)      ┘

The proxies are the ordinary ``Counter`` and ``Lock``; their transport is a
``ShmTransport`` (one file), which pickles as the file's path, its check
token and the server's host.  ``increment``/``decrement`` and ``acquire``/
``release`` are overridden because they are the hot path: going through
``Transport.call`` costs them a third more (see ``_hot_path_note``); every
other method uses the transport.

What differs from the served counter and lock (same methods, same errors):

* same host only: an object unpickled on another host, or where the file
  is gone, raises ``ProxyShareError`` at its first operation (not while
  unpickling, so a pool reports it through the future instead of breaking);
* values are 64-bit signed integers (``OverflowError``, value unchanged);
* the lock is not FIFO: the kernel picks the next holder;
* ``acquire(timeout=...)`` polls (``flock`` has no timeout and SIGALRM
  belongs to the application): non-blocking attempts with a pause growing
  from 50 µs to 2 ms;
* the lock has no lease (only its holder's death, or the end of the thread
  that holds it, releases it).

After ``fork`` a child closes the descriptors it inherited (they would share
the parent's lock) and opens its own on first use; see ``_after_fork``.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

from proxyshare import _protocol as P
from proxyshare import _rules as rules
from proxyshare._backends.shm.layout import (
    FILE_SIZE,
    HEADER,
    HOST,
    MAGIC,
    OFF_CLOSED,
    OFF_PID,
    OFF_RECORD,
    OFF_VALUE,
    PID,
    RECORD,
    SEQ,
    STATE,
    VALUE,
    fcntl,
    probe,
    read_owner,
)
from proxyshare._client import ServerRef
from proxyshare._errors import ProxyShareError, ResourceNotFoundError
from proxyshare._protocol import Op
from proxyshare._proxies import Counter, Lock

__all__ = [
    "SharedMemoryCounter",
    "SharedMemoryLock",
    "ShmTransport",
    "open_shm_counter",
    "open_shm_lock",
]

R = TypeVar("R")

POLL_FIRST = 50e-6  # acquire(timeout=...) back-off: first pause, doubling ...
POLL_MAX = 2e-3  # ... up to this, so a freed lock is noticed within ~2 ms

_HOST_BYTES = HOST.encode("utf-8", "replace")[:64]
_pid = os.getpid()

if fcntl is not None:
    _flock = fcntl.flock
    _LOCK_EX = fcntl.LOCK_EX
    _LOCK_EX_NB = fcntl.LOCK_EX | fcntl.LOCK_NB
    _LOCK_UN = fcntl.LOCK_UN
_unpack_state = STATE.unpack_from
_pack_value = VALUE.pack_into
_pack_record = RECORD.pack_into
_pack_seq = SEQ.pack_into
_pack_pid = PID.pack_into
_time = time.time


# -- one handle per file and process, one descriptor per thread -------------------------


class _LockFd:
    """A descriptor used only for ``flock``; closing it drops its lock."""

    __slots__ = ("__weakref__", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:  # a thread that ends closes its descriptor (and lock)
        self.close()


class _Handle:
    """This process's view of one shared-memory file.

    The mapping is shared by the process's threads; lock descriptors are
    per thread (``tls.fd``), because ``flock`` excludes open file
    descriptions, not threads.
    """

    def __init__(self, kind: str, name: str, path: str, token: bytes, host: str) -> None:
        self.kind = kind
        self.name = name
        self.path = path
        self.token = token
        self.host = host
        self.mm: mmap.mmap | None = None  # set by attach()
        self.pid = 0
        self.tls = threading.local()
        self.files: weakref.WeakSet[_LockFd] = weakref.WeakSet()
        self.lock = threading.Lock()

    def what(self) -> str:
        return f"shared-memory {self.kind} {self.name!r}"

    def served_hint(self) -> str:
        return (
            f"use the served {self.kind} instead: mgr.{self.kind}({self.name!r}) "
            "(shared_memory=False), which works across hosts"
        )

    def gone(self) -> ResourceNotFoundError:
        return ResourceNotFoundError(
            f"{self.what()} was deleted or its server stopped; open it again with "
            f"mgr.{self.kind}({self.name!r}, shared_memory=True)"
        )

    def attach(self) -> mmap.mmap:
        """Map the file, after checking it is the one the server made for us."""
        if fcntl is None:  # pragma: no cover - Windows
            raise ProxyShareError(f"{self.what()} needs POSIX flock(); {self.served_hint()}")
        if self.host != HOST:
            raise ProxyShareError(
                f"{self.what()} lives in shared memory on host {self.host!r}, but this "
                f"process runs on {HOST!r}: the fast path works on one host only; "
                + self.served_hint()
            )
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ProxyShareError(
                f"{self.what()} is gone: its file {self.path} does not exist (its server "
                "stopped, it was deleted, or this process cannot see the server's files, "
                f"e.g. another host or container); {self.served_hint()}"
            ) from None
        except OSError as exc:
            why = (
                "only processes of the server's user can use it"
                if isinstance(exc, PermissionError)
                else "it is not a proxyshare file"
            )
            raise ProxyShareError(
                f"cannot open the file of {self.what()}, {self.path} ({exc.strerror}): "
                f"{why}; {self.served_hint()}"
            ) from None
        try:
            if os.fstat(fd).st_size < FILE_SIZE:
                raise ProxyShareError(f"{self.path} is not a proxyshare shared-memory file")
            # mmap keeps its own duplicate of fd; that description is never locked.
            mm = mmap.mmap(fd, FILE_SIZE)
        finally:
            os.close(fd)
        magic, token, kind, _closed = HEADER.unpack_from(mm, 0)
        if (
            magic.rstrip(b"\0") != MAGIC
            or token != self.token
            or kind.rstrip(b"\0") != self.kind.encode()
        ):
            mm.close()
            raise ProxyShareError(
                f"{self.path} no longer holds {self.what()} (the file was replaced); "
                f"open it again with mgr.{self.kind}({self.name!r}, shared_memory=True)"
            )
        self.mm = mm
        self.pid = os.getpid()
        return mm

    def mapped(self) -> mmap.mmap:
        """The mapping, made on first use in this process."""
        mm = self.mm
        if mm is None or self.pid != os.getpid():
            with self.lock:
                mm = self.mm
                if mm is None or self.pid != os.getpid():
                    mm = self.attach()
        return mm

    def thread_fd(self) -> int:
        """This thread's lock descriptor (opened on first use in a thread, or after fork)."""
        try:
            fd: int = self.tls.fd
            return fd
        except AttributeError:
            pass
        self.mapped()
        with self.lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                raise self.gone() from None
            lock_fd = _LockFd(fd)
            self.files.add(lock_fd)
        tls = self.tls
        tls.keep = lock_fd
        tls.held = False
        tls.fd = fd
        return fd

    def reset_after_fork(self) -> None:
        for lock_fd in list(self.files):
            lock_fd.close()  # the parent keeps its locks: they are its descriptions
        self.files = weakref.WeakSet()
        self.tls = threading.local()
        self.lock = threading.Lock()
        self.pid = os.getpid()


# Kept for the life of the process (a page and a descriptor per thread each):
# like served proxies, a temporary object must not take its lock with it when
# it is garbage collected.
_handles: dict[tuple[str, bytes], _Handle] = {}
_handles_lock = threading.Lock()


def _handle(kind: str, name: str, path: str, token: bytes, host: str) -> _Handle:
    """The process's handle for a file: objects for one file share descriptors,
    so a lock is owned by a thread whichever object it used (as served locks are)."""
    with _handles_lock:
        handle = _handles.get((path, token))
        if handle is None:
            handle = _handles[(path, token)] = _Handle(kind, name, path, token, host)
        return handle


def _after_fork() -> None:
    global _pid, _handles_lock
    _pid = os.getpid()
    _handles_lock = threading.Lock()
    for handle in list(_handles.values()):
        handle.reset_after_fork()


os.register_at_fork(after_in_child=_after_fork)


# -- the operations -------------------------------------------------------------------

_OPS: dict[int, Callable[..., Any]] = {}


def _implements(op: Op[Any]) -> Callable[[Callable[..., R]], Callable[..., R]]:
    def register(fn: Callable[..., R]) -> Callable[..., R]:
        _OPS[op.code] = fn
        return fn

    return register


def _overflow(h: _Handle, value: int, n: int) -> OverflowError:
    return OverflowError(
        f"{h.what()} would overflow: {value} {'+' if n >= 0 else '-'} {abs(n)} does not fit "
        "in 64 bits; the value is unchanged (use the served counter, shared_memory=False, "
        "for unbounded integers)"
    )


def _add(h: _Handle, n: int) -> int:
    """``value += n`` under the file's lock; the new value."""
    fd = h.thread_fd()
    mm = h.mm
    if mm is None:  # never, once this thread has its descriptor; for the type checker
        mm = h.mapped()
    _flock(fd, _LOCK_EX)
    try:
        closed, value = _unpack_state(mm, OFF_CLOSED)
        if closed:
            raise h.gone()
        new: int = value + n
        if not rules.INT64_MIN <= new <= rules.INT64_MAX:  # first: pack_into zeroes, then fails
            raise _overflow(h, value, n)
        _pack_value(mm, OFF_VALUE, new)
    finally:
        _flock(fd, _LOCK_UN)
    return new


def _swap(h: _Handle, expected: object, new: int, always: bool) -> tuple[bool, int]:
    """Under the lock: store ``new`` if ``always`` or the value equals ``expected``."""
    fd = h.thread_fd()
    mm = h.mapped()
    _flock(fd, _LOCK_EX)
    try:
        closed, value = _unpack_state(mm, OFF_CLOSED)
        if closed:
            raise h.gone()
        swapped = always or value == expected
        if swapped:
            _pack_value(mm, OFF_VALUE, new)
    finally:
        _flock(fd, _LOCK_UN)
    return swapped, value


@_implements(P.COUNTER_ADD)
def _counter_add(h: _Handle, n: int = 1) -> int:
    return _add(h, rules.check_int(n, "increment(n)", bits64=True))


@_implements(P.COUNTER_SUB)
def _counter_sub(h: _Handle, n: int = 1) -> int:
    return _add(h, -rules.check_int(n, "decrement(n)", bits64=True))


@_implements(P.COUNTER_GET)
def _counter_get(h: _Handle) -> int:
    return _swap(h, None, 0, False)[1]


@_implements(P.COUNTER_SET)
def _counter_set(h: _Handle, value: int) -> None:
    _swap(h, None, rules.check_int(value, "set(value)", bits64=True), True)


@_implements(P.COUNTER_CAS)
def _counter_cas(h: _Handle, expected: int, new: int) -> bool:
    return _swap(h, expected, rules.check_int(new, "compare_and_set(new)", bits64=True), False)[0]


@_implements(P.COUNTER_SWAP)
def _counter_swap(h: _Handle, new: int) -> int:
    return _swap(h, None, rules.check_int(new, "get_and_set(new)", bits64=True), True)[1]


def _record_holder(h: _Handle, fd: int) -> None:
    """Just acquired: check the file is live, then write who holds it (seqlock)."""
    mm = h.mapped()
    closed, seq = _unpack_state(mm, OFF_CLOSED)
    if closed:
        h.tls.held = False
        _flock(fd, _LOCK_UN)
        raise h.gone()
    seq = (seq + 1) | 1  # odd while writing, even after; repairs a dead writer's odd
    _pack_record(mm, OFF_RECORD, seq, _pid, _time(), _HOST_BYTES)
    _pack_seq(mm, OFF_RECORD, seq + 1)


@_implements(P.LOCK_ACQUIRE)
def _lock_acquire(h: _Handle, blocking: bool = True, timeout: float | None = None) -> bool:
    seconds = rules.check_timeout(blocking, timeout)
    fd = h.thread_fd()
    tls = h.tls
    if tls.held:  # flock on our own description would "succeed" again
        if not blocking:
            return False
        if seconds is None:
            raise rules.not_reentrant(h.name)
        time.sleep(seconds)  # as the served lock: wait out the timeout, then fail
        return False
    if not blocking:
        try:
            _flock(fd, _LOCK_EX_NB)
        except BlockingIOError:
            return False
    elif seconds is None:
        _flock(fd, _LOCK_EX)
    elif not _poll_for_lock(fd, seconds):
        return False
    tls.held = True
    _record_holder(h, fd)
    return True


def _poll_for_lock(fd: int, seconds: float) -> bool:
    """``flock`` cannot time out: try again after a short, growing pause."""
    try:
        _flock(fd, _LOCK_EX_NB)
        return True
    except BlockingIOError:
        pass
    deadline = time.monotonic() + seconds
    pause = POLL_FIRST
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, POLL_MAX)
        try:
            _flock(fd, _LOCK_EX_NB)
            return True
        except BlockingIOError:
            continue


@_implements(P.LOCK_RELEASE)
def _lock_release(h: _Handle) -> None:
    tls = h.tls
    if not getattr(tls, "held", False):
        raise rules.not_owner("lock", h.name)
    _pack_pid(h.mapped(), OFF_PID, 0)
    tls.held = False
    _flock(tls.fd, _LOCK_UN)


def _holder_elsewhere(h: _Handle) -> bool:
    fd = h.thread_fd()
    if h.tls.held:
        return True
    mm = h.mapped()
    if not PID.unpack_from(mm, OFF_PID)[0]:
        return False  # nobody recorded: free (or taken this very instant)
    return probe(mm, fd)


@_implements(P.LOCK_LOCKED)
def _lock_locked(h: _Handle) -> bool:
    return _holder_elsewhere(h)


@_implements(P.LOCK_OWNER)
def _lock_owner(h: _Handle) -> dict[str, Any] | None:
    if not _holder_elsewhere(h):
        return None
    return read_owner(h.mapped())


# -- the transport and the proxies -------------------------------------------------------


class ShmTransport:
    """Runs counter and lock operations in this process, on one shared-memory file.

    Pickles as the file's path, its check token and the host that made it;
    nothing is opened when it is unpickled (see the module docstring).
    """

    __slots__ = ("_h",)

    def __init__(self, handle: _Handle) -> None:
        self._h = handle

    def __reduce__(self) -> tuple[Any, ...]:
        h = self._h
        return (_restore, (h.kind, h.name, h.path, h.token, h.host))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ShmTransport) and other._h is self._h

    def __hash__(self) -> int:
        return hash((self._h.path, self._h.token))

    def call(self, op: Op[R], name: str, /, *args: Any) -> R:
        fn = _OPS.get(op.code)
        if fn is None:
            raise ProxyShareError(f"{op!r} is not available on {self._h.what()}")
        return cast(R, fn(self._h, *args))

    def where(self) -> str:
        return f"shared memory {self._h.path}"

    @property
    def handle(self) -> _Handle:
        return self._h


def _restore(kind: str, name: str, path: str, token: bytes, host: str) -> ShmTransport:
    # Nothing is opened here: a file that is missing is reported by the first
    # operation, where a pool worker can hand the error back through the future.
    return ShmTransport(_handle(kind, name, path, token, host))


class SharedMemoryCounter(Counter):
    """A ``Counter`` whose operations run here, on a shared-memory file.

    Each operation is an atomic read-modify-write under ``flock``; values are
    64-bit signed integers.
    """

    __slots__ = ()
    _transport: ShmTransport

    @property
    def path(self) -> str:
        """The shared-memory file (on the server's host)."""
        return self._transport.handle.path

    # The hot path, without the transport's dispatch (see the module docstring).
    def increment(self, n: int = 1) -> int:
        """Add ``n`` and return the new value."""
        if type(n) is not int:
            n = rules.check_int(n, "increment(n)", bits64=True)
        return _add(self._transport.handle, n)

    def decrement(self, n: int = 1) -> int:
        """Subtract ``n`` and return the new value."""
        if type(n) is not int:
            n = rules.check_int(n, "decrement(n)", bits64=True)
        return _add(self._transport.handle, -n)


class SharedMemoryLock(Lock):
    """A ``Lock`` taken with ``flock`` on a shared-memory file.

    Owned by the thread that acquired it; freed by the kernel the moment its
    holder's process dies.  Not FIFO: the kernel picks the next holder.
    """

    __slots__ = ()
    _transport: ShmTransport

    @property
    def path(self) -> str:
        """The shared-memory file (on the server's host)."""
        return self._transport.handle.path

    # The hot path, without the transport's dispatch (see the module docstring).
    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire; False if ``blocking`` is false or ``timeout`` ran out first."""
        h = self._transport.handle
        if blocking is True and timeout is None:
            fd = h.thread_fd()
            if not h.tls.held:
                _flock(fd, _LOCK_EX)  # the common case, straight to the kernel
                h.tls.held = True
                _record_holder(h, fd)
                return True
        return _lock_acquire(h, blocking, timeout)

    def release(self) -> None:
        """Release; ``NotOwnerError`` if this thread does not hold it."""
        _lock_release(self._transport.handle)


# -- what the manager calls ------------------------------------------------------------


def _open(
    server: ServerRef, name: str, kind: str, options: dict[str, Any], file_kind: str
) -> ShmTransport:
    rules.check_name(name)
    info = server.call(P.OPEN, name, kind, options)
    handle = _handle(file_kind, name, info["path"], info["token"], info["host"])
    handle.mapped()  # report another host or an unreadable file right here
    return ShmTransport(handle)


def open_shm_counter(server: ServerRef, name: str, initial: int = 0) -> SharedMemoryCounter:
    """Get or create the shared-memory counter ``name`` and map it here."""
    rules.check_int(initial, "initial", bits64=True)
    return SharedMemoryCounter(
        _open(server, name, "shm_counter", {"initial": initial}, "counter"), name
    )


def open_shm_lock(server: ServerRef, name: str, lease: float | None = None) -> SharedMemoryLock:
    """Get or create the shared-memory lock ``name`` and map it here."""
    if lease is not None:
        raise ValueError(
            "a shared-memory lock cannot have a lease: the kernel frees it only when its "
            f"holder exits; use the served lock for leases: mgr.lock({name!r}, lease={lease!r})"
        )
    return SharedMemoryLock(_open(server, name, "shm_lock", {}, "lock"), name)
