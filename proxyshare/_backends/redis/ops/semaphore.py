"""Semaphore operations on Redis: a sorted set of owner tokens, scored by lease expiry.

A permit is a member; expired members are dropped (by Redis's clock) before
every count, so a killed holder's permit comes back when its lease lapses.
``meta`` holds ``value`` (the permits) and ``lease`` (ms), fixed at creation.
"""

from __future__ import annotations

from typing import Any

from proxyshare import _protocol as P
from proxyshare._backends.redis.leases import parse_token
from proxyshare._backends.redis.ops import owned
from proxyshare._backends.redis.ops.base import (
    NOW,
    WAKE,
    Context,
    describes,
    implements,
    keys,
    on,
    resource_script,
)
from proxyshare._backends.redis.sansio import Run, Script

__all__ = ["acquire", "describe", "release", "value"]

KIND = "semaphore"

# KEYS registry, v, meta, w; ARGV name, kind, token
# -> {1, lease_ms} if taken, else {0, ms until the earliest permit lapses} ({0, -1}: none held)
_ACQUIRE = resource_script(
    """
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
""",
    NOW,
)

# KEYS registry, v, meta, w; ARGV name, kind, token  -> 1, or the error PSNOTOWNER
_RELEASE = resource_script(
    """
if redis.call('ZREM', KEYS[2], ARGV[3]) == 0 then return redis.error_reply('PSNOTOWNER') end
wake(KEYS[4], tonumber(redis.call('HGET', KEYS[3], 'value')))
return 1
""",
    WAKE,
)

# KEYS registry, v, meta; ARGV name, kind  -> {value, lease_ms, {holders' tokens}}
_STATE = resource_script(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return {redis.call('HGET', KEYS[3], 'value'), redis.call('HGET', KEYS[3], 'lease'),
        redis.call('ZRANGE', KEYS[2], 0, -1)}
""",
    NOW,
)

# KEYS v; ARGV token, lease_ms  -> 1 if still ours (and extended), else 0
_RENEW = Script(
    NOW
    + """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)


_OWNED = owned.Owned(KIND, _ACQUIRE, _RELEASE, _RENEW)


@implements(P.SEM_ACQUIRE)
def acquire(
    ctx: Context, name: str, blocking: bool = True, timeout: float | None = None
) -> Run[bool]:
    return (yield from _OWNED.acquire(ctx, name, blocking, timeout))


@implements(P.SEM_RELEASE)
def release(ctx: Context, name: str) -> Run[None]:
    yield from _OWNED.release(ctx, name)


def _state(ctx: Context, name: str) -> Run[tuple[int, float, list[bytes]]]:
    meta, v, _w, _x = keys(ctx, name)
    permits, lease_ms, tokens = yield on(ctx, _STATE, name, KIND, [v, meta], [])
    return int(permits), int(lease_ms) / 1000.0, tokens


@implements(P.SEM_VALUE)
def value(ctx: Context, name: str) -> Run[int]:
    permits, _lease, tokens = yield from _state(ctx, name)
    return permits - len(tokens)


@describes(KIND)
def describe(ctx: Context, name: str) -> Run[dict[str, Any]]:
    permits, lease, tokens = yield from _state(ctx, name)
    return {
        "holders": [{"client": None, **parse_token(token)} for token in tokens],
        "waiters": [],
        "value": permits - len(tokens),
        "initial": permits,
        "lease": lease,
    }
