"""The one call path to Redis: ``RedisTransport``, the blocking driver of the sans-IO operations.

How one call travels (here ``hits.increment()`` inside a pool worker)::

    worker process                                          Redis
    ──────────────                                          ─────
    hits.increment()              (a plain proxyshare.Counter)
      └─ RedisTransport.call(COUNTER_ADD, "hits", 1)
           └─ ops.counter.add(transport, "hits", 1)         a generator: checks n with _rules,
                yields Eval(ADD, keys, args) ─────────────▶ one Lua script, atomic:
                   run(): EVALSHA on this thread's             registry says "counter"?
                   connection, lent from this process's        INCRBY, then GET
                   pool (made on first use, after fork) ◀──── "42"
                is sent b"42", returns 42
      └─ 42; a redis-py or socket error becomes a proxyshare error in ``translate`` only

A transport is ``(url, prefix)`` and pickles as exactly that, so a proxy
pickles as ``(transport, name)``.  A password written in the URL travels
with it; one taken from ``PROXYSHARE_REDIS_PASSWORD`` does not (each process
reads the variable itself).  ``redis`` is imported on the first call, not
when a proxy is unpickled.

An asyncio driver is the same loop as :meth:`RedisTransport.run` over
``redis.asyncio`` connections (``await conn.send_command``/``read_response``),
with ``owner()`` returning the current task; the operations, ``translate``
and the lease renewer (which keeps using this blocking transport) are shared.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from proxyshare._backends.redis.leases import HOST, Owner, this_thread
from proxyshare._backends.redis.ops import IMPLEMENTATIONS, UNSUPPORTED
from proxyshare._backends.redis.ops.status import CLIENT_NAME_TAG
from proxyshare._backends.redis.sansio import (
    BlockingPop,
    Call,
    Command,
    Eval,
    Run,
    Subscribe,
)
from proxyshare._backends.redis.url import PASSWORD_ENV, env_password, split_url
from proxyshare._errors import (
    AuthenticationError,
    ProxyShareError,
    ResourceNotFoundError,
    ServerUnavailableError,
)
from proxyshare._protocol import Op
from proxyshare._rules import not_owner, queue_closed, wrong_kind

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import PubSub
    from redis.connection import Connection, ConnectionPool

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_PREFIX",
    "SOCKET_TIMEOUT",
    "RedisTransport",
    "client_options",
    "translate",
]

R = TypeVar("R")

DEFAULT_PREFIX = "proxyshare:"
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 10.0  # no reply for this long means Redis is unreachable (> sansio.WAIT_SLICE)


class RedisTransport:
    """Where the resources live: what every Redis-backed proxy carries.

    Implements ``proxyshare._transport.Transport`` (for the proxies) and
    ``ops.base.Context`` (for the operations it runs).
    """

    __slots__ = ("_shown", "prefix", "registry", "url")

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self._shown = split_url(url)[1]
        self.url = url
        self.prefix = prefix
        self.registry = prefix + "registry"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RedisTransport, (self.url, self.prefix))

    @property
    def address(self) -> str:
        """The URL without its password: safe to show and log."""
        return self._shown

    def where(self) -> str:
        return f"{self._shown} prefix={self.prefix!r}"

    def __repr__(self) -> str:
        return f"RedisTransport({self._shown!r}, prefix={self.prefix!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RedisTransport):
            return NotImplemented
        return (other.url, other.prefix) == (self.url, self.prefix)

    def __hash__(self) -> int:
        return hash((self.url, self.prefix))

    # -- what the operations ask of whoever runs them (ops.base.Context) --

    def owner(self) -> Owner:
        return this_thread()

    def lease_runner(self) -> RedisTransport:
        return self

    def client(self) -> Redis:
        """This process's ``redis.Redis`` for this URL (one connection pool per process)."""
        return _here().client(self.url)

    # -- proxies enter here --

    def call(self, op: Op[R], name: str | None, /, *args: Any) -> R:
        """Run ``op`` on ``name`` (None for the manager-level operations)."""
        implementation = IMPLEMENTATIONS.get(op.code)
        if implementation is None:
            why = UNSUPPORTED.get(op.code, f"{op!r} is not available on the Redis backend")
            raise ProxyShareError(why)
        return cast(R, self.run(implementation(self, name, *args)))

    # -- the blocking driver: every Redis command leaves here --

    def run(self, steps: Run[R]) -> R:
        """Run an operation to its end: each command it yields, on this thread's connection."""
        pubsub: PubSub | None = None
        try:
            command: Command = steps.send(None)
            while True:
                try:
                    if isinstance(command, Eval):
                        reply = self._eval(command)
                    elif isinstance(command, BlockingPop):
                        reply = self._execute("BLPOP", *command.keys, command.timeout)
                    elif isinstance(command, Call):
                        reply = self._execute(*command.args)
                    elif isinstance(command, Subscribe):
                        pubsub = pubsub or self.client().pubsub()
                        _subscribe(pubsub, command.channel)
                        reply = None
                    else:
                        if pubsub is None:
                            raise ProxyShareError("NextMessage without Subscribe")
                        reply = _next_message(pubsub, command.timeout)
                except _caught() as exc:
                    error = translate(exc, self._shown, self.prefix, command.name, command.kind)
                    error.__cause__ = exc if type(error) is ProxyShareError else None
                    error.__suppress_context__ = True
                    command = steps.throw(error)  # the operation may catch it
                else:
                    command = steps.send(reply)
        except StopIteration as done:
            return cast(R, done.value)
        finally:
            if pubsub is not None:
                with contextlib.suppress(*_caught()):
                    pubsub.close()

    def _connection(self) -> Connection:
        """This thread's connection, re-made if the server closed it while it sat idle.

        One ``poll`` notices a socket that Redis closed (it restarted), so the
        next command goes out on a fresh connection instead of failing.
        """
        lent = _here().lent(self.url)
        conn = lent.conn
        sock: socket.socket | None = conn._sock
        if sock is not None:
            if lent.sock is not sock:
                lent.poller = select.poll()
                lent.poller.register(sock, select.POLLIN)
                lent.sock = sock
            if lent.poller.poll(0):
                conn.disconnect()  # closed by the server, or data nobody asked for
        return conn

    def _execute(self, *command: Any) -> Any:
        conn = self._connection()
        conn.send_command(*command)
        return conn.read_response()

    def _eval(self, command: Eval) -> Any:
        script, keys = command.script, command.keys
        conn = self._connection()
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *command.args)
            return conn.read_response()
        except _redis().exceptions.NoScriptError:
            pass
        # First use on this server (or it restarted): EVAL sends the text, and Redis caches it.
        conn.send_command("EVAL", script.source, len(keys), *keys, *command.args)
        return conn.read_response()


def _subscribe(pubsub: PubSub, channel: str) -> None:
    """Subscribe, and return once Redis confirmed it (later messages cannot be missed)."""
    pubsub.subscribe(channel)
    while True:
        message = pubsub.get_message(timeout=SOCKET_TIMEOUT)
        if message is None:
            raise _redis().exceptions.TimeoutError("Redis did not confirm a SUBSCRIBE")
        if message.get("type") == "subscribe":
            return


def _next_message(pubsub: PubSub, timeout: float) -> bytes | None:
    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
    if message is None or message.get("type") != "message":
        return None
    data: bytes = message["data"]
    return data


# -- errors: the one place where redis-py and socket errors become proxyshare errors -------


def _redis() -> ModuleType:
    try:
        import redis
    except ImportError as exc:
        raise ProxyShareError(
            "the Redis backend needs redis-py: pip install 'proxyshare[redis]'"
        ) from exc
    return redis


def _caught() -> tuple[type[BaseException], ...]:
    """What ``translate`` handles; an ``except`` clause evaluates this only on an error."""
    return (_redis().RedisError, OSError)


def translate(
    exc: BaseException, where: str, prefix: str, name: str | None, kind: str
) -> BaseException:
    """The proxyshare error for a redis-py or socket error met by an operation on ``name``.

    ``where`` is the URL without its password.  Script refusals (``PSKIND``,
    ``PSNOTOWNER``, ``PSCLOSED``) are worded by ``proxyshare._rules``, as on
    the served backend.
    """
    errors = _redis().exceptions
    text = str(exc)
    if isinstance(
        exc, (errors.AuthenticationError, errors.AuthenticationWrongNumberOfArgsError)
    ) or (isinstance(exc, errors.ResponseError) and text.startswith(("NOAUTH", "WRONGPASS"))):
        return AuthenticationError(
            f"Redis at {where} rejected the credentials ({type(exc).__name__}): put the "
            f"password in the URL (redis://:PASSWORD@host:port/db) or in {PASSWORD_ENV}"
        )
    if isinstance(exc, errors.NoPermissionError):
        return AuthenticationError(
            f"the Redis user at {where} may not run a command proxyshare needs ({text}): "
            "grant it access to the prefix's keys and to EVAL/EVALSHA"
        )
    if isinstance(exc, (errors.ConnectionError, errors.TimeoutError, OSError)):
        return ServerUnavailableError(
            f"cannot reach Redis at {where} ({type(exc).__name__}: {text}): is it running? "
            "The next call reconnects."
        )
    if text.startswith("PSKIND "):
        found = text[len("PSKIND ") :].strip()
        if found == "-":
            return ResourceNotFoundError(
                f"no {kind} named {name!r} under prefix {prefix!r} at {where}: it was "
                f"deleted or Redis lost its data; open it again with mgr.{kind}({name!r})"
            )
        return wrong_kind(str(name), found, kind)
    if text.startswith("PSNOTOWNER"):
        return not_owner(kind, str(name))
    if text.startswith("PSCLOSED"):
        return queue_closed(str(name))
    if "overflow" in text:
        return OverflowError(
            f"{kind} {name!r}: the result does not fit in 64 bits; the value is unchanged"
        )
    if "not an integer" in text:
        return TypeError(f"{kind} {name!r}: the stored value is not an int")
    return ProxyShareError(f"Redis at {where} refused an operation on {kind} {name!r}: {text}")


# -- per-process state: clients, and the connection lent to each thread -----------------


def client_options(url: str) -> tuple[str, dict[str, Any]]:
    """The URL to give redis-py and the options of every client of this backend, the
    blocking one here and the asyncio one (``proxyshare.aio``): all but ``retry``,
    which each makes with its own ``Retry`` class, never resending a command."""
    for_redis, _shown = split_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "protocol": 2,  # replies as plain lists, whatever the redis-py default
        "client_name": f"{CLIENT_NAME_TAG}:{os.getpid()}:{HOST}",
    }
    if not for_redis.startswith("unix://"):
        options["socket_keepalive"] = True  # notice a peer that vanished without a FIN
    password = env_password(url)
    if password:
        options["password"] = password
    return for_redis, options


def _make_client(url: str) -> Redis:
    """This process's ``redis.Redis`` (and so its connection pool) for ``url``."""
    redis = _redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    for_redis, options = client_options(url)
    # Never resend a command: an INCRBY whose reply was lost may have run.
    client: Redis = redis.Redis.from_url(for_redis, retry=Retry(NoBackoff(), 0), **options)
    return client


class _Lent:
    """A pool connection lent to one thread for its lifetime (returned when it ends)."""

    __slots__ = ("conn", "poller", "pool", "sock")

    def __init__(self, pool: ConnectionPool) -> None:
        self.conn: Connection = pool.get_connection()  # raises before __del__ has work
        self.pool = pool
        self.sock: object = None  # the socket ``poller`` watches
        self.poller = select.poll()

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.release(self.conn)


class _Clients:
    """This process's clients (one per URL) and each thread's lent connections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: dict[str, Redis] = {}
        self.tls = threading.local()

    def client(self, url: str) -> Redis:
        client = self.clients.get(url)
        if client is None:
            with self.lock:
                client = self.clients.get(url)
                if client is None:
                    client = self.clients[url] = _make_client(url)
        return client

    def lent(self, url: str) -> _Lent:
        try:
            return cast(_Lent, self.tls.conns[url])
        except (AttributeError, KeyError):
            pass
        conns: dict[str, _Lent] | None = getattr(self.tls, "conns", None)
        if conns is None:
            conns = self.tls.conns = {}
        lent = conns[url] = _Lent(self.client(url).connection_pool)
        return lent


_clients: _Clients | None = None
_clients_lock = threading.Lock()


def _here() -> _Clients:
    clients = _clients
    if clients is None:
        clients = _make_clients()
    return clients


def _make_clients() -> _Clients:
    global _clients
    with _clients_lock:
        if _clients is None:
            _clients = _Clients()
        return _clients


def _forget_parent() -> None:
    """A forked child must not use its parent's connections."""
    global _clients, _clients_lock
    _clients = None
    _clients_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent)
