"""The Redis backend for asyncio: the sans-IO Redis operations, driven on the event loop.

    aio.connect("redis://host:6379/0") ──▶ AsyncManager(RedisAsyncTransport)
    await hits.increment()
      └─ RedisAsyncTransport.call(COUNTER_ADD, "hits", 1)
           └─ ops.counter.add(transport, "hits", 1)   the generator the blocking driver runs
                yields Eval(ADD, ...) ──▶ EVALSHA on a pooled redis.asyncio connection
                is sent the reply, returns 42

Everything but the I/O is the blocking backend's (``proxyshare._backends.redis``):
the operations and their Lua scripts, ``translate`` (the one place where
redis-py errors become proxyshare errors) and the lease renewer.  The owner
of a lock or permit is the *task* (:class:`TaskOwner`): another task's
``release()`` is refused, and a lease whose task has ended, or whose manager
was closed, is given back by the renewer thread within ``RENEWER_TICK``.
The renewer keeps using the blocking transport, on its own thread.

**Cancellation.**  A command already sent may already have run, so it is
never abandoned: the cancelled task waits for its reply (a ``BLPOP`` is cut
short with ``CLIENT UNBLOCK`` from another connection), lets the operation
finish what it can do without waiting, then undoes the result: a lock or
permit it got is released, items a get took go back to the front of the
queue.  Then ``CancelledError`` propagates.  An event wait (pub/sub) has
nothing to undo and stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from proxyshare import _protocol as P
from proxyshare._backends.redis.leases import Owner
from proxyshare._backends.redis.ops import IMPLEMENTATIONS, UNSUPPORTED
from proxyshare._backends.redis.ops.queue import unget
from proxyshare._backends.redis.sansio import (
    BlockingPop,
    Call,
    Command,
    Eval,
    NextMessage,
    Run,
    Subscribe,
)
from proxyshare._backends.redis.transport import (
    DEFAULT_PREFIX,
    SOCKET_TIMEOUT,
    RedisTransport,
    _caught,
    _redis,
    client_options,
    translate,
)
from proxyshare._errors import ProxyShareError
from proxyshare._protocol import Op
from proxyshare.aio._loop import closed_error, running_loop

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.connection import AbstractConnection

__all__ = ["RedisAsyncTransport", "TaskOwner"]

R = TypeVar("R")
logger = logging.getLogger("proxyshare.redis")

_WAITS = (BlockingPop, Subscribe, NextMessage)
_ACQUIRED = {P.LOCK_ACQUIRE.code: P.LOCK_RELEASE, P.SEM_ACQUIRE.code: P.SEM_RELEASE}


class TaskOwner(Owner):
    """An asyncio task of one manager: what that manager's callers are."""

    __slots__ = ("__weakref__", "task", "transport")

    def __init__(self, task: asyncio.Task[Any], transport: RedisAsyncTransport) -> None:
        self.task = task
        self.transport = transport

    @property
    def ident(self) -> int:
        return id(self.task)

    def alive(self) -> bool:
        """False once the task has ended, or its manager was closed (read by the renewer)."""
        return not self.task.done() and not self.transport.closed


class _Blocked:
    """A ``BLPOP`` in flight: its connection's client id, for ``CLIENT UNBLOCK``."""

    __slots__ = ("client_id", "known")

    def __init__(self) -> None:
        self.client_id: int | None = None
        self.known = asyncio.Event()


class RedisAsyncTransport:
    """An ``AsyncTransport`` to Redis; implements ``ops.base.Context`` for the operations."""

    permits_are_leases = True  # mgr.semaphore(lease=...) applies

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self._blocking = RedisTransport(url, prefix)  # checks the URL; renews leases
        self.prefix = prefix
        self.registry = prefix + "registry"
        self.closed = False
        self._client: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owners: weakref.WeakKeyDictionary[asyncio.Task[Any], TaskOwner] = (
            weakref.WeakKeyDictionary()
        )
        self._unblocking: set[asyncio.Future[None]] = set()

    @property
    def address(self) -> str:
        """The URL without its password."""
        return self._blocking.address

    def where(self) -> str:
        return self._blocking.where()

    def __repr__(self) -> str:
        return f"<proxyshare.aio Redis transport {self.where()}>"

    # -- what the operations ask of whoever runs them (ops.base.Context) --

    def owner(self) -> TaskOwner:
        """The calling task (one object per task, so ``is`` compares)."""
        task = asyncio.current_task()
        if task is None:
            raise ProxyShareError("proxyshare.aio calls must be awaited in an asyncio task")
        owner = self._owners.get(task)
        if owner is None:
            owner = self._owners[task] = TaskOwner(task, self)
        return owner

    def lease_runner(self) -> RedisTransport:
        return self._blocking

    # -- opening and closing --

    async def start(self) -> None:
        """Make the client on this loop and reach Redis, so a wrong URL or password fails now."""
        self._client_here()
        await self.call(P.PING, None, None)

    async def aclose(self) -> None:
        """Close the connections; leases this manager's tasks hold are given back by the
        renewer (within ``RENEWER_TICK``)."""
        self.closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _client_here(self) -> Redis:
        if self.closed:
            raise closed_error()
        self._loop = running_loop(self._loop)
        client = self._client
        if client is None:
            client = self._client = _make_client(self._blocking.url)
        return client

    # -- proxies enter here --

    async def call(self, op: Op[R], name: str | None, /, *args: Any) -> R:
        implementation = IMPLEMENTATIONS.get(op.code)
        if implementation is None:
            why = UNSUPPORTED.get(op.code, f"{op!r} is not available on the Redis backend")
            raise ProxyShareError(why)
        return cast(R, await self.run(implementation(self, name, *args), op, name))

    # -- the asyncio driver --

    async def run(self, steps: Run[R], op: Op[Any] | None = None, name: str | None = None) -> R:
        """Run an operation to its end (see the module docstring for cancellation)."""
        client = self._client_here()
        pool = client.connection_pool
        conn: AbstractConnection | None = None
        pubsub: PubSub | None = None
        cancelled = False
        try:
            command: Command = steps.send(None)
            while True:
                if cancelled and isinstance(command, _WAITS):
                    steps.close()  # it would wait: it has taken nothing
                    raise asyncio.CancelledError
                try:
                    if isinstance(command, (Subscribe, NextMessage)):
                        pubsub = pubsub or client.pubsub()
                        reply = await _listen(pubsub, command)
                    else:
                        if conn is None:
                            conn = await pool.get_connection()
                        blocked = _Blocked() if isinstance(command, BlockingPop) else None
                        if isinstance(command, BlockingPop) and blocked is not None:
                            inner = asyncio.ensure_future(_pop(conn, command, blocked))
                            hurry: Callable[[], None] | None = self._unblocker(blocked, inner)
                        else:
                            inner = asyncio.ensure_future(_execute(conn, command))
                            hurry = None
                        if await _settle(inner, hurry):
                            cancelled = True
                            popped_nothing = inner.exception() is None and inner.result() is None
                            if blocked is not None and popped_nothing:  # cut short
                                steps.close()
                                raise asyncio.CancelledError
                        reply = inner.result()
                except _caught() as exc:
                    where, kind = self._blocking.address, command.kind
                    error = translate(exc, where, self.prefix, command.name, kind)
                    error.__cause__ = exc if type(error) is ProxyShareError else None
                    error.__suppress_context__ = True
                    command = steps.throw(error)  # the operation may catch it
                else:
                    command = steps.send(reply)
        except StopIteration as done:
            result = cast(R, done.value)
        except BaseException:
            if cancelled:  # it failed as it was cancelled: nothing to undo
                raise asyncio.CancelledError from None
            raise
        finally:
            if conn is not None:
                await _settle(asyncio.ensure_future(pool.release(conn)))
            if pubsub is not None:
                await _settle(asyncio.ensure_future(pubsub.aclose()))
        if cancelled:
            if op is not None and name is not None:
                await _settle(asyncio.ensure_future(self._undo(op, name, result)))
            raise asyncio.CancelledError
        return result

    async def _undo(self, op: Op[Any], name: str, result: Any) -> None:
        """Take back what a cancelled operation got: a lease, or queue items."""
        try:
            release = _ACQUIRED.get(op.code)
            if release is not None and result is True:
                await self.call(release, name)
            elif op.code == P.QUEUE_GET.code:
                await self.run(unget(self, name, [result]))
            elif op.code == P.QUEUE_GET_MANY.code and result:
                await self.run(unget(self, name, list(result)))
        except ProxyShareError as exc:  # e.g. Redis went away: the lease lapses, the items stay out
            logger.warning("could not undo a cancelled %r on %r: %s", op, name, exc)

    def _unblocker(self, blocked: _Blocked, inner: asyncio.Future[Any]) -> Callable[[], None]:
        def hurry() -> None:
            unblocking = asyncio.ensure_future(self._unblock(blocked, inner))
            self._unblocking.add(unblocking)
            unblocking.add_done_callback(self._unblocking.discard)

        return hurry

    async def _unblock(self, blocked: _Blocked, inner: asyncio.Future[Any]) -> None:
        """Cut a ``BLPOP`` short from another connection: it returns nil, or what it popped."""
        known = asyncio.ensure_future(blocked.known.wait())
        await asyncio.wait((known, inner), return_when=asyncio.FIRST_COMPLETED)
        known.cancel()
        client = self._client
        if inner.done() or blocked.client_id is None or client is None:
            return
        try:
            await client.execute_command("CLIENT", "UNBLOCK", blocked.client_id)
        except _caught() as exc:  # e.g. an ACL without CLIENT: the pop times out by itself
            logger.info("could not cut a cancelled wait short (%s): it ends by itself", exc)


async def _settle(inner: asyncio.Future[Any], hurry: Callable[[], None] | None = None) -> bool:
    """Wait for ``inner`` to finish, whatever cancels this task meanwhile.

    Returns True if this task was cancelled meanwhile (``hurry`` was then called,
    once); the caller raises ``CancelledError`` when it is done.
    """
    cancelled = False
    while not inner.done():
        try:
            await asyncio.wait((inner,))
        except asyncio.CancelledError:
            if not cancelled:
                cancelled = True
                if hurry is not None:
                    hurry()
    return cancelled


async def _execute(conn: AbstractConnection, command: Command) -> Any:
    """One command on ``conn``: its reply, or redis-py's error."""
    if isinstance(command, Eval):
        script, keys = command.script, command.keys
        try:
            await conn.send_command("EVALSHA", script.sha, len(keys), *keys, *command.args)
            return await conn.read_response()
        except _redis().exceptions.NoScriptError:
            pass
        # First use on this server (or it restarted): EVAL sends the text, and Redis caches it.
        await conn.send_command("EVAL", script.source, len(keys), *keys, *command.args)
        return await conn.read_response()
    if isinstance(command, Call):
        await conn.send_command(*command.args)
        return await conn.read_response()
    raise ProxyShareError(f"{type(command).__name__} is not run on a plain connection")


async def _pop(conn: AbstractConnection, command: BlockingPop, blocked: _Blocked) -> Any:
    """``BLPOP``, with this connection's id asked in the same write (for ``CLIENT UNBLOCK``)."""
    packed = conn.pack_commands([("CLIENT", "ID"), ("BLPOP", *command.keys, command.timeout)])
    await conn.send_packed_command(packed)
    blocked.client_id = int(await conn.read_response())
    blocked.known.set()
    return await conn.read_response()


async def _listen(pubsub: PubSub, command: Subscribe | NextMessage) -> Any:
    if isinstance(command, Subscribe):
        await pubsub.subscribe(command.channel)
        while True:  # return once Redis confirmed it: later messages cannot be missed
            message = await pubsub.get_message(timeout=SOCKET_TIMEOUT)
            if message is None:
                raise _redis().exceptions.TimeoutError("Redis did not confirm a SUBSCRIBE")
            if message.get("type") == "subscribe":
                return None
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=command.timeout)
    if message is None or message.get("type") != "message":
        return None
    return message["data"]


def _make_client(url: str) -> Redis:
    """A ``redis.asyncio.Redis`` with the blocking backend's options."""
    _redis()  # a clear error if redis-py is missing
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    for_redis, options = client_options(url)
    # Never resend a command: an INCRBY whose reply was lost may have run.
    client: Redis = redis.asyncio.Redis.from_url(for_redis, retry=Retry(NoBackoff(), 0), **options)
    return client
