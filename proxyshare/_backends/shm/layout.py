"""The shared-memory file format, shared by the server (which creates files)
and the clients (which map them).

One page per resource, native byte order and alignment, so 8-byte fields are
single stores::

     0  magic   8s   b"PSHMv1"
     8  token  16s   random; the pickled object must match it
    24  kind    8s   b"counter" / b"lock"
    32  closed  q    1 once the server deleted the resource
    40  counter: value q
    40  lock:    seq Q (odd while a record is being written), pid q (0 = free),
                since d, host 64s

Why ``flock``: it locks an *open file description*, so a descriptor opened by
each thread makes threads of one process exclude each other, and the kernel
drops the lock the moment the last descriptor of its holder closes (process
killed included).  POSIX record locks (``lockf``, ``F_SETLK``) belong to the
whole process instead.  Linux's open-file-description locks have the right
semantics too, but measured here a lock/unlock pair costs ~0.9 µs with
``flock`` against ~1.3 µs with ``F_OFD_SETLKW``.
"""

from __future__ import annotations

import mmap
import socket
import struct
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the fast path is refused where it is opened
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FILE_SIZE",
    "HEADER",
    "HOST",
    "MAGIC",
    "OFF_CLOSED",
    "OFF_PID",
    "OFF_RECORD",
    "OFF_VALUE",
    "PID",
    "RECORD",
    "SEQ",
    "STATE",
    "VALUE",
    "fcntl",
    "probe",
    "read_owner",
]

FILE_SIZE = mmap.PAGESIZE
MAGIC = b"PSHMv1"
HEADER = struct.Struct("@8s16s8sq")  # magic, token, kind, closed
CLOSED = struct.Struct("@q")
STATE = struct.Struct("@qq")  # (closed, value) or (closed, seq)
VALUE = struct.Struct("@q")
RECORD = struct.Struct("@Qqd64s")  # seq, pid, since, host
SEQ = struct.Struct("@Q")
PID = struct.Struct("@q")
OFF_CLOSED = 32
OFF_VALUE = 40
OFF_RECORD = 40
OFF_PID = 48

HOST = socket.gethostname()


def read_owner(mm: mmap.mmap) -> dict[str, Any] | None:
    """The lock's holder record, read consistently against a concurrent writer (seqlock)."""
    for _ in range(1000):
        seq, pid, since, host = RECORD.unpack_from(mm, OFF_RECORD)
        if not seq & 1 and SEQ.unpack_from(mm, OFF_RECORD)[0] == seq:
            break
    if not pid:
        return None
    return {"pid": pid, "host": host.rstrip(b"\0").decode("utf-8", "replace"), "since": since}


def probe(mm: mmap.mmap, fd: int) -> bool:
    """Whether the lock is held by somebody else; clears a dead holder's record.

    Called only when the record names a holder, so a free lock is never
    touched.  If we can take it, its holder died: we own it for a moment,
    which makes clearing the record safe.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    try:
        PID.pack_into(mm, OFF_PID, 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    return False
