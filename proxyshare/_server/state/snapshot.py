"""The snapshot file: the whole state at the start of a generation.

::

    header   magic b"PXSSNAP\\n" | format version u32 | generation u32   (little-endian)
    frame    payload length u64 | crc32 of the payload u32 | payload
    payload  pickle of {"resources": [(name, kind, options, state), ...], "written": epoch s}

A snapshot is written to ``snapshot.<gen>.tmp``, fsynced, renamed over its
final name and the directory fsynced: a crash leaves the old snapshot or the
new one, whole, never a mix.  ``state`` is what the kind's ``dump_state()``
returned (see ``_server.resources``).
"""

from __future__ import annotations

import os
import pickle
import struct
import time
import zlib
from pathlib import Path
from typing import Any

from proxyshare._server.state.files import fsync_directory
from proxyshare._server.state.log import FORMAT_VERSION, HEADER, check_header, damaged

__all__ = ["SNAPSHOT_MAGIC", "read_snapshot", "write_snapshot"]

SNAPSHOT_MAGIC = b"PXSSNAP\n"
_FRAME = struct.Struct("<QI")
_FIX = "restore the state dir from a backup (a snapshot cannot be cut short); nothing was changed"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)

Entry = tuple[str, str, dict[str, Any], Any]  # name, kind, options, state


def write_snapshot(path: Path, generation: int, resources: list[Entry]) -> int:
    """Write the snapshot ``path`` atomically and durably; return its size in bytes."""
    payload = pickle.dumps(
        {"resources": resources, "written": time.time()}, pickle.HIGHEST_PROTOCOL
    )
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, _CREATE, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(HEADER.pack(SNAPSHOT_MAGIC, FORMAT_VERSION, generation))
            out.write(_FRAME.pack(len(payload), zlib.crc32(payload)))
            out.write(payload)
        os.fsync(fd)  # whatever the fsync policy: the old log is deleted on the strength of it
    except BaseException:
        os.close(fd)
        os.unlink(temporary)
        raise
    os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)
    return HEADER.size + _FRAME.size + len(payload)


def read_snapshot(path: Path, data: bytes, generation: int) -> list[Entry]:
    """The resources stored in the snapshot ``data`` (the bytes of ``path``)."""
    check_header(path, data, SNAPSHOT_MAGIC, generation)
    start = HEADER.size + _FRAME.size
    if len(data) < start:
        raise damaged(path, HEADER.size, "the snapshot is cut off after its header", _FIX)
    length, crc = _FRAME.unpack_from(data, HEADER.size)
    if start + length != len(data):
        raise damaged(
            path,
            HEADER.size,
            f"the snapshot says {length} bytes follow, and {len(data) - start} do",
            _FIX,
        )
    payload = memoryview(data)[start:]
    try:
        if zlib.crc32(payload) != crc:
            raise damaged(path, start, "the snapshot fails its checksum", _FIX)
        try:
            content = pickle.loads(payload)
            resources: list[Entry] = [
                (str(name), str(kind), dict(options), state)
                for name, kind, options, state in content["resources"]
            ]
        except Exception as exc:  # the checksum matched: written by something else
            what = f"the snapshot cannot be read ({type(exc).__name__}: {exc})"
            raise damaged(path, start, what, _FIX) from None
    finally:
        payload.release()
    return resources
