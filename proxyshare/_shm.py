"""The same-host fast path: counters and locks in shared-memory files.

``mgr.counter(name, shared_memory=True)`` and ``mgr.lock(name,
shared_memory=True)`` still go through the server once, to create (or find)
the resource by name; after that every operation runs in the calling
process, on a small file mapped into memory, under a kernel lock::

    server process                           any process on the same host
    ──────────────                           ────────────────────────────
    _op_open("hits", "shm_counter")          hits.increment()
      └─ ShmCounterResource                    └─ this thread's descriptor
           creates <dir>/counter-<random>           flock(fd, LOCK_EX)      ┐ the kernel
           (dir 0700, file 0600),                   value += n in the mmap  │ lock; freed
           returns {path, token, host}              flock(fd, LOCK_UN)      ┘ if we die
      describe() reads the value (status)
      close() marks the file deleted and removes it; the last close removes the dir

Why ``flock``: it locks an *open file description*, so a descriptor opened
by each thread makes threads of one process exclude each other, and the
kernel drops the lock the moment the last descriptor of its holder closes
(process killed included).  Classic POSIX record locks (``lockf``,
``F_SETLK``) belong to the whole process instead, so threads would not
exclude each other and closing any descriptor of the file would drop them.
Linux's open-file-description locks (``F_OFD_SETLKW``) have the right
semantics too, but measured here a lock/unlock pair costs ~0.9 µs with
``flock`` against ~1.3 µs with ``F_OFD_SETLKW`` (it packs a ``struct flock``
per call), so every POSIX platform (Linux, macOS, the BSDs) gets ``flock``.
The files live in a fresh directory under ``/dev/shm`` (memory-backed) when
it exists, else the temporary directory, or under ``$PROXYSHARE_SHM_DIR`` as
the server sees it; it must be local storage, where ``flock`` is a real lock
(on NFS Linux emulates it with process-wide record locks).  No Windows
support (no ``fcntl``).  A server killed with SIGKILL cannot remove its
directory (``proxyshare-<pid>-*``); everything else removes its files.

What differs from the served counter and lock (same methods, same errors):

* same host only: an object unpickled on another host, or where the file
  is gone, raises ``ProxyShareError`` at its first operation (not while
  unpickling, so a pool reports it through the future instead of breaking);
* values are 64-bit signed integers (``OverflowError``, value unchanged);
* the lock is not FIFO: the kernel picks the next holder;
* ``acquire(timeout=...)`` polls (``flock`` has no timeout and SIGALRM
  belongs to the application): non-blocking attempts with a pause growing
  from 50 µs to 2 ms.  Measured here: a timed waiter gets a freed lock
  ~1 ms later (at most ~2 ms), a blocking waiter ~0.15 ms later, and under
  contention timed waiters may lose to blocking ones;
* the lock has no lease (only its holder's death, or the end of the thread
  that holds it, releases it).

After ``fork`` a child closes the descriptors it inherited (they would share
the parent's lock) and opens its own on first use; see ``_after_fork``.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, ClassVar

from proxyshare import _protocol as P
from proxyshare._client import ServerRef
from proxyshare._errors import NotOwnerError, ProxyShareError, ResourceNotFoundError
from proxyshare._proxies import Counter, Lock
from proxyshare._resources import Resource, _check_int, _check_timeout
from proxyshare._transport import Transport

if TYPE_CHECKING:
    from proxyshare._manager import ShareManager

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the fast path is refused in _Handle.attach
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SHM_RESOURCE_TYPES",
    "SharedMemoryCounter",
    "SharedMemoryLock",
    "ShmCounterResource",
    "ShmLockResource",
    "open_shm_counter",
    "open_shm_lock",
]

logger = logging.getLogger("proxyshare.shm")

DIR_ENV = "PROXYSHARE_SHM_DIR"  # where the server puts its directory (default /dev/shm or tmp)
FILE_SIZE = mmap.PAGESIZE
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
POLL_FIRST = 50e-6  # acquire(timeout=...) back-off: first pause, doubling ...
POLL_MAX = 2e-3  # ... up to this, so a freed lock is noticed within ~2 ms

# -- file layout (native byte order and alignment: 8-byte fields are single stores) --
#
#   0  magic   8s   b"PSHMv1"
#   8  token  16s   random; the pickled object must match it
#  24  kind    8s   b"counter" / b"lock"
#  32  closed  q    1 once the server deleted the resource
#  40  counter: value q
#  40  lock:    seq Q (odd while a record is being written), pid q (0 = free),
#              since d, host 64s
MAGIC = b"PSHMv1"
_HEADER = struct.Struct("@8s16s8sq")
_CLOSED = struct.Struct("@q")
_STATE = struct.Struct("@qq")  # (closed, value) or (closed, seq)
_VALUE = struct.Struct("@q")
_RECORD = struct.Struct("@Qqd64s")  # seq, pid, since, host
_SEQ = struct.Struct("@Q")
_PID = struct.Struct("@q")
OFF_CLOSED = 32
OFF_VALUE = 40
OFF_RECORD = 40
OFF_PID = 48

_HOST = socket.gethostname()
_HOST_BYTES = _HOST.encode("utf-8", "replace")[:64]
_pid = os.getpid()

if fcntl is not None:
    _flock = fcntl.flock
    _LOCK_EX = fcntl.LOCK_EX
    _LOCK_EX_NB = fcntl.LOCK_EX | fcntl.LOCK_NB
    _LOCK_UN = fcntl.LOCK_UN
_unpack_state = _STATE.unpack_from
_pack_value = _VALUE.pack_into
_pack_record = _RECORD.pack_into
_pack_seq = _SEQ.pack_into
_pack_pid = _PID.pack_into
_time = time.time


def _check_value(value: object, what: str) -> int:
    """A 64-bit signed int, or TypeError/OverflowError like the served counter."""
    value = _check_int(value, what)
    if not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(
            f"{what}={value} does not fit in a shared-memory counter (64-bit signed: "
            f"{INT64_MIN}..{INT64_MAX}); use the served counter (shared_memory=False) for "
            "unbounded integers"
        )
    return value


# -- the lock record ------------------------------------------------------------


def _read_owner(mm: mmap.mmap) -> dict[str, Any] | None:
    """The holder record, read consistently against a concurrent writer (seqlock)."""
    for _ in range(1000):
        seq, pid, since, host = _RECORD.unpack_from(mm, OFF_RECORD)
        if not seq & 1 and _SEQ.unpack_from(mm, OFF_RECORD)[0] == seq:
            break
    if not pid:
        return None
    return {"pid": pid, "host": host.rstrip(b"\0").decode("utf-8", "replace"), "since": since}


def _probe(mm: mmap.mmap, fd: int) -> bool:
    """Whether the lock is held by somebody else; clears a dead holder's record.

    Called only when the record names a holder, so a free lock is never
    touched.  If we can take it, its holder died: we own it for a moment,
    which makes clearing the record safe.
    """
    try:
        _flock(fd, _LOCK_EX_NB)
    except BlockingIOError:
        return True
    try:
        _pack_pid(mm, OFF_PID, 0)
    finally:
        _flock(fd, _LOCK_UN)
    return False


# -- client side: one handle per file and process, one descriptor per thread --------


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
        self.mm: mmap.mmap = None  # type: ignore[assignment]  # set by attach()
        self.attached = False
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

    def attach(self) -> None:
        """Map the file, after checking it is the one the server made for us."""
        if fcntl is None:  # pragma: no cover - Windows
            raise ProxyShareError(f"{self.what()} needs POSIX flock(); {self.served_hint()}")
        if self.host != _HOST:
            raise ProxyShareError(
                f"{self.what()} lives in shared memory on host {self.host!r}, but this "
                f"process runs on {_HOST!r}: the fast path works on one host only; "
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
        magic, token, kind, _closed = _HEADER.unpack_from(mm, 0)
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
        self.attached = True
        self.pid = os.getpid()

    def thread_fd(self) -> int:
        """Open this thread's lock descriptor (first use in a thread, or after fork)."""
        with self.lock:
            if not self.attached or self.pid != os.getpid():
                self.attach()
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


def _restore(
    cls: type[SharedMemoryCounter | SharedMemoryLock],
    ref: ServerRef,
    name: str,
    path: str,
    token: bytes,
    host: str,
) -> SharedMemoryCounter | SharedMemoryLock:
    # Nothing is opened here: a file that is missing is reported by the first
    # operation, where a pool worker can hand the error back through the future.
    return cls(ref, name, _handle(cls.kind, name, path, token, host))


class _SharedMemoryMixin:
    __slots__ = ()
    _transport: Transport
    _name: str
    _shm: _Handle

    def __reduce__(self) -> tuple[Any, ...]:
        h = self._shm
        return (_restore, (type(self), self._transport, self._name, h.path, h.token, h.host))

    @property
    def path(self) -> str:
        """The shared-memory file (on the server's host)."""
        return self._shm.path

    def __repr__(self) -> str:
        kind = self._shm.kind.capitalize()
        return f"<proxyshare.{kind} {self._name!r} in shared memory at {self._shm.path}>"


class SharedMemoryCounter(_SharedMemoryMixin, Counter):
    """A ``Counter`` whose operations run here, on a shared-memory file.

    Each operation is an atomic read-modify-write under ``flock``; values are
    64-bit signed integers.
    """

    __slots__ = ("_shm",)

    def __init__(self, ref: ServerRef, name: str, handle: _Handle) -> None:
        super().__init__(ref, name)
        self._shm = handle

    def _locked_fd(self) -> int:
        h = self._shm
        try:
            fd: int = h.tls.fd
        except AttributeError:
            fd = h.thread_fd()
        _flock(fd, _LOCK_EX)
        return fd

    def _overflow(self, value: int, n: int) -> OverflowError:
        return OverflowError(
            f"{self._shm.what()} would overflow: {value} {'+' if n >= 0 else '-'} {abs(n)} does "
            "not fit in 64 bits; the value is unchanged (use the served counter, "
            "shared_memory=False, for unbounded integers)"
        )

    def increment(self, n: int = 1) -> int:
        """Add ``n`` and return the new value."""
        if type(n) is not int:
            _check_int(n, "increment(n)")
        h = self._shm
        try:
            fd: int = h.tls.fd
        except AttributeError:
            fd = h.thread_fd()
        mm = h.mm
        _flock(fd, _LOCK_EX)
        try:
            closed, value = _unpack_state(mm, OFF_CLOSED)
            if closed:
                raise h.gone()
            new: int = value + n
            if not INT64_MIN <= new <= INT64_MAX:  # checked first: pack_into zeroes, then fails
                raise self._overflow(value, n)
            _pack_value(mm, OFF_VALUE, new)
        finally:
            _flock(fd, _LOCK_UN)
        return new

    def decrement(self, n: int = 1) -> int:
        """Subtract ``n`` and return the new value."""
        if type(n) is not int:
            _check_int(n, "decrement(n)")
        return self.increment(-n)

    def _swap(self, expected: object, new: int, always: bool) -> tuple[bool, int]:
        """Under the lock: store ``new`` if ``always`` or the value equals ``expected``."""
        h = self._shm
        fd = self._locked_fd()
        try:
            closed, value = _unpack_state(h.mm, OFF_CLOSED)
            if closed:
                raise h.gone()
            swapped = always or value == expected
            if swapped:
                _pack_value(h.mm, OFF_VALUE, new)
        finally:
            _flock(fd, _LOCK_UN)
        return swapped, value

    def get(self) -> int:
        """The current value."""
        return self._swap(None, 0, False)[1]

    def set(self, value: int) -> None:
        """Replace the value."""
        self._swap(None, _check_value(value, "set(value)"), True)

    def compare_and_set(self, expected: int, new: int) -> bool:
        """Set ``new`` only if the value is ``expected``; True if it was set."""
        return self._swap(expected, _check_value(new, "compare_and_set(new)"), False)[0]

    def get_and_set(self, new: int) -> int:
        """Set ``new`` and return the previous value."""
        return self._swap(None, _check_value(new, "get_and_set(new)"), True)[1]


class SharedMemoryLock(_SharedMemoryMixin, Lock):
    """A ``Lock`` taken with ``flock`` on a shared-memory file.

    Owned by the thread that acquired it; freed by the kernel the moment its
    holder's process dies.  Not FIFO: the kernel picks the next holder.
    """

    __slots__ = ("_shm",)

    def __init__(self, ref: ServerRef, name: str, handle: _Handle) -> None:
        super().__init__(ref, name)
        self._shm = handle

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Acquire; False if ``blocking`` is false or ``timeout`` ran out first."""
        h = self._shm
        tls = h.tls
        try:
            fd: int = tls.fd
        except AttributeError:
            fd = h.thread_fd()
            tls = h.tls
        if blocking is True and timeout is None and not tls.held:
            _flock(fd, _LOCK_EX)  # the common case, straight to the kernel
        elif not self._acquire_slow(fd, blocking, timeout):
            return False
        tls.held = True
        mm = h.mm
        closed, seq = _unpack_state(mm, OFF_CLOSED)
        if closed:
            tls.held = False
            _flock(fd, _LOCK_UN)
            raise h.gone()
        seq = (seq + 1) | 1  # odd while writing, even after; repairs a dead writer's odd
        _pack_record(mm, OFF_RECORD, seq, _pid, _time(), _HOST_BYTES)
        _pack_seq(mm, OFF_RECORD, seq + 1)
        return True

    def _acquire_slow(self, fd: int, blocking: bool, timeout: float | None) -> bool:
        seconds = _check_timeout(blocking, timeout)
        if self._shm.tls.held:  # flock on our own description would "succeed" again
            if not blocking:
                return False
            if seconds is None:
                raise ProxyShareError(
                    f"lock {self._name!r} is already held by this thread; acquiring it again "
                    "would wait forever (proxyshare locks are not re-entrant)"
                )
            time.sleep(seconds)  # as the served lock: wait out the timeout, then fail
            return False
        if not blocking:
            try:
                _flock(fd, _LOCK_EX_NB)
            except BlockingIOError:
                return False
            return True
        if seconds is None:
            _flock(fd, _LOCK_EX)
            return True
        # flock() cannot time out: poll with a short, growing pause.
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

    def release(self) -> None:
        """Release; ``NotOwnerError`` if this thread does not hold it."""
        tls = self._shm.tls
        if not getattr(tls, "held", False):
            raise NotOwnerError(
                f"lock {self._name!r} cannot be released by this caller: it does not hold it "
                "(a lock is owned by the process and thread that acquired it)"
            )
        _pack_pid(self._shm.mm, OFF_PID, 0)
        tls.held = False
        _flock(tls.fd, _LOCK_UN)

    def _holder_elsewhere(self) -> bool:
        h = self._shm
        try:
            fd: int = h.tls.fd
        except AttributeError:
            fd = h.thread_fd()
        if h.tls.held:
            return True
        if not _PID.unpack_from(h.mm, OFF_PID)[0]:
            return False  # nobody recorded: free (or taken this very instant)
        return _probe(h.mm, fd)

    def locked(self) -> bool:
        """Whether anybody holds it."""
        return self._holder_elsewhere()

    def owner(self) -> dict[str, Any] | None:
        """``{"pid", "host", "since"}`` of the holder, or None."""
        if not self._holder_elsewhere():
            return None
        return _read_owner(self._shm.mm)


# -- server side -------------------------------------------------------------------

_dir_lock = threading.Lock()
_dir: str | None = None
_dir_files = 0


def _base_directory() -> str:
    base = os.environ.get(DIR_ENV)
    if base:
        if not os.path.isdir(base):
            raise ProxyShareError(f"{DIR_ENV}={base!r} is not a directory")
        return base
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"  # memory-backed: no disk writes behind the mapping
    import tempfile

    return tempfile.gettempdir()


def _take_directory() -> str:
    """The server process's private directory (mode 0700), made on first use."""
    global _dir, _dir_files
    with _dir_lock:
        if _dir is None:
            import tempfile

            _dir = tempfile.mkdtemp(prefix=f"proxyshare-{os.getpid()}-", dir=_base_directory())
            os.chmod(_dir, 0o700)
        _dir_files += 1
        return _dir


def _drop_directory() -> None:
    """One file fewer; the last one removes the directory (server shutdown)."""
    global _dir, _dir_files
    with _dir_lock:
        _dir_files -= 1
        if _dir_files == 0 and _dir is not None:
            path, _dir = _dir, None
            try:
                os.rmdir(path)
            except OSError as exc:
                logger.warning("could not remove the shared-memory directory %s: %s", path, exc)


class _ShmResource(Resource):
    """Creates, describes and removes one shared-memory file."""

    file_kind: ClassVar[str] = ""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        if fcntl is None:  # pragma: no cover - Windows
            raise ProxyShareError("shared-memory resources need POSIX flock(), missing here")
        self.token = os.urandom(16)
        directory = _take_directory()
        try:
            self.path = os.path.join(directory, f"{self.file_kind}-{self.token[:8].hex()}")
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(self.path, flags, 0o600)
        except BaseException:
            _drop_directory()
            raise
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
            os.ftruncate(fd, FILE_SIZE)
            self.mm = mmap.mmap(fd, FILE_SIZE)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            _drop_directory()
            raise
        self.probe_fd = fd  # the server's own description, for describe()
        _HEADER.pack_into(self.mm, 0, MAGIC, self.token, self.file_kind.encode(), 0)
        self.closed = False

    def options(self) -> dict[str, Any]:
        return {"path": self.path, "token": self.token, "host": _HOST}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shared_memory": True, "path": self.path}

    def destroy(self) -> None:
        with self.mutex:
            if self.closed:
                return
            self.closed = True
            _CLOSED.pack_into(self.mm, OFF_CLOSED, 1)  # open objects see it and raise
            self.mm.close()
            os.close(self.probe_fd)
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                logger.warning("shared-memory file %s was already removed", self.path)
        _drop_directory()


class ShmCounterResource(_ShmResource):
    kind = "shm_counter"
    file_kind = "counter"

    def __init__(self, name: str, initial: int = 0) -> None:
        _check_int(initial, "initial")
        if not INT64_MIN <= initial <= INT64_MAX:
            raise ValueError(f"initial={initial} does not fit in 64 bits")
        super().__init__(name)
        _VALUE.pack_into(self.mm, OFF_VALUE, initial)

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            value = None if self.closed else _VALUE.unpack_from(self.mm, OFF_VALUE)[0]
            return {**super().describe(), "value": value}


class ShmLockResource(_ShmResource):
    kind = "shm_lock"
    file_kind = "lock"

    def describe(self) -> dict[str, Any]:
        with self.mutex:  # one probe at a time: they share the server's description
            owner = None
            recorded = not self.closed and _PID.unpack_from(self.mm, OFF_PID)[0]
            if recorded and _probe(self.mm, self.probe_fd):
                owner = _read_owner(self.mm)
            return {
                **super().describe(),
                "locked": owner is not None,
                "holders": [] if owner is None else [owner],
                "lease": None,
            }


SHM_RESOURCE_TYPES: dict[str, type[Resource]] = {
    ShmCounterResource.kind: ShmCounterResource,
    ShmLockResource.kind: ShmLockResource,
}


# -- what the manager calls ------------------------------------------------------------


def _open(
    mgr: ShareManager, name: str, kind: str, options: dict[str, Any]
) -> tuple[ServerRef, dict[str, Any]]:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a resource name must be a non-empty str, not {name!r}")
    ref = mgr.server_ref
    reply: dict[str, Any] = ref.call(P.OPEN, name, kind, options)
    return ref, reply


def open_shm_counter(mgr: ShareManager, name: str, initial: int = 0) -> SharedMemoryCounter:
    """Get or create the shared-memory counter ``name`` and map it here."""
    _check_value(initial, "initial")
    ref, info = _open(mgr, name, ShmCounterResource.kind, {"initial": initial})
    handle = _handle("counter", name, info["path"], info["token"], info["host"])
    with handle.lock:
        if not handle.attached:
            handle.attach()  # report another host or an unreadable file right here
    return SharedMemoryCounter(ref, name, handle)


def open_shm_lock(mgr: ShareManager, name: str, lease: float | None = None) -> SharedMemoryLock:
    """Get or create the shared-memory lock ``name`` and map it here."""
    if lease is not None:
        raise ValueError(
            "a shared-memory lock cannot have a lease: the kernel frees it only when its "
            f"holder exits; use the served lock for leases: mgr.lock({name!r}, lease={lease!r})"
        )
    ref, info = _open(mgr, name, ShmLockResource.kind, {})
    handle = _handle("lock", name, info["path"], info["token"], info["host"])
    with handle.lock:
        if not handle.attached:
            handle.attach()
    return SharedMemoryLock(ref, name, handle)
