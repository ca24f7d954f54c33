"""The state directory: who may use it, its lock, and the names of its files.

    DIR/lock               flock()ed by the one server using DIR; holds its pid
    DIR/snapshot.<gen>     the whole state at the start of generation <gen>
    DIR/log.<gen>          every change made during generation <gen>, in order
    DIR/*.tmp              a snapshot being written (removed at the next start)

The state is the newest snapshot, then every log from its generation on, in
order.  Anyone who can write these files can run code in the server (they
hold pickles, as requests do), so the directory must be the server user's
own and private (0700), and so must every file in it (0600), as key files
must be: anything else is refused before a byte is read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from proxyshare._server.state.errors import StateDirRefused, StateInUse

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "Listing",
    "StateDir",
    "check_private_file",
    "fsync_directory",
    "open_state_dir",
    "remove_quietly",
]

_PRIVATE = stat.S_IRWXG | stat.S_IRWXO
_NAME = re.compile(r"(snapshot|log)\.(\d{9})")
_OPEN_FLAGS = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def fsync_directory(path: Path) -> None:
    """Make a new or renamed entry of ``path`` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Listing:
    """The data files found in a state directory, by generation."""

    snapshots: dict[int, Path] = field(default_factory=dict)
    logs: dict[int, Path] = field(default_factory=dict)
    temporary: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.snapshots and not self.logs


class StateDir:
    """A checked, locked state directory (see :func:`open_state_dir`)."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd

    def file(self, kind: str, generation: int) -> Path:
        return self.path / f"{kind}.{generation:09d}"

    def listing(self) -> Listing:
        """Every data file, each checked to be a private regular file of ours."""
        found = Listing()
        for entry in sorted(os.scandir(self.path), key=lambda e: e.name):
            if entry.name == "lock":
                continue
            match = _NAME.fullmatch(entry.name)
            if match is None and not entry.name.endswith(".tmp"):
                continue  # not ours (a backup copy, an editor's file): left alone
            path = Path(entry.path)
            check_private_file(path)
            if match is None:
                found.temporary.append(path)
            elif match[1] == "snapshot":
                found.snapshots[int(match[2])] = path
            else:
                found.logs[int(match[2])] = path
        return found

    def claim(self) -> None:
        """Write our pid into the lock file, for the message another server would give.

        Not before the state has been read: a refused start changes no file.
        """
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        """Release the lock (closing the descriptor does it); idempotent."""
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)


def open_state_dir(path: str | os.PathLike[str]) -> StateDir:
    """Check (or create, mode 0700) the directory ``path`` and take its lock.

    Raises ``StateDirRefused`` if it is not private to this user and
    ``StateInUse`` if another server holds it.
    """
    directory = Path(path).expanduser().absolute()
    _prepare_directory(directory)
    lock_path = directory / "lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
    except OSError as exc:
        raise StateDirRefused(
            f"cannot open the state dir's lock file {str(lock_path)!r}: {exc.strerror}"
        ) from None
    try:
        check_private_file(lock_path, os.fstat(fd))
        if fcntl is None:  # pragma: no cover - Windows
            raise StateDirRefused("a state dir needs POSIX flock(), missing on this platform")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise StateInUse(
                f"the state dir {str(directory)!r} is in use by another proxyshare server "
                f"(pid {holder}): stop that server, or give this one another --state-dir"
            ) from None
    except BaseException:
        os.close(fd)
        raise
    return StateDir(directory, fd)


def _prepare_directory(directory: Path) -> None:
    try:
        info = directory.stat()
    except FileNotFoundError:
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            directory.mkdir(mode=0o700)
            directory.chmod(0o700)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise StateDirRefused(
                f"cannot create the state dir {str(directory)!r}: {exc.strerror}"
            ) from None
        return
    except OSError as exc:
        raise StateDirRefused(
            f"cannot use the state dir {str(directory)!r}: {exc.strerror}"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirRefused(f"the state dir {str(directory)!r} exists and is not a directory")
    if info.st_uid != os.getuid():
        raise StateDirRefused(
            f"the state dir {str(directory)!r} belongs to another user (uid {info.st_uid}): "
            "whoever can write it can run code in the server; use a directory of your own"
        )
    if info.st_mode & _PRIVATE:
        raise StateDirRefused(
            f"the state dir {str(directory)!r} is accessible by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 700 {directory}`"
        )


def check_private_file(path: Path, info: os.stat_result | None = None) -> None:
    """A regular file of this user's that nobody else can read or write."""
    if info is None:
        info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise StateDirRefused(f"the state file {str(path)!r} is not a regular file: remove it")
    if info.st_uid != os.getuid():
        raise StateDirRefused(
            f"the state file {str(path)!r} was written by another user (uid {info.st_uid}): "
            "whoever can write it can run code in the server; remove it if it is not yours"
        )
    if info.st_mode & _PRIVATE:
        raise StateDirRefused(
            f"the state file {str(path)!r} is accessible by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}): run `chmod 600 {path}`"
        )


def remove_quietly(path: Path) -> None:
    """Remove a file that is no longer part of the state (already gone is fine)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
