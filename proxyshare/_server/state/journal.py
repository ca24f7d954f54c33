"""The live state dir: every change recorded before its reply, synced, compacted.

How a change is recorded (``ShareServer.dispatch``)::

    payload = pickle((session id, *request))     before: an argument that will not
                                                  pickle changes nothing
    with resource.mutex:                          the order of the log is the order
        result = resource.<method>(session, ...)  in which changes were applied, even
        journal.append(payload)                   when a worker and the reactor race
    reply(result)                                 after: nothing acknowledged is lost

Why the request and not the resulting state: the request is already at
hand (a counter's increment costs one small pickle, not a copy of the
value), the resource methods are deterministic given the state, and replay
runs the very code that ran live (see ``replay``).  Failed requests are not
logged.  A queue's acknowledgments and requeues, which no request carries,
are recorded by the queue through :meth:`Journal.record`.

The fsync policies (``--fsync``), as Redis's appendfsync:

    always    fdatasync before every reply: a power loss loses nothing acknowledged
    everysec  a thread fdatasyncs once a second: a power loss loses at most about
              the last second (default)
    no        the kernel writes back when it likes (typically within 30 s)

Whatever the policy, the server being killed (SIGKILL, a crash) loses nothing
acknowledged: a record is in the kernel's page cache before its reply.

Compaction: once the log outgrows ``max(compact_bytes, 2 x the snapshot)``,
a thread starts generation ``g + 1``: it creates ``log.<g+1>``, then, holding
the registry lock and every resource mutex (in the pipelines' order), switches
appends to it and copies each resource's state (``dump_state``, a shallow
copy: the pause is that long); then, with no lock held, writes
``snapshot.<g+1>`` atomically and deletes generation ``g``'s files.  A crash
at any step leaves a chain that recovery reads whole.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from proxyshare import _protocol as P
from proxyshare import _rules as rules
from proxyshare._errors import ProxyShareError
from proxyshare._server.resources.base import Resource, SessionLike, mutex_order
from proxyshare._server.state.errors import StateError, StateWriteError
from proxyshare._server.state.files import (
    fsync_directory,
    open_state_dir,
    remove_quietly,
)
from proxyshare._server.state.log import FORMAT_VERSION, FRAME, LogWriter
from proxyshare._server.state.replay import Recovery, recover
from proxyshare._server.state.snapshot import write_snapshot

__all__ = ["COMPACT_BYTES", "Journal", "Registry"]

logger = logging.getLogger("proxyshare.state")

COMPACT_BYTES = 8 << 20  # the log is compacted once it holds this much (or 2x the snapshot)
SYNC_SECONDS = 1.0  # the everysec policy's period
_dumps = pickle.dumps
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_fdatasync = getattr(os, "fdatasync", os.fsync)


class Registry(Protocol):
    """What the journal needs of the server: its resources and the lock that guards them."""

    resources: dict[str, Resource]
    registry_lock: threading.Lock


class Journal:
    """One server's state dir, from recovery to close.

    ``Journal(path, fsync)`` checks and locks the directory and rebuilds the
    state it holds (``restored``), writing nothing; ``start(registry)``
    begins a new generation and the background threads; ``close()`` syncs
    and unlocks.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fsync: str = "everysec",
        compact_bytes: int | None = None,
    ) -> None:
        self.fsync = rules.check_fsync(fsync)
        self.compact_bytes = compact_bytes or COMPACT_BYTES
        self.dir = open_state_dir(path)
        try:
            self.recovery: Recovery | None = recover(self.dir)
        except OSError as exc:  # not damage: a file that cannot be read at all
            self.dir.close()
            raise StateError(
                f"cannot read the state dir {self.dir.path}: {exc}; nothing was changed"
            ) from None
        except BaseException:
            self.dir.close()
            raise
        self.report = self.recovery.report
        self._last_generation = self.recovery.next_generation - 1  # on disk before this run
        self.failed: StateError | None = None
        self.compactions = 0
        self.snapshot_bytes = 0
        self._lock = threading.Lock()
        self._writer: LogWriter | None = None
        self._registry: Registry | None = None
        self._dirty = False
        self._closed = False
        self._compact_at = self.compact_bytes
        self._compacting = False
        self._wake = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has begun: no record is taken any more."""
        return self._closed

    @property
    def restored(self) -> dict[str, Resource]:
        """The resources the state dir held (until ``start`` hands them over)."""
        return self.recovery.resources if self.recovery is not None else {}

    # -- lifecycle -------------------------------------------------------------------

    def start(self, registry: Registry) -> None:
        """Serve ``registry`` (which holds ``restored`` by now): write a new generation.

        The restored state, with in-flight queue items back in their queues,
        becomes the new snapshot, so this run's log starts from exactly it.
        """
        self._registry = registry
        for resource in registry.resources.values():
            resource.journal = self
        recovery, self.recovery = self.recovery, None
        try:
            self.dir.claim()
            self.compact()
        except OSError as exc:
            raise StateWriteError(
                f"cannot write the state dir {self.dir.path}: {exc.strerror or exc}"
            ) from None
        if recovery is not None:
            for path in recovery.listing.temporary:
                remove_quietly(path)
        if self.fsync == "everysec":
            self._spawn(self._sync_loop, "proxyshare-fsync")
        self._spawn(self._compact_loop, "proxyshare-compact")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def close(self) -> None:
        """No more records; sync the log, release the directory.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(30)  # a compaction under way finishes its snapshot
        with self._lock:
            writer, self._writer = self._writer, None
        try:
            if writer is not None:
                if self.failed is None and self.fsync != "no":
                    _fdatasync(writer.fd)
                writer.close()
        finally:
            self.dir.close()

    # -- recording ----------------------------------------------------------------

    def prepare(self, session: SessionLike, request: tuple[Any, ...]) -> bytes:
        """The record of ``request``, made before it is applied (nothing changes if this fails)."""
        if self.failed is not None:
            raise StateWriteError(str(self.failed))
        try:
            payload = _dumps((session.id, *request), _PROTOCOL)
        except Exception as exc:
            raise ProxyShareError(
                f"this change cannot be recorded in the state dir: its arguments do not pickle "
                f"in the server ({type(exc).__name__}: {exc}); nothing was changed"
            ) from exc
        writer = self._writer
        if writer is not None and writer.pos + FRAME.size + len(payload) > writer.size:
            self._reserve(FRAME.size + len(payload))
        return payload

    def _reserve(self, nbytes: int) -> None:
        with self._lock:
            if self._writer is not None:
                try:
                    self._writer.reserve(nbytes)
                except OSError as exc:
                    raise self._fail(exc) from None

    def append(self, payload: bytes) -> None:
        """Write one record (made by ``prepare``); the caller holds the mutex of what changed."""
        with self._lock:
            writer = self._writer
            if writer is None or self.failed is not None:
                raise StateWriteError(
                    str(self.failed) if self.failed is not None else "the server is stopping"
                )
            try:
                end = writer.append(payload)
                if self.fsync == "always":
                    _fdatasync(writer.fd)
            except OSError as exc:
                raise self._fail(exc) from None
            self._dirty = True
            if end > self._compact_at and not self._compacting:
                self._compacting = True
                with self._wake:
                    self._wake.notify_all()

    def record(self, resource: Resource, session: SessionLike, method: str) -> None:
        """Log a change the server made on its own (a queue's ack or requeue).

        Called under ``resource.mutex``.  Never raises: a failure is logged
        once and makes every later change fail (see ``_fail``).
        """
        if resource.removed or self.failed is not None or self._writer is None:
            return
        try:
            self.append(_dumps((session.id, method, resource.name), _PROTOCOL))
        except StateWriteError:
            return  # logged by _fail; the server refuses every later change

    def record_open(self, session: SessionLike, name: str, kind: str, options: Any) -> None:
        self.append(self.prepare(session, (P.OPEN.code, name, kind, options)))

    def record_delete(self, session: SessionLike, name: str) -> None:
        self.append(self.prepare(session, (P.DELETE.code, name)))

    def _fail(self, exc: OSError) -> StateWriteError:
        """The log cannot be written: refuse every later change, so it stays a true prefix."""
        if self.failed is None:
            self.failed = StateWriteError(
                f"the state dir {self.dir.path} cannot be written ({exc.strerror or exc}): "
                "the server refuses changes it cannot record; free space or fix the disk, "
                "then restart it (what was recorded is kept)"
            )
            logger.error("%s", self.failed)
        return StateWriteError(str(self.failed))

    # -- syncing -----------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait(SYNC_SECONDS)
            if self._closed:
                return
            self.sync()

    def sync(self) -> None:
        """fdatasync what was written since the last sync (on a dup: appends go on)."""
        with self._lock:
            if not self._dirty or self._writer is None:
                return
            fd = os.dup(self._writer.fd)
            self._dirty = False
        try:
            _fdatasync(fd)
        except OSError as exc:
            with self._lock:
                self._fail(exc)
        finally:
            os.close(fd)

    # -- compaction ----------------------------------------------------------------------

    def _compact_loop(self) -> None:
        while True:
            with self._wake:
                while not self._compacting and not self._closed:
                    self._wake.wait()
            if self._closed:
                return
            try:
                self.compact()
            except Exception:  # the chain on disk is whole; try again after more growth
                if self.closed:
                    return  # the server stopped while it compacted: nothing was lost
                logger.exception("compacting the state dir %s failed", self.dir.path)
                with self._lock:
                    self._compact_at += self.compact_bytes
                    self._compacting = False

    def compact(self) -> None:
        """Start a new generation: a new log, a snapshot, the old files removed."""
        registry = self._registry
        if registry is None:
            raise ProxyShareError("the journal has not been started")
        old = self._writer
        generation = (old.generation if old is not None else self._last_generation) + 1
        new = LogWriter(self.dir.file("log", generation), generation)
        try:
            fsync_directory(self.dir.path)
            paused = time.perf_counter()
            with registry.registry_lock:
                resources = sorted(
                    (r for r in registry.resources.values() if r.durable),
                    key=lambda r: mutex_order(r.name),
                )
                for resource in resources:
                    resource.mutex.acquire()
                try:
                    with self._lock:
                        if self._closed:
                            raise ProxyShareError("the server is stopping")
                        self._writer = new
                        self._dirty = True
                    entries = [(r.name, r.kind, r.options(), r.dump_state()) for r in resources]
                finally:
                    for resource in reversed(resources):
                        resource.mutex.release()
            paused = time.perf_counter() - paused
        except BaseException:
            if self._writer is not new:
                new.close()
                remove_quietly(new.path)
            raise
        if old is not None:
            try:
                if self.fsync != "no":
                    _fdatasync(old.fd)  # the new log's records follow these
            finally:
                old.close()
        size = write_snapshot(self.dir.file("snapshot", generation), generation, entries)
        self._remove_before(generation)
        with self._lock:
            self.snapshot_bytes = size
            self.compactions += 1
            self._compact_at = max(self.compact_bytes, 2 * size)
            self._compacting = False
        logger.debug(
            "state dir %s: generation %d, snapshot %d bytes, %d resource(s), paused %.1f ms",
            self.dir.path,
            generation,
            size,
            len(entries),
            paused * 1e3,
        )

    def _remove_before(self, generation: int) -> None:
        listing = self.dir.listing()
        old: Iterable[tuple[int, Path]] = [*listing.snapshots.items(), *listing.logs.items()]
        for number, path in old:
            if number < generation:
                remove_quietly(path)

    # -- status ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What ``status`` shows under ``server.state``."""
        with self._lock:
            writer = self._writer
            return {
                "dir": str(self.dir.path),
                "fsync": self.fsync,
                "format": FORMAT_VERSION,
                "generation": writer.generation if writer is not None else None,
                "log_bytes": writer.pos if writer is not None else None,
                "snapshot_bytes": self.snapshot_bytes,
                "compactions": self.compactions,
                "failed": None if self.failed is None else str(self.failed),
                "restored": self.report,
            }
