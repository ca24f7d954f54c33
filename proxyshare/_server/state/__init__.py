"""Durable state: a state dir that keeps every resource across restarts.

    files      the directory: private to its user, locked by one server, file names
    log        the log file: versioned header, length + CRC32 frames, torn-tail rule
    snapshot   the snapshot file, written atomically
    replay     recovery: snapshot + logs -> resources (reads only; damage refuses)
    journal    the live side: record before reply, fsync policy, compaction, close
    errors     why a state dir cannot be used

What each kind keeps lives next to the kind (``dump_state``/``load_state``
in ``_server.resources``): counters, dicts, queues (items, in-flight items,
closed), events; locks, semaphores and barriers keep their definition and
come back free.  The shared-memory kinds are not kept.
"""

from __future__ import annotations

from proxyshare._server.state.errors import (
    StateDamaged,
    StateDirRefused,
    StateError,
    StateInUse,
    StateWriteError,
)
from proxyshare._server.state.journal import COMPACT_BYTES, Journal
from proxyshare._server.state.log import FORMAT_VERSION

__all__ = [
    "COMPACT_BYTES",
    "FORMAT_VERSION",
    "Journal",
    "StateDamaged",
    "StateDirRefused",
    "StateError",
    "StateInUse",
    "StateWriteError",
]
