"""Counter operations on Redis: a string key holding a 64-bit signed integer.

Each operation is one script; results that may exceed 2**53 are read back
with ``GET`` (Lua numbers are doubles, so an ``INCRBY`` reply passed through
Lua would lose precision).
"""

from __future__ import annotations

from typing import Any

from proxyshare import _protocol as P
from proxyshare._backends.redis.ops.base import Context, describes, implements, on, resource_script
from proxyshare._backends.redis.sansio import Run
from proxyshare._rules import INT64_MAX, INT64_MIN, check_int

__all__ = ["add", "compare_and_set", "describe", "get", "get_and_set", "set_value", "sub"]

KIND = "counter"

# KEYS registry, v; ARGV name, kind
_GET = resource_script("return redis.call('GET', KEYS[2])")

# KEYS registry, v; ARGV name, kind, n
_ADD = resource_script("redis.call('INCRBY', KEYS[2], ARGV[3]) return redis.call('GET', KEYS[2])")

# KEYS registry, v; ARGV name, kind, n  (DECRBY, not INCRBY -n: -(-2**63) is not 64-bit)
_SUB = resource_script("redis.call('DECRBY', KEYS[2], ARGV[3]) return redis.call('GET', KEYS[2])")

# KEYS registry, v; ARGV name, kind, value
_SET = resource_script("redis.call('SET', KEYS[2], ARGV[3]) return 1")

# KEYS registry, v; ARGV name, kind, expected, new  -> 1 if set
_CAS = resource_script(
    """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[2], ARGV[4])
return 1
"""
)

# KEYS registry, v; ARGV name, kind, new  -> the old value
_SWAP = resource_script("return redis.call('SET', KEYS[2], ARGV[3], 'GET')")


def _int(reply: Any) -> int:
    return 0 if reply is None else int(reply)


@implements(P.COUNTER_GET)
def get(ctx: Context, name: str) -> Run[int]:
    return _int((yield on(ctx, _GET, name, KIND, [ctx.prefix + "v:" + name], [])))


@implements(P.COUNTER_ADD)
def add(ctx: Context, name: str, n: int = 1) -> Run[int]:
    n = check_int(n, "increment(n)", bits64=True)
    return int((yield on(ctx, _ADD, name, KIND, [ctx.prefix + "v:" + name], [n])))


@implements(P.COUNTER_SUB)
def sub(ctx: Context, name: str, n: int = 1) -> Run[int]:
    n = check_int(n, "decrement(n)", bits64=True)
    return int((yield on(ctx, _SUB, name, KIND, [ctx.prefix + "v:" + name], [n])))


@implements(P.COUNTER_SET)
def set_value(ctx: Context, name: str, value: int) -> Run[None]:
    value = check_int(value, "set(value)", bits64=True)
    yield on(ctx, _SET, name, KIND, [ctx.prefix + "v:" + name], [value])


@implements(P.COUNTER_CAS)
def compare_and_set(ctx: Context, name: str, expected: Any, new: int) -> Run[bool]:
    new = check_int(new, "compare_and_set(new)", bits64=True)
    if isinstance(expected, float) and expected.is_integer():
        expected = int(expected)  # 5.0 == 5, as on the served counter
    if not isinstance(expected, int) or not INT64_MIN <= expected <= INT64_MAX:
        # Never equal to a stored 64-bit int; still refuse a wrong name or kind.
        yield from get(ctx, name)
        return False
    reply = yield on(ctx, _CAS, name, KIND, [ctx.prefix + "v:" + name], [int(expected), new])
    return bool(reply)


@implements(P.COUNTER_SWAP)
def get_and_set(ctx: Context, name: str, new: int) -> Run[int]:
    new = check_int(new, "get_and_set(new)", bits64=True)
    return _int((yield on(ctx, _SWAP, name, KIND, [ctx.prefix + "v:" + name], [new])))


@describes(KIND)
def describe(ctx: Context, name: str) -> Run[dict[str, Any]]:
    return {"value": (yield from get(ctx, name))}
