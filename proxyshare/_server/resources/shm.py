"""Server side of the shared-memory fast path: it creates, describes and removes the files.

Clients map the files and run every operation themselves
(``proxyshare._backends.shm``); the server stays the registry of names and
kinds, reports values and holders in ``status``, and removes the files when
a resource is deleted or the server stops.

The files live in a fresh directory (0700; files 0600) under ``/dev/shm``
(memory-backed) when it exists, else the temporary directory, or under
``$PROXYSHARE_SHM_DIR`` as the server sees it; it must be local storage,
where ``flock`` is a real lock.  A server killed with SIGKILL cannot remove
its directory (``proxyshare-<pid>-*``); everything else removes its files.
"""

from __future__ import annotations

import logging
import mmap
import os
import tempfile
import threading
from typing import Any, ClassVar

from proxyshare import _rules as rules
from proxyshare._backends.shm.layout import (
    CLOSED,
    FILE_SIZE,
    HEADER,
    HOST,
    MAGIC,
    OFF_CLOSED,
    OFF_PID,
    OFF_VALUE,
    PID,
    VALUE,
    fcntl,
    probe,
    read_owner,
)
from proxyshare._errors import ProxyShareError
from proxyshare._server.resources.base import Resource

__all__ = ["DIR_ENV", "ShmCounterResource", "ShmLockResource"]

logger = logging.getLogger("proxyshare.shm")

DIR_ENV = "PROXYSHARE_SHM_DIR"  # where the server puts its directory (default /dev/shm or tmp)

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
    return tempfile.gettempdir()


def _take_directory() -> str:
    """The server process's private directory (mode 0700), made on first use."""
    global _dir, _dir_files
    with _dir_lock:
        if _dir is None:
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
    durable: ClassVar[bool] = False  # clients change the file directly: nothing to log

    def __init__(self, name: str, size: int = FILE_SIZE) -> None:
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
            os.ftruncate(fd, size)  # sparse: pages use memory once written
            self.mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            _drop_directory()
            raise
        self.probe_fd = fd  # the server's own description, for describe()
        HEADER.pack_into(self.mm, 0, MAGIC, self.token, self.file_kind.encode(), 0)
        self.closed = False

    def options(self) -> dict[str, Any]:
        return {"path": self.path, "token": self.token, "host": HOST}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shared_memory": True, "path": self.path}

    def mark_closed(self) -> None:
        CLOSED.pack_into(self.mm, OFF_CLOSED, 1)  # open objects see it and raise

    def destroy(self) -> None:
        with self.mutex:
            if self.closed:
                return
            self.closed = True
            self.mark_closed()
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
        initial = rules.check_int(initial, "initial", bits64=True)
        super().__init__(name)
        VALUE.pack_into(self.mm, OFF_VALUE, initial)

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            value = None if self.closed else VALUE.unpack_from(self.mm, OFF_VALUE)[0]
            return {**super().describe(), "value": value}


class ShmLockResource(_ShmResource):
    kind = "shm_lock"
    file_kind = "lock"

    def describe(self) -> dict[str, Any]:
        with self.mutex:  # one probe at a time: they share the server's description
            owner = None
            recorded = not self.closed and PID.unpack_from(self.mm, OFF_PID)[0]
            if recorded and probe(self.mm, self.probe_fd):
                owner = read_owner(self.mm)
            return {
                **super().describe(),
                "locked": owner is not None,
                "holders": [] if owner is None else [owner],
                "lease": None,
            }
