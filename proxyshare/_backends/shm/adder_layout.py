"""The adder's file: a header page, then one 64-byte slot per writing thread.

Shared by the server (which creates, describes and removes the file) and the
clients (which claim slots, add, sum and reset)::

       0  magic, token, kind b"adder", closed     (layout.HEADER, as every shm file)
      40  capacity  q   slots the file has room for (fixed when it is made)
      48  used      q   slots ever claimed: readers sum slots [0, used)
      56  gen       q   reset generation; base[gen & 1] is the live base
      64  base[0]  16s  signed 128-bit, little-endian
      80  base[1]  16s
     128  the ADMIN byte: its lock serialises resets and new slots
    4096  slot 0: value q, gone q, pid q, 40 bytes spare      (one cache line each)
    4160  slot 1 ...

    total = base[gen & 1] + sum(value of slot i for i < used)

**Single writer per slot, no lock to add.**  A thread owns a slot while it
holds an open-file-description lock (``F_OFD_SETLK``) on the slot's bytes,
through a descriptor of its own.  OFD locks belong to the open file
description, not to the process (POSIX record locks, ``lockf``, belong to the
process, so two threads of one process could own one slot, and closing *any*
descriptor of the file would drop all of them); ``flock`` cannot lock a byte
range.  The kernel drops the lock when the owner's last descriptor closes:
when its thread ends, or its process dies, SIGKILL included.  The slot is
then free for the next claimer, with its value in it: a dead writer's
counts stay in the total, and nothing has to be folded or moved.

**Reset loses no add.**  ``reset`` (under the ADMIN lock) reads every value
and sets ``base = -sum(values read)``; it writes no slot, so an add is either
in a value it read (it returns it) or made after (it stays in the total).
The new base goes into the spare copy, then ``gen`` flips in one 8-byte
store, so a resetter killed half-way leaves the old base whole.  Readers
never lock: they read ``gen``, the base and the values, and read again if
``gen`` moved meanwhile (a seqlock).

**Bounded.**  The file is sparse: only the pages of slots ever claimed use
memory, and slots are reused, so ``used`` grows to the largest number of
threads that held slots at one time, not with the number of processes that
ever added.  A claim beyond ``capacity`` raises ``ProxyShareError``.

Linux only: ``F_OFD_SETLK`` exists since Linux 3.15; macOS and the BSDs lack it.
"""

from __future__ import annotations

import errno
import mmap
import struct
import threading

from proxyshare._backends.shm.layout import HEADER, MAGIC, fcntl

__all__ = [
    "ADMIN",
    "CAPACITY",
    "MAX_CAPACITY",
    "SLOT",
    "SLOTS_AT",
    "SLOT_GONE",
    "SLOT_PID",
    "VALUE_MAX",
    "VALUE_MIN",
    "available",
    "capacity",
    "fence",
    "file_size",
    "free",
    "in_use",
    "init",
    "is_adder",
    "lock",
    "mark_gone",
    "reset",
    "set_used",
    "slot_at",
    "total",
    "try_lock",
    "unlock",
    "used",
]

CAPACITY = 16_384  # slots per adder: a 1 MiB sparse file, 64 bytes used per slot claimed
MAX_CAPACITY = 1 << 20
SLOT = 64  # one cache line: writers on different cores never share one
SLOTS_AT = 4096  # the slots start on a page of their own (on 4 KiB pages)
VALUE_MIN = -(1 << 63)
VALUE_MAX = (1 << 63) - 1

OFF_CAPACITY = 40
OFF_USED = 48
OFF_GEN = 56
OFF_BASE = 64  # two 16-byte copies
ADMIN = 128  # the byte whose lock serialises resets and new slots
SLOT_GONE = 8  # offset in a slot: set by the server when the adder is deleted
SLOT_PID = 16  # offset in a slot: the owner's pid (for people; ownership is the lock)

_Q = struct.Struct("@q")
_COUNTS = struct.Struct("@qqq")  # capacity, used, gen
# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (+ padding)
_FLOCK = struct.Struct("@hhqqi4x")

_OFD = hasattr(fcntl, "F_OFD_SETLK") if fcntl is not None else False

_fence_lock = threading.Lock()


def available() -> bool:
    """Whether this platform has open-file-description locks (Linux)."""
    return _OFD


def fence() -> None:
    """Order memory accesses around it on weakly ordered CPUs too.

    Python has no fence; a lock operation is one (an atomic instruction).
    Never waits, so a lock inherited locked through ``fork`` cannot hang a child.
    """
    if _fence_lock.acquire(False):
        _fence_lock.release()


# -- the file ----------------------------------------------------------------------


def file_size(slots: int) -> int:
    return SLOTS_AT + slots * SLOT


def slot_at(index: int) -> int:
    """Offset of slot ``index`` in the file."""
    return SLOTS_AT + index * SLOT


def init(mm: mmap.mmap, slots: int) -> None:
    """A fresh adder (the server, before anybody maps the file): no slot used, total 0."""
    _COUNTS.pack_into(mm, OFF_CAPACITY, slots, 0, 0)


def capacity(mm: mmap.mmap) -> int:
    return int(_Q.unpack_from(mm, OFF_CAPACITY)[0])


def used(mm: mmap.mmap) -> int:
    return int(_Q.unpack_from(mm, OFF_USED)[0])


def set_used(mm: mmap.mmap, count: int) -> None:
    """One more slot in use (under the ADMIN lock): readers sum it from now on."""
    _Q.pack_into(mm, OFF_USED, count)


def is_adder(mm: mmap.mmap) -> bool:
    magic, _token, kind, _closed = HEADER.unpack_from(mm, 0)
    slots = capacity(mm)
    return (
        magic.rstrip(b"\0") == MAGIC
        and kind.rstrip(b"\0") == b"adder"
        and 0 < slots <= MAX_CAPACITY
        and len(mm) >= file_size(slots)
    )


# -- reading and resetting ----------------------------------------------------------


def _base(mm: mmap.mmap, gen: int) -> int:
    at = OFF_BASE + 16 * (gen & 1)
    return int.from_bytes(mm[at : at + 16], "little", signed=True)


def _values(mm: mmap.mmap, count: int) -> int:
    if count <= 0:
        return 0
    # Views released on the way out: the server closes its mapping on delete.
    with (
        memoryview(mm) as view,
        view[SLOTS_AT : slot_at(count)] as raw,
        raw.cast("q") as words,
        words[:: SLOT // 8] as values,
    ):
        return sum(values)


def total(mm: mmap.mmap) -> int:
    """The adder's value: base + every slot's value, read without a lock (seqlock)."""
    while True:
        gen = _Q.unpack_from(mm, OFF_GEN)[0]
        fence()
        result = _base(mm, gen) + _values(mm, used(mm))
        fence()
        if _Q.unpack_from(mm, OFF_GEN)[0] == gen:
            return result


def reset(mm: mmap.mmap) -> int:
    """Zero the total and return what it was.  The caller holds the ADMIN lock."""
    gen = _Q.unpack_from(mm, OFF_GEN)[0]
    values = _values(mm, used(mm))
    removed = _base(mm, gen) + values
    spare = OFF_BASE + 16 * ((gen + 1) & 1)
    mm[spare : spare + 16] = (-values).to_bytes(16, "little", signed=True)
    fence()
    _Q.pack_into(mm, OFF_GEN, gen + 1)  # one store: the new base is live
    return removed


def mark_gone(mm: mmap.mmap) -> None:
    """Deleted: every slot's owner sees it at its next add (the header is already closed)."""
    fence()  # the closed header first, then read how many slots there are
    for index in range(used(mm)):
        _Q.pack_into(mm, slot_at(index) + SLOT_GONE, 1)


# -- slot ownership: open-file-description locks on byte ranges ------------------------


def _flock(kind: int, start: int, length: int) -> bytes:
    return _FLOCK.pack(kind, 0, start, length, 0)  # SEEK_SET; l_pid must be 0 for OFD locks


def try_lock(fd: int, start: int, length: int = SLOT) -> bool:
    """Take ``[start, start + length)`` for this descriptor if nobody holds it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, start, length))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def lock(fd: int, start: int, length: int = 1) -> None:
    """Take ``[start, start + length)``, waiting for its holder (the ADMIN byte)."""
    fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _flock(fcntl.F_WRLCK, start, length))


def unlock(fd: int, start: int, length: int = 1) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, start, length))


def free(fd: int, start: int, length: int = SLOT) -> bool:
    """Whether no other open file description holds a lock on the range (nothing is taken)."""
    answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK, start, length))
    return bool(_FLOCK.unpack(answer)[0] == fcntl.F_UNLCK)


def in_use(mm: mmap.mmap, fd: int) -> int:
    """How many slots have a live owner (``fd`` must hold no slot lock itself)."""
    return sum(not free(fd, slot_at(index)) for index in range(used(mm)))
