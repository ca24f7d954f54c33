"""The same resource API on Redis: ``proxyshare.connect("redis://host:port/db")``.

How one call travels (here ``hits.increment()`` inside a pool worker)::

    worker process                                       Redis
    ──────────────                                       ─────
    hits.increment()          (a proxyshare.Counter)
      └─ RedisRef.call(COUNTER_ADD, "hits", 1)
           └─ _counter_add → RedisRef.script(...)
                └─ RedisRef.execute("EVALSHA", sha, ...)      one Lua script, atomic:
                   this thread's connection, taken from ──▶    registry says "counter"?
                   this process's pool (made on first use,      INCRBY, then GET
                   re-made after fork)                   ◀──   "42"
      └─ returns 42; Redis errors become proxyshare errors in ``_translate`` only

The proxies are the manager backend's own classes (``Counter``, ``Lock``, ...)
holding a :class:`RedisRef` instead of a ``ServerRef``: same methods, same
return values, same errors.  A proxy pickles as (URL, prefix, name).

Keys, for prefix ``p`` and resource name ``n`` (every key sits under ``p``)::

    p + "registry"     hash   name -> kind: the source of truth for names and kinds
    p + "meta:" + n    hash   options fixed at creation (lease, maxsize, value, closed)
    p + "v:" + n       value  counter: string; dict: hash; queue: list; lock: string
                              (owner token, SET NX PX); semaphore: sorted set of
                              owner tokens scored by lease expiry; event: string
    p + "w:" + n       list   wake-up tokens for lock/semaphore waiters and queue putters
    p + "x:" + n       list   the "queue closed" signal for blocked getters
    p + "ch:" + n      channel  pub/sub channel an event's waiters listen on

Every operation is one Lua script that first checks the registry (so a name
used as another kind raises ``ResourceKindError`` and a deleted name
``ResourceNotFoundError``), then does its work server-side: no client-side
read-modify-write anywhere.

Differences from the manager backend (also in the README):

* Locks and semaphore permits are *leases*: the holder's process renews them
  from a background thread.  A thread that ends or a process that exits
  normally gives them back at once (within ``RENEWER_TICK`` for a thread), but
  a killed holder's lease only expires within its lease time (default 10 s),
  where the manager releases at once on disconnect.  A holder that stalls for
  longer than its lease (or loses Redis for that long) loses the lock, and its
  ``release()`` raises ``NotOwnerError``.  The manager's ``lease=`` is a
  maximum hold time; here it is how long a silent holder is trusted.
* Waiters are woken by blocking list pops and pub/sub, capped at the lease's
  remaining time to live; they are not served first-come first-served.
* Counters and ``Dict.increment`` values are 64-bit signed integers.  Dict keys
  and values are compared by their encoding (``str`` keys as UTF-8, ints as
  decimal, anything else pickled), so ``1``, ``1.0`` and ``True`` are three
  keys, and compare-and-set compares encodings.
* An item taken by a getter that dies before it returns is lost (the manager
  puts it back).  Barriers and pipelines are not available.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import logging
import multiprocessing.util
import os
import pickle
import queue as _queue
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from proxyshare import _protocol as P
from proxyshare._errors import (
    AuthenticationError,
    NotOwnerError,
    ProxyShareError,
    ResourceKindError,
    ResourceNotFoundError,
    ServerUnavailableError,
    UnshareableArgumentError,
)
from proxyshare._proxies import Counter, Dict, Event, Lock, Queue, Semaphore
from proxyshare._rules import check_queue_timeout as _queue_timeout
from proxyshare._rules import check_timeout as _check_timeout

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_PREFIX",
    "PASSWORD_ENV",
    "RedisCounter",
    "RedisDict",
    "RedisEvent",
    "RedisLock",
    "RedisManager",
    "RedisQueue",
    "RedisRef",
    "RedisSemaphore",
    "is_redis_url",
]

logger = logging.getLogger("proxyshare.redis")

DEFAULT_PREFIX = "proxyshare:"
DEFAULT_LEASE = 10.0  # seconds a dead holder keeps a lock or permit
PASSWORD_ENV = "PROXYSHARE_REDIS_PASSWORD"
CONNECT_TIMEOUT = 5.0
SOCKET_TIMEOUT = 10.0  # no reply for this long means Redis is unreachable
WAIT_SLICE = 5.0  # longest single blocking call; below SOCKET_TIMEOUT
RENEWER_TICK = 0.5  # how soon a lease of a thread that ended is given back
SCHEMES = ("redis://", "rediss://", "unix+redis://")
_PICKLE = 5  # fixed, so every Python version encodes dict keys the same way
_INT64 = (-(1 << 63), (1 << 63) - 1)
_HOST = socket.gethostname()


def is_redis_url(address: object) -> bool:
    return isinstance(address, str) and address.startswith(SCHEMES)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as exc:
        raise ProxyShareError(
            "the Redis backend needs redis-py: pip install 'proxyshare[redis]'"
        ) from exc
    return redis


# -- URLs and credentials -------------------------------------------------------


def redacted_url(url: str) -> str:
    """``url`` as it may be shown: the password, wherever it was, is ``***``."""
    return _split_url(url)[1]


def _split_url(url: str) -> tuple[str, str]:
    """``(url for redis-py, url safe to show)``; the shown one never has the password."""
    if not is_redis_url(url):
        raise ValueError(
            f"not a Redis URL: use redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) "
            f"or unix+redis:///path/to/redis.sock[?db=N]; got a {type(url).__name__}"
        )
    for_redis = "unix://" + url[len("unix+redis://") :] if url.startswith("unix+redis://") else url
    parts = urlsplit(url)
    query = "&".join(
        "password=***" if item.startswith("password=") else item for item in parts.query.split("&")
    )
    if "@" not in parts.netloc and query == parts.query:
        return for_redis, url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if not netloc:  # urlunsplit drops the empty authority of unix+redis:///path
        shown = shown.replace(":", "://", 1)
    return for_redis, shown


def _url_has_password(url: str) -> bool:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    in_query = any(item.startswith("password=") for item in parts.query.split("&"))
    return in_query or (":" in userinfo and bool(userinfo.partition(":")[2]))


def _make_client(url: str) -> Any:
    """This process's ``redis.Redis`` (and so its connection pool) for ``url``."""
    redis = _import_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    for_redis, _shown = _split_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "protocol": 2,  # replies as plain lists, whatever the redis-py default
        # Never resend a command: an INCRBY whose reply was lost may have run.
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"proxyshare:{os.getpid()}:{_HOST}",
    }
    if not for_redis.startswith("unix://"):
        options["socket_keepalive"] = True  # notice a peer that vanished without a FIN
    password = os.environ.get(PASSWORD_ENV)
    if password and not _url_has_password(url):
        options["password"] = password
    return redis.Redis.from_url(for_redis, **options)


# -- per-process state: clients, this thread's connections, held leases -------------


class _Holding:
    """One lock or permit this process holds, renewed by the renewer thread."""

    __slots__ = ("kind", "lease_ms", "name", "ref", "renewed", "thread", "token")

    def __init__(self, ref: RedisRef, name: str, kind: str, token: str, lease_ms: int) -> None:
        self.ref = ref
        self.name = name
        self.kind = kind
        self.token = token
        self.lease_ms = lease_ms
        self.thread = threading.current_thread()
        self.renewed = time.monotonic()

    @property
    def period(self) -> float:
        """Renew every third of the lease: two renewals may fail before it lapses."""
        return self.lease_ms / 3000.0

    def renew(self) -> bool:
        """Extend the lease; False if it is no longer ours (expired, deleted)."""
        script = _LOCK_RENEW if self.kind == "lock" else _SEM_RENEW
        key = self.ref.keys(self.name)[1]
        return bool(self.ref.run_script(script, [key], [self.token, self.lease_ms]))

    def give_back(self) -> None:
        """Release on behalf of a thread or process that can no longer do it."""
        meta, v, w, _x = self.ref.keys(self.name)
        script = _LOCK_RELEASE if self.kind == "lock" else _SEM_RELEASE
        try:
            self.ref.script(script, self.name, self.kind, [v, meta, w], [self.token])
        except (NotOwnerError, ResourceNotFoundError):
            return  # the lease already lapsed, or the resource was deleted: nothing to return
        except ProxyShareError as exc:
            logger.warning(
                "could not release %s %r at %s (%s): it stays taken until its lease lapses",
                self.kind,
                self.name,
                self.ref.address,
                exc,
            )


class _Connection:
    """A pool connection lent to one thread for its lifetime (returned when it ends)."""

    __slots__ = ("conn", "pool")

    def __init__(self, pool: Any) -> None:
        self.conn = pool.get_connection()  # raises before __del__ has anything to return
        self.pool = pool

    def __del__(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.release(self.conn)


class _Process:
    """Everything that belongs to one process; rebuilt after ``fork``."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.nonce = secrets.token_hex(4)
        self.lock = threading.Lock()
        self.clients: dict[str, Any] = {}
        self.tls = threading.local()
        self.seq = 0
        # (url, prefix, name, thread ident) -> holdings, newest last
        self.holdings: dict[tuple[str, str, str, int], list[_Holding]] = {}
        self.renewing = threading.Condition(self.lock)
        self.renewer: threading.Thread | None = None
        self.period = 0.0  # the renewer's current sleep, seconds
        self.idle = False  # the renewer waits for a first holding

    def client(self, url: str) -> Any:
        client = self.clients.get(url)
        if client is None:
            with self.lock:
                client = self.clients.get(url)
                if client is None:
                    client = self.clients[url] = _make_client(url)
        return client

    def connection(self, url: str) -> Any:
        conns: dict[str, _Connection] | None = getattr(self.tls, "conns", None)
        if conns is None:
            conns = self.tls.conns = {}
        lent = conns.get(url)
        if lent is None:
            lent = conns[url] = _Connection(self.client(url).connection_pool)
        return lent.conn

    def token(self) -> str:
        """A fresh owner token: who holds it, since when, and unique."""
        with self.lock:
            self.seq += 1
            seq = self.seq
        ident = threading.get_ident()
        return f"{self.pid}|{time.time():.6f}|{_HOST}|{self.nonce}|{ident}|{seq}"

    # -- holdings and their renewal --

    def held(self, key: tuple[str, str, str, int]) -> list[_Holding]:
        """This thread's holdings under ``key`` (a reused thread id inherits nothing)."""
        me = threading.current_thread()
        return [h for h in self.holdings.get(key, ()) if h.thread is me]

    def add(self, key: tuple[str, str, str, int], holding: _Holding) -> None:
        with self.lock:
            self.holdings.setdefault(key, []).append(holding)
            if self.renewer is None:
                # A process that exits normally gives its leases back at once.
                multiprocessing.util.Finalize(None, _release_at_exit, exitpriority=10)
                self.renewer = threading.Thread(
                    target=self._renew_forever, name="proxyshare-redis-renewer", daemon=True
                )
                self.renewer.start()
            # Wake the renewer only if it is idle or sleeps too long for this
            # lease: waking it on every acquire would cost a renewal per acquire.
            if self.idle or holding.period < self.period:
                self.renewing.notify()

    def pop(self, key: tuple[str, str, str, int]) -> _Holding | None:
        """Take this thread's newest holding under ``key`` off the books."""
        me = threading.current_thread()
        with self.lock:
            held = self.holdings.get(key)
            if not held or held[-1].thread is not me:
                return None
            holding = held.pop()
            if not held:
                del self.holdings[key]
            return holding

    def discard(self, holding: _Holding) -> bool:
        with self.lock:
            for key, held in list(self.holdings.items()):
                if holding in held:
                    held.remove(holding)
                    if not held:
                        del self.holdings[key]
                    return True
        return False

    def _renew_forever(self) -> None:
        """Renew each lease every third of its length; give back dead threads' leases.

        Wakes at least every ``RENEWER_TICK`` seconds while anything is held,
        so a lease of a thread that ended is returned within that time (no
        Redis call is made for a tick with nothing due).
        """
        while True:
            with self.lock:
                self.idle = True
                while not self.holdings:
                    self.renewing.wait()
                self.idle = False
                current = [h for held in self.holdings.values() for h in held]
                self.period = min(RENEWER_TICK, *(h.period for h in current))
                self.renewing.wait(self.period)
                current = [h for held in self.holdings.values() for h in held]
            now = time.monotonic()
            for holding in current:
                if not holding.thread.is_alive() or now - holding.renewed >= holding.period:
                    self._renew(holding)

    def _renew(self, holding: _Holding) -> None:
        if not holding.thread.is_alive():
            # As on the manager, where the thread's connection closes: give it back.
            if self.discard(holding):
                holding.give_back()
            return
        try:
            kept = holding.renew()
            holding.renewed = time.monotonic()
        except ProxyShareError as exc:
            logger.warning("could not renew a lease at %s: %s", holding.ref.address, exc)
            return
        if not kept and self.discard(holding):
            logger.warning(
                "lost a lease at %s (it expired or was deleted): the holder no longer owns it",
                holding.ref.address,
            )


_state: _Process | None = None
_state_lock = threading.Lock()


def _release_at_exit() -> None:
    """Give back this process's leases when it exits normally (not when killed)."""
    state = _state
    if state is None or state.pid != os.getpid():
        return
    with state.lock:
        holdings = [h for held in state.holdings.values() for h in held]
        state.holdings.clear()
    for holding in holdings:
        holding.give_back()


def _here() -> _Process:
    global _state
    state = _state
    if state is None or state.pid != os.getpid():
        with _state_lock:
            state = _state
            if state is None or state.pid != os.getpid():
                state = _state = _Process()
    return state


def _forget_parent() -> None:
    """A forked child must not use its parent's connections or renew its leases."""
    global _state, _state_lock
    _state = None
    _state_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent)


# -- Lua scripts ------------------------------------------------------------------

# KEYS[1] is the registry, ARGV[1] the name, ARGV[2] the expected kind.
_CHECK = """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found ~= ARGV[2] then return redis.error_reply('PSKIND ' .. (found or '-')) end
"""
_WAKE = """
local function wake(key, cap)
  redis.call('RPUSH', key, 1)
  redis.call('LTRIM', key, 0, math.max(cap, 1) - 1)
end
"""
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


class _Script:
    __slots__ = ("sha", "source")

    def __init__(self, body: str, check: bool = True) -> None:
        self.source = (_CHECK if check else "") + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


# KEYS reg meta v w x; ARGV name kind initial [option value]...
_OPEN = _Script(
    """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found and found ~= ARGV[2] then return redis.error_reply('PSKIND ' .. found) end
if not found then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'kind', ARGV[2])
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  if ARGV[2] == 'counter' then redis.call('SET', KEYS[3], ARGV[3]) end
end
return redis.call('HGETALL', KEYS[2])
""",
    check=False,
)
# KEYS reg meta v w x; ARGV name
_DELETE = _Script(
    """
local found = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HDEL', KEYS[1], ARGV[1])
if not found then return 0 end
-- wake blocked lock/semaphore waiters and queue getters: they find it gone
redis.call('RPUSH', KEYS[4], 1)
redis.call('RPUSH', KEYS[5], 1)
redis.call('PEXPIRE', KEYS[4], 60000)
redis.call('PEXPIRE', KEYS[5], 60000)
return 1
""",
    check=False,
)

# counter: KEYS reg v
_COUNTER_ADD = _Script("redis.call('INCRBY', KEYS[2], ARGV[3]) return redis.call('GET', KEYS[2])")
_COUNTER_GET = _Script("return redis.call('GET', KEYS[2])")
_COUNTER_SET = _Script("redis.call('SET', KEYS[2], ARGV[3]) return 1")
_COUNTER_CAS = _Script(
    """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[2], ARGV[4])
return 1
"""
)
_COUNTER_SWAP = _Script("return redis.call('SET', KEYS[2], ARGV[3], 'GET')")

# lock: KEYS reg v meta w
_LOCK_ACQUIRE = _Script(
    """
local lease = redis.call('HGET', KEYS[3], 'lease')
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', lease) then return {1, tonumber(lease)} end
local ttl = redis.call('PTTL', KEYS[2])
if ttl == -2 then ttl = 0 end  -- gone since SET NX: try again at once
return {0, ttl}
"""
)
_LOCK_RELEASE = _Script(
    _WAKE
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return redis.error_reply('PSNOTOWNER') end
redis.call('DEL', KEYS[2])
wake(KEYS[4], 1)
return 1
"""
)
_LOCK_STATE = _Script(
    "return {redis.call('GET', KEYS[2]) or '', redis.call('HGET', KEYS[3], 'lease')}"
)
# KEYS v; ARGV token lease_ms
_LOCK_RENEW = _Script(
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
""",
    check=False,
)

# semaphore: KEYS reg v meta w
_SEM_ACQUIRE = _Script(
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local value = tonumber(redis.call('HGET', KEYS[3], 'value'))
local lease = tonumber(redis.call('HGET', KEYS[3], 'lease'))
if redis.call('ZCARD', KEYS[2]) < value then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
  return {1, lease}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #first == 0 then return {0, -1} end
return {0, tonumber(first[2]) - now}
"""
)
_SEM_RELEASE = _Script(
    _WAKE
    + """
if redis.call('ZREM', KEYS[2], ARGV[3]) == 0 then return redis.error_reply('PSNOTOWNER') end
wake(KEYS[4], tonumber(redis.call('HGET', KEYS[3], 'value')))
return 1
"""
)
_SEM_STATE = _Script(
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return {redis.call('HGET', KEYS[3], 'value'), redis.call('HGET', KEYS[3], 'lease'),
        redis.call('ZRANGE', KEYS[2], 0, -1)}
"""
)
# KEYS v; ARGV token lease_ms
_SEM_RENEW = _Script(
    _NOW
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
""",
    check=False,
)

# queue: KEYS reg v meta w x
_QUEUE_PUT = _Script(
    _WAKE
    + """
if redis.call('HGET', KEYS[3], 'closed') then
  wake(KEYS[4], 1)  -- pass the news on to the next blocked putter
  return redis.error_reply('PSCLOSED')
end
local max = tonumber(redis.call('HGET', KEYS[3], 'maxsize'))
if max > 0 and redis.call('LLEN', KEYS[2]) >= max then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
return 1
"""
)
_QUEUE_PUT_MANY = _Script(
    """
if redis.call('HGET', KEYS[3], 'closed') then return redis.error_reply('PSCLOSED') end
local max = tonumber(redis.call('HGET', KEYS[3], 'maxsize'))
local size = redis.call('LLEN', KEYS[2])
-- all or nothing, like the manager: a bounded queue takes the batch once it fits
-- (an empty queue takes any batch)
if max > 0 and size > 0 and size + #ARGV - 2 > max then return 0 end
for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""
)
# ARGV count; {1, items} | {2} closed and empty | {0} empty
_QUEUE_GET = _Script(
    _WAKE
    + """
local items = redis.call('LPOP', KEYS[2], ARGV[3])
if items then
  local max = tonumber(redis.call('HGET', KEYS[3], 'maxsize'))
  if max > 0 then wake(KEYS[4], max) end
  return {1, items}
end
if redis.call('HGET', KEYS[3], 'closed') then
  if redis.call('LLEN', KEYS[5]) == 0 then redis.call('RPUSH', KEYS[5], 1) end
  return {2}
end
return {0}
"""
)
# after a BLPOP took an item: a bounded queue has room now
_QUEUE_TAKEN = _Script(
    _WAKE
    + """
local max = tonumber(redis.call('HGET', KEYS[3], 'maxsize'))
if max > 0 then wake(KEYS[4], max) end
return 1
"""
)
_QUEUE_INFO = _Script(
    """
local closed = 0
if redis.call('HGET', KEYS[3], 'closed') then closed = 1 end
return {redis.call('LLEN', KEYS[2]), tonumber(redis.call('HGET', KEYS[3], 'maxsize')), closed}
"""
)
_QUEUE_CLOSE = _Script(
    _WAKE
    + """
redis.call('HSET', KEYS[3], 'closed', 1)
if redis.call('LLEN', KEYS[5]) == 0 then redis.call('RPUSH', KEYS[5], 1) end
wake(KEYS[4], 1)
return 1
"""
)

# event: KEYS reg v; ARGV name kind channel
_EVENT_SET = _Script("redis.call('SET', KEYS[2], 1) redis.call('PUBLISH', ARGV[3], 1) return 1")
_EVENT_CLEAR = _Script("redis.call('DEL', KEYS[2]) return 1")
_EVENT_IS_SET = _Script("return redis.call('EXISTS', KEYS[2])")

# dict: KEYS reg v
_DICT_GET = _Script(
    "local v = redis.call('HGET', KEYS[2], ARGV[3]) if v then return {1, v} end return {0}"
)
_DICT_SET = _Script("redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) return 1")
_DICT_DEL = _Script("return redis.call('HDEL', KEYS[2], ARGV[3])")
_DICT_LEN = _Script("return redis.call('HLEN', KEYS[2])")
_DICT_CONTAINS = _Script("return redis.call('HEXISTS', KEYS[2], ARGV[3])")
_DICT_ALL = _Script("return redis.call('HGETALL', KEYS[2])")
_DICT_SCAN = _Script("return redis.call('HSCAN', KEYS[2], ARGV[3], 'COUNT', 500)")
_DICT_POP = _Script(
    """
local v = redis.call('HGET', KEYS[2], ARGV[3])
if not v then return {0} end
redis.call('HDEL', KEYS[2], ARGV[3])
return {1, v}
"""
)
_DICT_SETDEFAULT = _Script(
    "redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) return redis.call('HGET', KEYS[2], ARGV[3])"
)
_DICT_UPDATE = _Script(
    """
for i = 3, #ARGV, 1000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""
)
_DICT_CLEAR = _Script("redis.call('DEL', KEYS[2]) return 1")
# ARGV field n default
_DICT_INCR = _Script(
    """
redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[5])
redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[4])
return redis.call('HGET', KEYS[2], ARGV[3])
"""
)
_DICT_CAS = _Script(
    """
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
return 1
"""
)


# -- encoding -----------------------------------------------------------------------


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__} ({value!r})")
    if not _INT64[0] <= value <= _INT64[1]:
        raise OverflowError(f"{what} must fit in 64 bits on the Redis backend, got {value}")
    return value


def _dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, _PICKLE)
    except Exception as exc:
        raise UnshareableArgumentError(
            f"cannot send this value to Redis: it cannot be pickled "
            f"({type(exc).__name__}: {exc}). Send plain data (numbers, strings, lists, dicts, ...)."
        ) from exc


def _dump_value(value: Any) -> bytes:
    """Ints as decimal text (so HINCRBY works on them), anything else pickled."""
    if type(value) is int and _INT64[0] <= value <= _INT64[1]:
        return str(value).encode()
    return _dumps(value)


def _load_value(data: bytes) -> Any:
    if data[:1] == b"\x80":  # a pickle; decimal text never starts with this byte
        return pickle.loads(data)
    return int(data)


def _dump_key(key: Any) -> bytes:
    """``str`` keys as UTF-8 (readable in redis-cli), others pickled without memo.

    Without the memo, equal keys pickle to equal bytes however they were built
    (the memo would record whether two parts were the same object).
    """
    hash(key)  # unhashable keys fail here, as in a dict
    if type(key) is str:
        try:
            return key.encode()
        except UnicodeEncodeError:
            pass  # lone surrogates: pickled below
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, _PICKLE)
    pickler.fast = True
    try:
        pickler.dump(key)
    except Exception as exc:
        raise UnshareableArgumentError(
            f"cannot use this key on Redis: it cannot be pickled ({type(exc).__name__}: {exc})"
        ) from exc
    return buffer.getvalue()


def _load_key(data: bytes) -> Any:
    if data[:1] == b"\x80":  # UTF-8 text never starts with a continuation byte
        return pickle.loads(data)
    return data.decode()


# -- the one call path -----------------------------------------------------------------


class RedisRef:
    """Where the resources live: what every Redis-backed proxy carries.

    Pickles as ``(url, prefix)``.  A password written in the URL travels with
    it; one taken from ``PROXYSHARE_REDIS_PASSWORD`` does not (each process
    reads the variable itself).
    """

    __slots__ = ("_shown", "prefix", "registry", "url")

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        self._shown = _split_url(url)[1]
        self.url = url
        self.prefix = prefix
        self.registry = prefix + "registry"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RedisRef, (self.url, self.prefix))

    @property
    def address(self) -> str:
        """The URL without its password: safe to show and log."""
        return self._shown

    def __repr__(self) -> str:
        return f"RedisRef({self._shown!r}, prefix={self.prefix!r})"

    def where(self) -> str:
        return f"{self._shown} prefix={self.prefix!r}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RedisRef) and (other.url, other.prefix) == (self.url, self.prefix)

    def __hash__(self) -> int:
        return hash((self.url, self.prefix))

    def keys(self, name: str) -> tuple[str, str, str, str]:
        """``(meta, v, w, x)`` keys of resource ``name``."""
        p = self.prefix
        return (p + "meta:" + name, p + "v:" + name, p + "w:" + name, p + "x:" + name)

    def client(self) -> Any:
        """This process's ``redis.Redis`` for this URL (pool per process)."""
        return _here().client(self.url)

    # -- proxies enter here --

    def call(self, op: P.Op[Any], name: str, /, *args: Any) -> Any:
        """The ``ServerRef.call`` of this backend: run ``op`` on ``name``."""
        return _OPS[op.code](self, name, *args)

    # -- every Redis command leaves here --

    @contextmanager
    def errors(self, name: str | None = None, kind: str = "resource") -> Iterator[None]:
        """Turn redis-py and socket errors into proxyshare errors (see ``_translate``)."""
        try:
            yield
        except _caught() as exc:
            error = _translate(exc, self, name, kind)
            raise error from (exc if type(error) is ProxyShareError else None)

    def execute(self, *command: Any, name: str | None = None, kind: str = "resource") -> Any:
        """Send one command on this thread's connection and return the raw reply.

        The hot path: no context manager, one ``poll`` to notice a socket the
        server closed while it sat idle (Redis restarted), so that this
        command goes out on a fresh connection instead of failing.
        """
        try:
            conn = _here().connection(self.url)
            sock = conn._sock
            if sock is not None and _readable(sock):
                conn.disconnect()  # closed by the server, or data nobody asked for
            conn.send_command(*command)
            return conn.read_response()
        except _caught() as exc:
            error = _translate(exc, self, name, kind)
            raise error from (exc if type(error) is ProxyShareError else None)

    def script(
        self, script: _Script, name: str, kind: str, keys: list[str], args: list[Any]
    ) -> Any:
        """Run ``script`` with the registry check for (``name``, ``kind``)."""
        return self._eval(script, [self.registry, *keys], [name, kind, *args], name, kind)

    def run_script(
        self,
        script: _Script,
        keys: list[str],
        args: list[Any],
        name: str | None = None,
        kind: str = "resource",
    ) -> Any:
        """Run a script that does its own checks (open, delete, renew)."""
        return self._eval(script, keys, args, name, kind)

    def _eval(
        self, script: _Script, keys: list[str], args: list[Any], name: str | None, kind: str
    ) -> Any:
        redis = _import_redis()
        try:
            return self.execute(
                "EVALSHA", script.sha, len(keys), *keys, *args, name=name, kind=kind
            )
        except ProxyShareError as exc:
            if not isinstance(exc.__cause__, redis.exceptions.NoScriptError):
                raise
        # First use on this server (or it restarted): EVAL sends the text and caches it.
        return self.execute("EVAL", script.source, len(keys), *keys, *args, name=name, kind=kind)


def _caught() -> tuple[type[BaseException], ...]:
    """What ``_translate`` handles; an ``except`` clause evaluates this only on an error."""
    return (_import_redis().RedisError, OSError)


def _readable(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _translate(exc: BaseException, ref: RedisRef, name: str | None, kind: str) -> BaseException:
    """The one place where redis-py and socket errors become proxyshare errors."""
    redis = _import_redis()
    errors = redis.exceptions
    where = ref.address
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
                f"no {kind} named {name!r} under prefix {ref.prefix!r} at {where}: it was "
                f"deleted or Redis lost its data; open it again with mgr.{kind}({name!r})"
            )
        return ResourceKindError(
            f"{name!r} is already a {found}; it cannot also be a {kind}: use another name, "
            f"or mgr.delete({name!r}) first"
        )
    if text.startswith("PSNOTOWNER"):
        noun = "lock" if kind == "lock" else "permit"
        return NotOwnerError(
            f"{kind} {name!r} cannot be released by this caller: it holds no {noun} (a {kind} "
            "is owned by the process and thread that acquired it, and on Redis a lease that "
            "was not renewed in time is lost)"
        )
    if text.startswith("PSCLOSED"):
        return ProxyShareError(f"queue {name!r} is closed")
    if "not an integer" in text:
        return TypeError(f"{kind} {name!r}: the stored value is not an int")
    if "overflow" in text:
        return OverflowError(f"{kind} {name!r}: the result does not fit in 64 bits")
    if isinstance(exc, errors.NoScriptError):
        return ProxyShareError(text)  # _eval retries with EVAL
    return ProxyShareError(f"Redis at {where} refused an operation on {kind} {name!r}: {text}")


# -- operations: opcode -> function(ref, name, *args) ----------------------------------


def _int_reply(value: Any) -> int:
    return 0 if value is None else int(value)


def _counter(script: _Script) -> Callable[..., Any]:
    def op(ref: RedisRef, name: str, *args: Any) -> Any:
        return ref.script(script, name, "counter", [ref.prefix + "v:" + name], list(args))

    return op


_counter_get_raw = _counter(_COUNTER_GET)
_counter_add_raw = _counter(_COUNTER_ADD)


def _counter_get(ref: RedisRef, name: str) -> int:
    return _int_reply(_counter_get_raw(ref, name))


def _counter_add(ref: RedisRef, name: str, n: int = 1) -> int:
    return int(_counter_add_raw(ref, name, _check_int(n, "increment(n)")))


def _counter_sub(ref: RedisRef, name: str, n: int = 1) -> int:
    return int(_counter_add_raw(ref, name, -_check_int(n, "decrement(n)")))


def _counter_set(ref: RedisRef, name: str, value: int) -> None:
    _counter(_COUNTER_SET)(ref, name, _check_int(value, "set(value)"))


def _counter_cas(ref: RedisRef, name: str, expected: Any, new: int) -> bool:
    _check_int(new, "compare_and_set(new)")
    if isinstance(expected, float) and expected.is_integer():
        expected = int(expected)
    if not isinstance(expected, int) or not _INT64[0] <= expected <= _INT64[1]:
        # never equal to a stored 64-bit int, but still check the name and kind
        _counter_get(ref, name)
        return False
    return bool(_counter(_COUNTER_CAS)(ref, name, int(expected), new))


def _counter_swap(ref: RedisRef, name: str, new: int) -> int:
    return _int_reply(_counter(_COUNTER_SWAP)(ref, name, _check_int(new, "get_and_set(new)")))


# -- lock and semaphore: leases with owner tokens --


def _holder_key(ref: RedisRef, name: str) -> tuple[str, str, str, int]:
    return (ref.url, ref.prefix, name, threading.get_ident())


def _parse_token(token: bytes | str) -> dict[str, Any]:
    text = token.decode() if isinstance(token, bytes) else token
    pid, since, host, _nonce, thread, _seq = text.split("|")
    return {"pid": int(pid), "host": host, "since": float(since), "thread": int(thread)}


def _acquire(ref: RedisRef, name: str, kind: str, blocking: bool, timeout: float | None) -> bool:
    """Take a lease, waiting on the wake list for at most the holder's remaining TTL."""
    seconds = _check_timeout(blocking, timeout)
    meta, v, w, _x = ref.keys(name)
    acquire = _LOCK_ACQUIRE if kind == "lock" else _SEM_ACQUIRE
    state = _here()
    key = _holder_key(ref, name)
    deadline = None if seconds is None else time.monotonic() + seconds
    checked = False
    while True:
        token = state.token()
        got, wait_ms = ref.script(acquire, name, kind, [v, meta, w], [token])
        if got:
            state.add(key, _Holding(ref, name, kind, token, int(wait_ms)))
            return True
        if not blocking:
            return False
        if not checked:
            checked = True
            if kind == "lock" and seconds is None and state.held(key):
                raise ProxyShareError(
                    f"lock {name!r} is already held by this thread; acquiring it again "
                    "would wait forever (proxyshare locks are not re-entrant)"
                )
        # An expiring lease publishes nothing: never wait longer than its TTL.
        wait = WAIT_SLICE if wait_ms < 0 else min(WAIT_SLICE, wait_ms / 1000.0)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = min(wait, left)
        if wait > 0:
            ref.execute("BLPOP", w, max(wait, 0.001), name=name, kind=kind)


def _release(ref: RedisRef, name: str, kind: str) -> None:
    meta, v, w, _x = ref.keys(name)
    state = _here()
    holding = state.pop(_holder_key(ref, name))
    token = holding.token if holding is not None else "-"
    script = _LOCK_RELEASE if kind == "lock" else _SEM_RELEASE
    ref.script(script, name, kind, [v, meta, w], [token])


def _lock_acquire(
    ref: RedisRef, name: str, blocking: bool = True, timeout: float | None = None
) -> bool:
    return _acquire(ref, name, "lock", blocking, timeout)


def _lock_release(ref: RedisRef, name: str) -> None:
    _release(ref, name, "lock")


def _lock_state(ref: RedisRef, name: str) -> tuple[bytes, float]:
    meta, v, _w, _x = ref.keys(name)
    token, lease = ref.script(_LOCK_STATE, name, "lock", [v, meta], [])
    return token, int(lease) / 1000.0


def _lock_locked(ref: RedisRef, name: str) -> bool:
    return bool(_lock_state(ref, name)[0])


def _lock_owner(ref: RedisRef, name: str) -> dict[str, Any] | None:
    token = _lock_state(ref, name)[0]
    if not token:
        return None
    info = _parse_token(token)
    return {"pid": info["pid"], "host": info["host"], "since": info["since"]}


def _sem_acquire(
    ref: RedisRef, name: str, blocking: bool = True, timeout: float | None = None
) -> bool:
    return _acquire(ref, name, "semaphore", blocking, timeout)


def _sem_release(ref: RedisRef, name: str) -> None:
    _release(ref, name, "semaphore")


def _sem_state(ref: RedisRef, name: str) -> tuple[int, float, list[bytes]]:
    meta, v, _w, _x = ref.keys(name)
    value, lease, tokens = ref.script(_SEM_STATE, name, "semaphore", [v, meta], [])
    return int(value), int(lease) / 1000.0, tokens


def _sem_value(ref: RedisRef, name: str) -> int:
    value, _lease, tokens = _sem_state(ref, name)
    return value - len(tokens)


# -- queue --


def _queue_keys(ref: RedisRef, name: str) -> list[str]:
    meta, v, w, x = ref.keys(name)
    return [v, meta, w, x]


def _queue_put(
    ref: RedisRef, name: str, item: Any, block: bool = True, timeout: float | None = None
) -> None:
    seconds = _queue_timeout(block, timeout)
    data = _dumps(item)
    keys = _queue_keys(ref, name)
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        if ref.script(_QUEUE_PUT, name, "queue", keys, [data]):
            return
        if not block:
            raise _queue.Full
        wait = WAIT_SLICE
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise _queue.Full
        ref.execute("BLPOP", keys[2], max(wait, 0.001), name=name, kind="queue")


def _queue_put_many(
    ref: RedisRef, name: str, items: list[Any], block: bool = True, timeout: float | None = None
) -> None:
    seconds = _queue_timeout(block, timeout)
    data = [_dumps(item) for item in items]
    if not data:
        _queue_info(ref, name)  # nothing to add; still check the name and kind
        return
    keys = _queue_keys(ref, name)
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        if ref.script(_QUEUE_PUT_MANY, name, "queue", keys, data):
            return
        if not block:
            raise _queue.Full
        wait = WAIT_SLICE
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise _queue.Full
        ref.execute("BLPOP", keys[2], max(wait, 0.001), name=name, kind="queue")


def _queue_take(
    ref: RedisRef, name: str, count: int, deadline: float | None, block: bool
) -> list[Any] | None:
    """Up to ``count`` items; [] when it stays empty until ``deadline``; None once closed."""
    keys = _queue_keys(ref, name)
    while True:
        reply = ref.script(_QUEUE_GET, name, "queue", keys, [count])
        if reply[0] == 1:
            return [pickle.loads(item) for item in reply[1]]
        if reply[0] == 2:
            return None
        if not block:
            return []
        wait = WAIT_SLICE
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return []
        popped = ref.execute("BLPOP", keys[0], keys[3], max(wait, 0.001), name=name, kind="queue")
        if popped is not None and popped[0].decode() == keys[0]:
            ref.script(_QUEUE_TAKEN, name, "queue", keys, [])
            items = [pickle.loads(popped[1])]
            if count > 1:
                more = ref.script(_QUEUE_GET, name, "queue", keys, [count - 1])
                if more[0] == 1:
                    items.extend(pickle.loads(item) for item in more[1])
            return items
        # timed out, or the close signal (which _QUEUE_GET puts back): look again


def _queue_get(ref: RedisRef, name: str, block: bool = True, timeout: float | None = None) -> Any:
    seconds = _queue_timeout(block, timeout)
    deadline = None if seconds is None else time.monotonic() + seconds
    items = _queue_take(ref, name, 1, deadline, bool(block))
    if items is None:
        raise ProxyShareError(f"queue {name!r} is closed and empty")
    if not items:
        raise _queue.Empty
    return items[0]


def _queue_get_many(
    ref: RedisRef, name: str, max_items: int, timeout: float | None = None
) -> list[Any]:
    if _check_int(max_items, "max_items") < 1:
        raise ValueError("max_items must be >= 1")
    seconds = _check_timeout(True, timeout)
    deadline = None if seconds is None else time.monotonic() + seconds
    return _queue_take(ref, name, max_items, deadline, True) or []


def _queue_info(ref: RedisRef, name: str) -> tuple[int, int, bool]:
    size, maxsize, closed = ref.script(_QUEUE_INFO, name, "queue", _queue_keys(ref, name), [])
    return (int(size), int(maxsize), bool(closed))


def _queue_size(ref: RedisRef, name: str) -> int:
    return _queue_info(ref, name)[0]


def _queue_close(ref: RedisRef, name: str) -> None:
    ref.script(_QUEUE_CLOSE, name, "queue", _queue_keys(ref, name), [])


# -- event --


def _event(script: _Script) -> Callable[[RedisRef, str], Any]:
    def op(ref: RedisRef, name: str) -> Any:
        channel = ref.prefix + "ch:" + name
        return ref.script(script, name, "event", [ref.prefix + "v:" + name], [channel])

    return op


_event_is_set_raw = _event(_EVENT_IS_SET)


def _event_set(ref: RedisRef, name: str) -> None:
    _event(_EVENT_SET)(ref, name)


def _event_clear(ref: RedisRef, name: str) -> None:
    _event(_EVENT_CLEAR)(ref, name)


def _event_is_set(ref: RedisRef, name: str) -> bool:
    return bool(_event_is_set_raw(ref, name))


def _event_wait(ref: RedisRef, name: str, timeout: float | None = None) -> bool:
    """Subscribe first, then look: a ``set()`` in between is not missed."""
    seconds = _check_timeout(True, timeout)
    deadline = None if seconds is None else time.monotonic() + seconds
    with ref.errors(name, "event"):
        pubsub = ref.client().pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(ref.prefix + "ch:" + name)
            while True:
                if _event_is_set(ref, name):
                    return True
                wait = WAIT_SLICE
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return False
                message = pubsub.get_message(timeout=wait)
                if message is not None and message.get("type") == "message":
                    return True
        finally:
            pubsub.close()


# -- dict --


def _dict(script: _Script) -> Callable[..., Any]:
    def op(ref: RedisRef, name: str, *args: Any) -> Any:
        return ref.script(script, name, "dict", [ref.prefix + "v:" + name], list(args))

    return op


def _dict_get(ref: RedisRef, name: str, key: Any) -> Any:
    reply = _dict(_DICT_GET)(ref, name, _dump_key(key))
    if not reply[0]:
        raise KeyError(key)
    return _load_value(reply[1])


def _dict_get_default(ref: RedisRef, name: str, key: Any, default: Any = None) -> Any:
    reply = _dict(_DICT_GET)(ref, name, _dump_key(key))
    return _load_value(reply[1]) if reply[0] else default


def _dict_set(ref: RedisRef, name: str, key: Any, value: Any) -> None:
    _dict(_DICT_SET)(ref, name, _dump_key(key), _dump_value(value))


def _dict_del(ref: RedisRef, name: str, key: Any) -> None:
    if not _dict(_DICT_DEL)(ref, name, _dump_key(key)):
        raise KeyError(key)


def _dict_len(ref: RedisRef, name: str) -> int:
    return int(_dict(_DICT_LEN)(ref, name))


def _dict_contains(ref: RedisRef, name: str, key: Any) -> bool:
    return bool(_dict(_DICT_CONTAINS)(ref, name, _dump_key(key)))


def _dict_snapshot(ref: RedisRef, name: str) -> dict[Any, Any]:
    flat = _dict(_DICT_ALL)(ref, name)
    return {_load_key(flat[i]): _load_value(flat[i + 1]) for i in range(0, len(flat), 2)}


def _dict_keys(ref: RedisRef, name: str) -> list[Any]:
    """Every key, by HSCAN pages (Redis is never blocked on a big hash)."""
    seen: dict[bytes, None] = {}  # HSCAN may return a field twice
    cursor: Any = 0
    scan = _dict(_DICT_SCAN)
    while True:
        cursor, flat = scan(ref, name, cursor)
        for i in range(0, len(flat), 2):
            seen.setdefault(flat[i])
        if int(cursor) == 0:
            return [_load_key(field) for field in seen]


def _dict_pop(
    ref: RedisRef, name: str, key: Any, has_default: bool = False, default: Any = None
) -> Any:
    reply = _dict(_DICT_POP)(ref, name, _dump_key(key))
    if reply[0]:
        return _load_value(reply[1])
    if has_default:
        return default
    raise KeyError(key)


def _dict_setdefault(ref: RedisRef, name: str, key: Any, default: Any = None) -> Any:
    return _load_value(_dict(_DICT_SETDEFAULT)(ref, name, _dump_key(key), _dump_value(default)))


def _dict_update(ref: RedisRef, name: str, items: dict[Any, Any]) -> None:
    if not isinstance(items, dict):
        raise TypeError(f"update() needs a dict, not {type(items).__name__}")
    flat: list[bytes] = []
    for key, value in items.items():
        flat += (_dump_key(key), _dump_value(value))
    _dict(_DICT_UPDATE)(ref, name, *flat)


def _dict_clear(ref: RedisRef, name: str) -> None:
    _dict(_DICT_CLEAR)(ref, name)


def _dict_incr(ref: RedisRef, name: str, key: Any, n: int = 1, default: int = 0) -> int:
    _check_int(n, "increment(n)")
    _check_int(default, "increment(default)")
    try:
        return int(_dict(_DICT_INCR)(ref, name, _dump_key(key), n, default))
    except TypeError:
        raise TypeError(
            f"dict {name!r}: cannot increment key {key!r}: its value is not an int"
        ) from None


def _dict_cas(ref: RedisRef, name: str, key: Any, expected: Any, new: Any) -> bool:
    field, want, value = _dump_key(key), _dump_value(expected), _dump_value(new)
    return bool(_dict(_DICT_CAS)(ref, name, field, want, value))


_OPS: dict[int, Callable[..., Any]] = {
    P.COUNTER_GET.code: _counter_get,
    P.COUNTER_ADD.code: _counter_add,
    P.COUNTER_SUB.code: _counter_sub,
    P.COUNTER_SET.code: _counter_set,
    P.COUNTER_CAS.code: _counter_cas,
    P.COUNTER_SWAP.code: _counter_swap,
    P.LOCK_ACQUIRE.code: _lock_acquire,
    P.LOCK_RELEASE.code: _lock_release,
    P.LOCK_LOCKED.code: _lock_locked,
    P.LOCK_OWNER.code: _lock_owner,
    P.DICT_GET.code: _dict_get,
    P.DICT_GET_DEFAULT.code: _dict_get_default,
    P.DICT_SET.code: _dict_set,
    P.DICT_DEL.code: _dict_del,
    P.DICT_LEN.code: _dict_len,
    P.DICT_CONTAINS.code: _dict_contains,
    P.DICT_SNAPSHOT.code: _dict_snapshot,
    P.DICT_KEYS.code: _dict_keys,
    P.DICT_POP.code: _dict_pop,
    P.DICT_SETDEFAULT.code: _dict_setdefault,
    P.DICT_UPDATE.code: _dict_update,
    P.DICT_CLEAR.code: _dict_clear,
    P.DICT_INCR.code: _dict_incr,
    P.DICT_CAS.code: _dict_cas,
    P.QUEUE_PUT.code: _queue_put,
    P.QUEUE_GET.code: _queue_get,
    P.QUEUE_PUT_MANY.code: _queue_put_many,
    P.QUEUE_GET_MANY.code: _queue_get_many,
    P.QUEUE_SIZE.code: _queue_size,
    P.QUEUE_CLOSE.code: _queue_close,
    P.QUEUE_INFO.code: _queue_info,
    P.SEM_ACQUIRE.code: _sem_acquire,
    P.SEM_RELEASE.code: _sem_release,
    P.SEM_VALUE.code: _sem_value,
    P.EVENT_SET.code: _event_set,
    P.EVENT_CLEAR.code: _event_clear,
    P.EVENT_IS_SET.code: _event_is_set,
    P.EVENT_WAIT.code: _event_wait,
}


# -- proxies: the manager's classes, shown with their Redis URL ------------------------


def _repr(proxy: Any) -> str:
    kind = type(proxy).__mro__[1].__name__
    return f"<proxyshare.{kind} {proxy.name!r} at {proxy._transport.where()}>"


class RedisCounter(Counter):
    __slots__ = ()
    __repr__ = _repr


class RedisLock(Lock):
    """A lease lock: renewed while its holder lives, expires ``lease`` s after it dies."""

    __slots__ = ()
    __repr__ = _repr


class RedisDict(Dict):
    __slots__ = ()
    __repr__ = _repr


class RedisQueue(Queue):
    __slots__ = ()
    __repr__ = _repr


class RedisSemaphore(Semaphore):
    """Permits are leases, like ``RedisLock``."""

    __slots__ = ()
    __repr__ = _repr


class RedisEvent(Event):
    __slots__ = ()
    __repr__ = _repr


# -- the manager-like entry point ---------------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a resource name must be a non-empty str, not {name!r}")
    return name


def _check_lease(lease: object) -> int:
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease < 1e9:
        raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
    return max(1, round(lease * 1000))


class RedisManager:
    """The ``ShareManager`` resource API, served by Redis.

    >>> mgr = proxyshare.connect("redis://127.0.0.1:6379/0")     # doctest: +SKIP
    >>> mgr.counter("hits").increment()                          # doctest: +SKIP
    1

    Every key lives under ``prefix``.  The password comes from the URL or from
    ``PROXYSHARE_REDIS_PASSWORD``; it is never logged or shown in a repr.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *, check: bool = True) -> None:
        self._ref = RedisRef(url, prefix)
        if check:
            self.ping()  # a wrong address or password fails here, not on first use

    @property
    def server_ref(self) -> RedisRef:
        return self._ref

    @property
    def address(self) -> str:
        """The URL without its password."""
        return self._ref.address

    @property
    def prefix(self) -> str:
        return self._ref.prefix

    def __repr__(self) -> str:
        return f"<RedisManager {self._ref.address} prefix={self._ref.prefix!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self._ref.url, self._ref.prefix))

    def __enter__(self) -> RedisManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Nothing to stop: the resources live in Redis until deleted."""

    def ping(self) -> None:
        self._ref.execute("PING")

    # -- resources --

    def _open(self, name: str, kind: str, initial: int = 0, **options: Any) -> None:
        """Get-or-create ``name`` as a ``kind``, atomically, with its options."""
        _check_name(name)
        meta, v, w, x = self._ref.keys(name)
        args: list[Any] = [name, kind, initial]
        for option, value in options.items():
            args += (option, value)
        self._ref.run_script(_OPEN, [self._ref.registry, meta, v, w, x], args, name, kind)

    def counter(self, name: str, initial: int = 0, *, shared_memory: bool = False) -> RedisCounter:
        """The counter called ``name``, created with ``initial`` if new (64-bit)."""
        self._no_shared_memory(shared_memory)
        self._open(name, "counter", _check_int(initial, "initial"))
        return RedisCounter(self._ref, name)

    def lock(
        self, name: str, *, lease: float | None = DEFAULT_LEASE, shared_memory: bool = False
    ) -> RedisLock:
        """The lock called ``name``; ``lease`` (set when it is created) bounds how long a
        dead holder keeps it."""
        self._no_shared_memory(shared_memory)
        lease_ms = _check_lease(DEFAULT_LEASE if lease is None else lease)
        self._open(name, "lock", lease=lease_ms)
        return RedisLock(self._ref, name)

    def dict(self, name: str) -> RedisDict:
        """The dict called ``name`` (a Redis hash; values pickled)."""
        self._open(name, "dict")
        return RedisDict(self._ref, name)

    def queue(self, name: str, maxsize: int = 0) -> RedisQueue:
        """The FIFO queue called ``name`` (``maxsize`` applies when it is created)."""
        self._open(name, "queue", maxsize=_check_int(maxsize, "maxsize"))
        return RedisQueue(self._ref, name)

    def semaphore(
        self, name: str, value: int = 1, *, lease: float = DEFAULT_LEASE
    ) -> RedisSemaphore:
        """The semaphore called ``name``; each permit is a lease like a lock's."""
        if _check_int(value, "value") < 0:
            raise ValueError("semaphore value must be >= 0")
        self._open(name, "semaphore", value=value, lease=_check_lease(lease))
        return RedisSemaphore(self._ref, name)

    def event(self, name: str) -> RedisEvent:
        """The event called ``name``."""
        self._open(name, "event")
        return RedisEvent(self._ref, name)

    def barrier(self, name: str, parties: int) -> Any:
        raise ProxyShareError(
            "barriers are not available on the Redis backend: use a ShareManager, or an "
            "event plus a counter"
        )

    def pipeline(self) -> Any:
        raise ProxyShareError("pipelines are not available on the Redis backend")

    def adder(self, name: str) -> Any:
        raise ProxyShareError(
            "adders are same host only, like shared_memory=True: they need a ShareManager "
            "on this host; on Redis use a counter, whose increment(n) is one INCRBY"
        )

    @staticmethod
    def _no_shared_memory(shared_memory: bool) -> None:
        if shared_memory:
            raise ProxyShareError(
                "shared_memory=True needs a ShareManager on this host; the Redis backend "
                "always goes through Redis"
            )

    def delete(self, name: str) -> bool:
        """Delete the resource ``name`` and all its keys; True if it existed."""
        meta, v, w, x = self._ref.keys(_check_name(name))
        return bool(self._ref.run_script(_DELETE, [self._ref.registry, meta, v, w, x], [name]))

    def names(self) -> builtins.dict[str, str]:
        """Every resource under the prefix: ``{name: kind}``."""
        flat = self._ref.execute("HGETALL", self._ref.registry)
        return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}

    def status(self) -> builtins.dict[str, Any]:
        """The manager's status shape: ``server``, ``clients``, ``resources``."""
        ref = self._ref
        info = _parse_info(ref.execute("INFO", "server", name=None))
        stats = _parse_info(ref.execute("INFO", "stats"))
        clients_info = _parse_info(ref.execute("INFO", "clients"))
        uptime = float(info.get("uptime_in_seconds", 0))
        now = time.time()
        server = {
            "backend": "redis",
            "address": ref.address,
            "prefix": ref.prefix,
            "version": info.get("redis_version"),
            "pid": int(info.get("process_id", 0)),
            "host": urlsplit(ref.address).hostname or "",
            "started": now - uptime,
            "uptime": uptime,
            "operations": int(stats.get("total_commands_processed", 0)),
            "threads": None,
            "generic_connections": 0,
            "connected_clients": int(clients_info.get("connected_clients", 0)),
        }
        resources = []
        for name, kind in sorted(self.names().items()):
            try:
                resources.append(self._describe(name, kind))
            except ResourceNotFoundError:
                continue  # deleted since names() was read
        return {"server": server, "clients": self._clients(now), "resources": resources}

    def _clients(self, now: float) -> list[builtins.dict[str, Any]]:
        """proxyshare's connections, found by the client name each one sets."""
        try:
            listing = self._ref.execute("CLIENT", "LIST")
        except ServerUnavailableError:
            raise
        except ProxyShareError as exc:
            # Hosted Redis often disables or forbids CLIENT LIST: status still works.
            logger.info("status: CLIENT LIST refused (%s); listing no clients", exc)
            return []
        clients = []
        text = listing.decode() if isinstance(listing, bytes) else str(listing)
        for line in text.splitlines():
            fields = dict(part.partition("=")[::2] for part in line.split())
            tag, _, rest = fields.get("name", "").partition(":")
            if tag != "proxyshare":
                continue
            pid, _, host = rest.partition(":")
            clients.append(
                {
                    "client": int(fields.get("id", 0)),
                    "pid": int(pid) if pid.isdigit() else None,
                    "host": host,
                    "thread": None,
                    "since": now - float(fields.get("age", 0)),
                    "operations": None,
                    "address": fields.get("addr"),
                }
            )
        return clients

    def _describe(self, name: str, kind: str) -> builtins.dict[str, Any]:
        ref = self._ref
        base: builtins.dict[str, Any] = {"name": name, "kind": kind}
        if kind == "counter":
            return {**base, "value": _counter_get(ref, name)}
        if kind == "lock":
            token, lease = _lock_state(ref, name)
            holders = [_holder(token)] if token else []
            return {
                **base,
                "holders": holders,
                "waiters": [],
                "locked": bool(token),
                "lease": lease,
            }
        if kind == "semaphore":
            value, lease, tokens = _sem_state(ref, name)
            return {
                **base,
                "holders": [_holder(t) for t in tokens],
                "waiters": [],
                "value": value - len(tokens),
                "initial": value,
                "lease": lease,
            }
        if kind == "dict":
            return {**base, "size": _dict_len(ref, name)}
        if kind == "queue":
            size, maxsize, closed = _queue_info(ref, name)
            return {**base, "size": size, "maxsize": maxsize, "closed": closed}
        if kind == "event":
            return {**base, "set": _event_is_set(ref, name)}
        return base


def _holder(token: bytes) -> builtins.dict[str, Any]:
    info = _parse_token(token)
    return {"client": None, **info}


def _parse_info(raw: Any) -> builtins.dict[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    result = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(":")
            result[key] = value.strip()
    return result


def _reopen(url: str, prefix: str) -> RedisManager:
    return RedisManager(url, prefix, check=False)
