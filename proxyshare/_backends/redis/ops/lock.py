"""Lock operations on Redis: a string key holding the owner's token, set with ``NX PX lease``.

The holder's process renews the lease (``leases.py``); ``release`` deletes
the key only if it still holds this owner's token, and wakes one waiter.
"""

from __future__ import annotations

from typing import Any

from proxyshare import _protocol as P
from proxyshare._backends.redis.leases import parse_token
from proxyshare._backends.redis.ops import owned
from proxyshare._backends.redis.ops.base import (
    WAKE,
    Context,
    describes,
    implements,
    keys,
    on,
    resource_script,
)
from proxyshare._backends.redis.sansio import Run, Script

__all__ = ["acquire", "describe", "locked", "owner", "release"]

KIND = "lock"

# KEYS registry, v, meta, w; ARGV name, kind, token
# -> {1, lease_ms} if taken, else {0, ms until the holder's lease lapses}
_ACQUIRE = resource_script(
    """
local lease = redis.call('HGET', KEYS[3], 'lease')
if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', lease) then return {1, tonumber(lease)} end
local ttl = redis.call('PTTL', KEYS[2])
if ttl == -2 then ttl = 0 end  -- gone since SET NX: try again at once
return {0, ttl}
"""
)

# KEYS registry, v, meta, w; ARGV name, kind, token  -> 1, or the error PSNOTOWNER
_RELEASE = resource_script(
    """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return redis.error_reply('PSNOTOWNER') end
redis.call('DEL', KEYS[2])
wake(KEYS[4], 1)
return 1
""",
    WAKE,
)

# KEYS registry, v, meta; ARGV name, kind  -> {holder's token or '', lease_ms}
_STATE = resource_script(
    "return {redis.call('GET', KEYS[2]) or '', redis.call('HGET', KEYS[3], 'lease')}"
)

# KEYS v; ARGV token, lease_ms  -> 1 if still ours (and extended), else 0
_RENEW = Script(
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)


_OWNED = owned.Owned(KIND, _ACQUIRE, _RELEASE, _RENEW)


@implements(P.LOCK_ACQUIRE)
def acquire(
    ctx: Context, name: str, blocking: bool = True, timeout: float | None = None
) -> Run[bool]:
    return (yield from _OWNED.acquire(ctx, name, blocking, timeout))


@implements(P.LOCK_RELEASE)
def release(ctx: Context, name: str) -> Run[None]:
    yield from _OWNED.release(ctx, name)


def _state(ctx: Context, name: str) -> Run[tuple[bytes, float]]:
    meta, v, _w, _x = keys(ctx, name)
    token, lease_ms = yield on(ctx, _STATE, name, KIND, [v, meta], [])
    return token, int(lease_ms) / 1000.0


@implements(P.LOCK_LOCKED)
def locked(ctx: Context, name: str) -> Run[bool]:
    token, _lease = yield from _state(ctx, name)
    return bool(token)


@implements(P.LOCK_OWNER)
def owner(ctx: Context, name: str) -> Run[dict[str, Any] | None]:
    token, _lease = yield from _state(ctx, name)
    if not token:
        return None
    info = parse_token(token)
    return {"pid": info["pid"], "host": info["host"], "since": info["since"]}


@describes(KIND)
def describe(ctx: Context, name: str) -> Run[dict[str, Any]]:
    token, lease = yield from _state(ctx, name)
    holders = [{"client": None, **parse_token(token)}] if token else []
    return {"holders": holders, "waiters": [], "locked": bool(token), "lease": lease}
