"""The served backend for asyncio: a pool of connections, and locks owned by tasks.

The server ties locks and semaphore permits to a session (one connection),
and the asyncio client promises that they belong to the *task* that acquired
them.  So each call checks a connection out of this manager's pool, and a
task that comes out of a call holding something keeps that connection
*pinned* until it holds nothing again::

    task A ── counter.increment() ──▶ an idle connection, back to the pool after
    task B ── lock.acquire() ───────▶ connection 3, pinned to B while B holds the lock
    task B ── counter.get() ────────▶ connection 3 (B's own, whatever it calls)
    task C ── lock.release() ───────▶ another connection: NotOwnerError, from the server

Everything else then follows from the sync API for free: another task's
release is refused by the server, waiters are served first come first
served, and a task that ends still holding something has its connection
closed, which makes the server release it at once, as for a dead thread.

**Sharing.**  Calls that cannot wait share at most ``max_connections``
connections.  A call that may wait (an acquire, a blocking get) and a task
that holds something always get their own: making them queue for a
connection could deadlock (a waiter blocking the call that would wake it).

**Batching.**  While other calls are in flight, counter and dict operations
that tasks make in one turn of the event loop ride together: the first one
starts a *batch*, the end of the turn closes it, and a small task takes it to
a shared connection like any caller and sends it as one pipeline request
(``PIPELINE``: one round trip, applied in order), then hands each caller its
own result or error.  A lone caller (nothing else in flight) never joins a
batch, so batching costs it nothing; under load it cuts the round trips,
system calls and wake-ups per operation on both sides, which on a busy
machine is what bounds throughput.
Only operations whose results are plain values (ints, bools, None) and that
nothing undoes are batched, so one caller's failure never spoils another's
result (see :data:`BATCHED`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from proxyshare import _protocol as P
from proxyshare._address import Address, format_address
from proxyshare._errors import (
    NotOwnerError,
    PipelineFailure,
    ProxyShareError,
    RemoteTraceback,
    ResourceNotFoundError,
    ServerUnavailableError,
)
from proxyshare._protocol import Op
from proxyshare.aio._connection import CALL_TIMEOUT, Connection, open_connection
from proxyshare.aio._loop import closed_error, running_loop

if TYPE_CHECKING:
    from proxyshare._tls import TLSFiles

__all__ = ["BATCHED", "DEFAULT_MAX_CONNECTIONS", "MAX_BATCH", "ServedTransport"]

R = TypeVar("R")
logger = logging.getLogger("proxyshare")

DEFAULT_MAX_CONNECTIONS = 8
MAX_BATCH = 256  # operations per pipeline request: keeps each one short on the server

# The operations that give a session something to hold, and those that give it back.
_TAKES = frozenset({P.LOCK_ACQUIRE.code, P.SEM_ACQUIRE.code})
_GIVES = frozenset({P.LOCK_RELEASE.code, P.SEM_RELEASE.code})

#: Operations that may ride in a batch: they never wait, hold nothing, are not
#: undone by a CANCEL, and return plain values (so no reply can fail to unpickle).
BATCHED = frozenset(
    op.code
    for op in (
        P.COUNTER_GET,
        P.COUNTER_ADD,
        P.COUNTER_SUB,
        P.COUNTER_SET,
        P.COUNTER_CAS,
        P.COUNTER_SWAP,
        P.DICT_SET,
        P.DICT_DEL,
        P.DICT_LEN,
        P.DICT_CONTAINS,
        P.DICT_UPDATE,
        P.DICT_CLEAR,
        P.DICT_INCR,
        P.DICT_CAS,
    )
)

_Entry = tuple[tuple[Any, ...], "asyncio.Future[Any]"]
_ALONE: Any = object()  # a batch's answer to its only member: send it yourself


class ServedTransport:
    """An ``AsyncTransport`` to one proxyshare server, bound to one event loop."""

    def __init__(
        self,
        address: Address,
        authkey: bytes,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        tls: TLSFiles | None = None,
    ) -> None:
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"max_connections must be an int, not {max_connections!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, not {max_connections}")
        self.address = address
        self._authkey = authkey
        self._tls = tls  # TLS files, for a tls:// address
        self._max = max_connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[Connection] = []  # most recently used last
        self._busy = 0  # shared connections in use (or being opened) by calls that cannot wait
        self._queue: deque[asyncio.Future[Connection | None]] = deque()  # waiting for one
        self._pinned: dict[asyncio.Task[Any], Connection] = {}
        self._all: set[Connection] = set()
        self._batch: list[_Entry] | None = None  # gathering, until its sender gets a connection
        self._senders: set[asyncio.Task[None]] = set()
        self._closed = False
        self._labels = itertools.count(1)  # sessions are labelled "asyncio #n" in status

    def __repr__(self) -> str:
        return f"<proxyshare.aio transport {self.where()}>"

    def where(self) -> str:
        return format_address(self.address)

    # -- the call path --------------------------------------------------------------------

    async def call(self, op: Op[R], name: str | None, /, *args: Any) -> R:
        """Run ``op`` on the resource ``name`` on a connection this task may use."""
        request = (op.code, name, *args)
        self._check_loop()
        task = asyncio.current_task()
        if task is None:
            raise ProxyShareError("proxyshare.aio calls must be awaited in an asyncio task")
        conn = self._pinned.get(task)
        if conn is None:
            if op.code in BATCHED and (self._busy or self._batch is not None):
                result: R = await self._batched(request)
                if result is not _ALONE:
                    return result
            may_wait = op.blocks and not op.never_waits(request)
            conn = await self._checkout(shared=not may_wait)
            limit = op.wait_limit(request, CALL_TIMEOUT) if may_wait else CALL_TIMEOUT
        else:
            limit = op.wait_limit(request, CALL_TIMEOUT) if op.blocks else CALL_TIMEOUT
        try:
            result = await conn.call(request, limit)
        except (NotOwnerError, ResourceNotFoundError):
            if op.code in _GIVES:  # nothing of it is held any more (a lease ran out, deleted)
                conn.held.pop((op.kind, name or ""), None)
            self._after(conn, task)
            raise
        except BaseException:
            self._after(conn, task)
            raise
        code = op.code
        if code in _TAKES:
            if result is True:
                key = (op.kind, name or "")
                conn.held[key] = conn.held.get(key, 0) + 1
        elif code in _GIVES:
            key = (op.kind, name or "")
            left = conn.held.get(key, 0) - 1
            if left > 0:
                conn.held[key] = left
            else:
                conn.held.pop(key, None)
        self._after(conn, task)
        return result

    def _after(self, conn: Connection, task: asyncio.Task[Any]) -> None:
        """After a call: pin ``conn`` to ``task`` if it holds something, else give it back."""
        pinned = self._pinned.get(task)
        if conn.held and not conn.closed:
            if pinned is None:
                self._unshare(conn)
                self._pinned[task] = conn
                task.add_done_callback(self._task_done)
            return
        if pinned is conn:
            del self._pinned[task]
            task.remove_done_callback(self._task_done)
        self._release(conn)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        """A task ended holding something: close its connection, so the server releases it."""
        conn = self._pinned.pop(task, None)
        if conn is None:
            return
        held = ", ".join(f"{kind} {name!r}" for kind, name in conn.held)
        logger.warning(
            "task %s ended holding %s: released (locks and permits belong to the task that "
            "acquired them; release them before it ends)",
            task.get_name(),
            held,
        )
        conn.held.clear()
        conn.close()
        self._release(conn)

    # -- batches --------------------------------------------------------------------------

    async def _batched(self, request: tuple[Any, ...]) -> Any:
        """Join this turn of the event loop's batch; await this op's result.

        Cancelled before the batch is sent, the op is never sent; after, it is
        applied, as a cancelled call that already reached the server is.
        """
        loop = self._loop_now()
        future: asyncio.Future[Any] = loop.create_future()
        batch = self._batch
        if batch is None:
            batch = self._batch = []
            loop.call_soon(self._flush, batch)  # after every task that runs in this turn
        batch.append((request, future))
        return await future

    def _flush(self, batch: list[_Entry]) -> None:
        """End of the turn: the batch is complete; a sender takes it to a connection.

        A batch of one is no batch: its caller sends it as usual.
        """
        if self._batch is batch:
            self._batch = None
        entries = [entry for entry in batch if not entry[1].done()]
        if self._closed:
            _fail(entries, closed_error())
        elif len(entries) == 1:
            entries[0][1].set_result(_ALONE)
        elif entries:
            sender = self._loop_now().create_task(self._send_batch(entries))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)

    async def _send_batch(self, batch: list[_Entry]) -> None:
        """Wait for a shared connection, then send ``batch`` on it."""
        try:
            conn = await self._checkout(shared=True)
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        try:
            await self._run_batch(conn, [e for e in batch if not e[1].done()])
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            # Still busy while the callers just woken run: their next operations
            # join the next batch instead of each taking a connection of its own.
            self._loop_now().call_soon(self._release, conn)

    async def _run_batch(self, conn: Connection, entries: list[_Entry]) -> None:
        while entries:
            chunk, entries = entries[:MAX_BATCH], entries[MAX_BATCH:]
            requests = [request for request, _future in chunk]
            try:
                results = await conn.call((P.PIPELINE.code, None, requests), CALL_TIMEOUT)
            except PipelineFailure as failure:
                # Those before it were applied, it failed, those after it did not run.
                done = len(failure.results)
                _deliver(chunk[:done], failure.results)
                if failure.index >= done:
                    error = failure.error
                    if error.__cause__ is None and isinstance(failure.__cause__, RemoteTraceback):
                        error.__cause__ = failure.__cause__
                    _fail(chunk[failure.index : failure.index + 1], error)
                    done = failure.index + 1
                entries = [e for e in chunk[done:] if not e[1].done()] + entries
                continue
            except ServerUnavailableError:
                raise
            except Exception:
                # Refused whole before anything ran (one request cannot be pickled,
                # or unpickled by the server): each op alone gets its own outcome.
                for request, future in chunk:
                    if future.done():
                        continue
                    try:
                        future.set_result(await conn.call(request, CALL_TIMEOUT))
                    except ServerUnavailableError:
                        raise
                    except Exception as exc:
                        future.set_exception(exc)
                continue
            _deliver(chunk, results)

    # -- the pool -------------------------------------------------------------------------

    async def _checkout(self, shared: bool) -> Connection:
        """A connection for one call: idle, new, or (shared, at the cap) the next one freed."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                if shared:
                    self._busy += 1
                    conn.shared = True
                return conn
            self._forget(conn)
        if not shared:
            return await self._connect()
        if self._busy < self._max:
            self._busy += 1
            return await self._connect_shared()
        waiter: asyncio.Future[Connection | None] = self._loop_now().create_future()
        self._queue.append(waiter)
        try:
            handed = await waiter  # a connection, or None: a slot to open one in
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                got = waiter.result()
                if got is not None:
                    self._release(got)  # handed over as this task was cancelled: pass it on
                else:
                    self._busy -= 1
                    self._wake_next()
            raise
        if handed is None:
            return await self._connect_shared()
        return handed

    async def _connect_shared(self) -> Connection:
        """Open a connection in a shared slot already counted in ``_busy``."""
        try:
            conn = await self._connect()
        except BaseException:
            self._busy -= 1
            self._wake_next()
            raise
        conn.shared = True
        return conn

    async def _connect(self) -> Connection:
        if self._closed:
            raise closed_error()
        conn = await open_connection(
            self.address,
            self._authkey,
            tls=self._tls,
            label=f"asyncio #{next(self._labels)}",
        )
        if self.closed:  # aclose() ran while this one was being opened
            conn.close()
            raise closed_error()
        self._all.add(conn)
        return conn

    def _unshare(self, conn: Connection) -> None:
        if conn.shared:
            conn.shared = False
            self._busy -= 1

    def _release(self, conn: Connection) -> None:
        """A call is done with ``conn``: hand it to the next waiter, or keep it idle."""
        self._unshare(conn)
        if conn.closed or self._closed:
            conn.close()
            self._forget(conn)
            self._wake_next()
            return
        queue = self._queue
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                self._busy += 1
                conn.shared = True
                waiter.set_result(conn)
                return
        if len(self._idle) >= self._max:
            conn.close()  # opened for a wait beyond what the pool keeps
            self._forget(conn)
            return
        self._idle.append(conn)

    def _wake_next(self) -> None:
        """A shared slot may be free: the first task waiting for one opens its own."""
        queue = self._queue
        while queue and self._busy < self._max:
            waiter = queue.popleft()
            if not waiter.done():
                self._busy += 1
                waiter.set_result(None)
                return

    def _forget(self, conn: Connection) -> None:
        self._all.discard(conn)

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _check_loop(self) -> None:
        if self._closed:
            raise closed_error()
        self._loop = running_loop(self._loop)

    # -- opening and closing --------------------------------------------------------------

    async def start(self) -> None:
        """Open the first connection now, so a wrong address or key fails at connect."""
        self._check_loop()
        self._release(await self._connect())

    async def aclose(self) -> None:
        """Close every connection; the server releases whatever they held."""
        if self._closed:
            return
        self._closed = True
        error = closed_error()
        for conn in list(self._all):
            conn.close(error)
        self._all.clear()
        self._idle.clear()
        for task in list(self._pinned):
            task.remove_done_callback(self._task_done)
        self._pinned.clear()
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self._batch is not None:
            _fail(self._batch, error)
            self._batch = None
        for sender in list(self._senders):
            sender.cancel()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    @property
    def closed(self) -> bool:
        return self._closed

    def connections(self) -> int:
        """Connections open now (idle, in use and pinned)."""
        return len(self._all)


def _deliver(entries: list[_Entry], results: list[Any]) -> None:
    for (_request, future), result in zip(entries, results, strict=True):
        if not future.done():
            future.set_result(result)


def _fail(entries: list[_Entry], error: BaseException) -> None:
    if not isinstance(error, Exception):  # cancelled: the callers did not cancel themselves
        error = closed_error() if isinstance(error, asyncio.CancelledError) else error
    for _request, future in entries:
        if not future.done():
            future.set_exception(error)
