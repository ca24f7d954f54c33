"""The log file: a header, then frames, then zeros.

::

    header   magic b"PXSLOG\\r\\n" | format version u32 | generation u32   (little-endian)
    frame    payload length u32 | crc32 of the payload u32 | payload (a pickled record)
    ...      frames back to back; the rest of the file is zeros

Why a shared mapping: the file is preallocated (``posix_fallocate``, so a
full disk shows up as an error when the log grows, never as SIGBUS) and
written through ``mmap``.  A record copied into the mapping is in the
kernel's page cache at once: it survives a SIGKILL of the server with no
system call per record.  On the 2-core VM an ``os.write`` of a record cost
4-5 µs; a whole ``append`` here (checksum, header, copy) costs about 1 µs.
What a *power loss* may take is set by the fsync policy (see ``journal``).

Why the torn-tail rule below is safe: a frame is written in one copy, from
its first byte to its last, into zeros that were never written before, and
never past the end of the file (the writer grows the file first).  So a
frame cut short by a crash is a prefix of a good frame followed by nothing
but zeros, and the reader can tell it from damage anywhere else.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyshare._server.state.errors import StateDamaged

__all__ = [
    "FORMAT_VERSION",
    "FRAME",
    "HEADER",
    "LogContents",
    "LogWriter",
    "check_header",
    "damaged",
    "read_log",
]

FORMAT_VERSION = 1  # of snapshots and logs; a reader refuses any other
HEADER = struct.Struct("<8sII")  # magic, format version, generation
FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
LOG_MAGIC = b"PXSLOG\r\n"
CHUNK = 1 << 20  # the log grows by this much (at least) at a time

_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def damaged(path: Path, offset: int | None, what: str, fix: str = "") -> StateDamaged:
    """The one-line refusal for a damaged file: which file, where, what to do."""
    where = f"{path}" if offset is None else f"{path} at offset {offset}"
    fix = fix or (
        "restore the state dir from a backup; nothing was changed"
        if offset is None
        else f"restore the state dir from a backup, or keep what precedes the damage with "
        f"`truncate -s {offset} {path}` (the changes recorded after it are lost); "
        "nothing was changed"
    )
    return StateDamaged(f"damaged state: {where}: {what}: {fix}")


def check_header(path: Path, data: bytes | mmap.mmap, magic: bytes, generation: int) -> None:
    if len(data) < HEADER.size:
        raise damaged(path, None, f"shorter ({len(data)} bytes) than its header")
    found, version, gen = HEADER.unpack_from(data, 0)
    if found != magic:
        raise damaged(path, 0, "not a proxyshare state file (wrong magic number)")
    if version != FORMAT_VERSION:
        raise damaged(
            path,
            None,
            f"format version {version}, and this proxyshare reads version {FORMAT_VERSION}",
            "use the proxyshare version that wrote it (or a newer one); nothing was changed",
        )
    if gen != generation:
        raise damaged(path, 8, f"its header says generation {gen}, its name {generation}")


@dataclass
class LogContents:
    """What a log holds: its records with their offsets, and a dropped torn frame."""

    records: list[tuple[int, Any]] = field(default_factory=list)
    torn: tuple[int, int] | None = None  # (offset, bytes written) of a frame cut short
    end: int = HEADER.size  # just past the last good frame


def read_log(path: Path, data: bytes, generation: int, last: bool) -> LogContents:
    """Every record of the log ``data`` (the bytes of ``path``).

    A frame cut short by a crash is dropped only in the ``last`` log of the
    chain, and only if nothing but zeros follows it; anything else that does
    not check out is damage.
    """
    check_header(path, data, LOG_MAGIC, generation)
    out = LogContents()
    size = len(data)
    written = len(data.rstrip(b"\0"))  # everything after this is never-written zeros
    pos = HEADER.size
    view = memoryview(data)
    try:
        while pos < written:
            if pos + FRAME.size > size:
                raise _bad(path, pos, last, written, pos + FRAME.size, "a record header is cut off")
            length, crc = FRAME.unpack_from(data, pos)
            end = pos + FRAME.size + length
            if length == 0:
                raise _bad(path, pos, last, written, pos + FRAME.size, "zeros where a record is")
            if end > size:
                raise damaged(path, pos, f"a record of {length} bytes runs past the file's end")
            payload = view[pos + FRAME.size : end]
            if zlib.crc32(payload) != crc:
                raise _bad(path, pos, last, written, end, "a record fails its checksum")
            try:
                record = pickle.loads(payload)
            except Exception as exc:  # the checksum matched: this is no torn write
                raise damaged(
                    path, pos, f"a record cannot be read ({type(exc).__name__}: {exc})"
                ) from None
            out.records.append((pos, record))
            pos = out.end = end
    except _Torn:
        out.torn = (pos, written - pos)
    finally:
        view.release()
    return out


class _Torn(Exception):
    """The frame at the current offset was cut short by a crash: the log ends there."""


def _bad(path: Path, pos: int, last: bool, written: int, extent: int, what: str) -> Exception:
    """A frame that does not check out: torn (the log's end) if ``extent`` covers the rest."""
    if last and written <= extent:
        return _Torn()
    return damaged(path, pos, what)


class LogWriter:
    """Appends frames to a new log file through a shared mapping.

    Not thread-safe: the journal calls it under its lock.  The file is
    created here (it must not exist) with mode 0600.
    """

    def __init__(self, path: Path, generation: int) -> None:
        self.path = path
        self.generation = generation
        self.fd = os.open(path, _CREATE, 0o600)
        try:
            os.fchmod(self.fd, 0o600)  # exactly, whatever the umask
            self.size = 0
            self.mm = self._map(CHUNK)
            HEADER.pack_into(self.mm, 0, LOG_MAGIC, FORMAT_VERSION, generation)
        except BaseException:
            os.close(self.fd)
            os.unlink(path)
            raise
        self.pos = HEADER.size

    def reserve(self, nbytes: int) -> None:
        """Grow the file so ``nbytes`` more fit; raises OSError (e.g. ENOSPC) if it cannot."""
        if self.pos + nbytes > self.size:
            mm = self._map(max(CHUNK, self.pos + nbytes - self.size + CHUNK // 2))
            self.mm.close()
            self.mm = mm

    def _map(self, extra: int) -> mmap.mmap:
        """Grow the file by ``extra`` bytes; map all of it."""
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(self.fd, self.size, extra)  # real blocks: no SIGBUS on a full disk
        else:  # pragma: no cover - macOS
            os.ftruncate(self.fd, self.size + extra)
        mm = mmap.mmap(self.fd, self.size + extra)
        self.size += extra
        return mm

    def append(self, payload: bytes) -> int:
        """Write one frame; return the offset just past it."""
        pos = self.pos
        end = pos + FRAME.size + len(payload)
        if end > self.size:
            self.reserve(end - pos)
        mm = self.mm
        FRAME.pack_into(mm, pos, len(payload), zlib.crc32(payload))  # header first: see above
        mm[pos + FRAME.size : end] = payload
        self.pos = end
        return end

    def close(self) -> None:
        """Unmap and close (what was written stays in the page cache); idempotent."""
        if not self.mm.closed:
            self.mm.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
