"""Manager-level operations on Redis: open (get-or-create), delete, names, ping.

The registry hash (``prefix + "registry"``) maps each name to its kind; it
is what every resource script checks first.  Also here: what this backend
does not offer, declared against the table so that nothing is left out by
accident (a unit test checks every row is either implemented or declared).
"""

from __future__ import annotations

from typing import Any

from proxyshare import _protocol as P
from proxyshare._backends.redis.leases import DEFAULT_LEASE
from proxyshare._backends.redis.ops.base import Context, implements, keys, unsupported
from proxyshare._backends.redis.sansio import Call, Eval, Run, Script
from proxyshare._errors import ProxyShareError
from proxyshare._rules import (
    check_int,
    check_lease,
    check_maxsize,
    check_name,
    check_semaphore_value,
    wrong_kind,
)

__all__ = ["BARRIERS_UNAVAILABLE", "PIPELINES_UNAVAILABLE", "delete", "names", "open_", "ping"]

BARRIERS_UNAVAILABLE = (
    "barriers are not available on the Redis backend: use a ShareManager, or an event plus a "
    "counter"
)
PIPELINES_UNAVAILABLE = "pipelines are not available on the Redis backend"

for _op in P.ops_of("barrier"):
    unsupported(_op, BARRIERS_UNAVAILABLE)
unsupported(P.PIPELINE, PIPELINES_UNAVAILABLE)
unsupported(P.HELLO, "Redis has no proxyshare session to greet")
unsupported(P.CANCEL, "a proxyshare session frame; an interrupted Redis call drops its connection")

# KEYS registry, meta, v, w, x; ARGV name, kind, initial, [option, value]...
# -> {1, meta as {field, value, ...}} | {0, the kind the name already has}
# A new name starts clean: stale keys (of a deleted resource) are removed first.
_OPEN = Script(
    """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found and found ~= ARGV[2] then return {0, found} end
if not found then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'kind', ARGV[2])
  for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  if ARGV[2] == 'counter' then redis.call('SET', KEYS[3], ARGV[3]) end
end
return {1, redis.call('HGETALL', KEYS[2])}
"""
)

# KEYS registry, meta, v, w, x; ARGV name, channel  -> 1 if it existed
# Blocked lock/semaphore waiters and queue callers wake (w, x) and event
# waiters hear ``0`` (channel); each then finds the name gone.
_DELETE = Script(
    """
local found = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HDEL', KEYS[1], ARGV[1])
if not found then return 0 end
redis.call('RPUSH', KEYS[4], 1)
redis.call('RPUSH', KEYS[5], 1)
redis.call('PEXPIRE', KEYS[4], 60000)
redis.call('PEXPIRE', KEYS[5], 60000)
redis.call('PUBLISH', ARGV[2], 0)
return 1
"""
)


def _lease_ms(lease: object) -> int:
    seconds = check_lease(lease)
    return max(1, round((DEFAULT_LEASE if seconds is None else seconds) * 1000))


def _creation(kind: str, options: dict[str, Any]) -> tuple[int, list[Any]]:
    """``(initial value, [option, value, ...])`` stored when ``kind`` is created."""
    if kind == "counter":
        return check_int(options.get("initial", 0), "initial", bits64=True), []
    if kind == "lock":
        return 0, ["lease", _lease_ms(options.get("lease"))]
    if kind == "semaphore":
        value = check_semaphore_value(options.get("value", 1))
        return 0, ["value", value, "lease", _lease_ms(options.get("lease"))]
    if kind == "queue":
        return 0, ["maxsize", check_maxsize(options.get("maxsize", 0))]
    if kind in ("dict", "event"):
        return 0, []
    if kind == "barrier":
        raise ProxyShareError(BARRIERS_UNAVAILABLE)
    raise ValueError(f"unknown resource kind {kind!r}")


@implements(P.OPEN)
def open_(ctx: Context, name: str, kind: str, options: dict[str, Any]) -> Run[dict[str, Any]]:
    """Get-or-create ``name`` as a ``kind``, atomically; its options are fixed at creation."""
    check_name(name)
    initial, fields = _creation(kind, options)
    meta, v, w, x = keys(ctx, name)
    ok, reply = yield Eval(
        _OPEN, [ctx.registry, meta, v, w, x], [name, kind, initial, *fields], name, kind
    )
    if not ok:
        raise wrong_kind(name, reply.decode(), kind)
    stored = {reply[i].decode(): reply[i + 1].decode() for i in range(0, len(reply), 2)}
    stored.pop("kind", None)
    return stored


@implements(P.DELETE)
def delete(ctx: Context, name: str) -> Run[bool]:
    """Delete ``name`` and all its keys; True if it existed."""
    check_name(name)
    meta, v, w, x = keys(ctx, name)
    channel = ctx.prefix + "ch:" + name
    return bool((yield Eval(_DELETE, [ctx.registry, meta, v, w, x], [name, channel], name)))


@implements(P.NAMES)
def names(ctx: Context, _name: None = None) -> Run[dict[str, str]]:
    """Every resource under the prefix: ``{name: kind}``."""
    flat = yield Call("HGETALL", ctx.registry)
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


@implements(P.PING)
def ping(ctx: Context, _name: None = None, payload: Any = None) -> Run[Any]:
    """One round trip (a wrong address or password fails here); returns ``payload``."""
    yield Call("PING")
    return payload
