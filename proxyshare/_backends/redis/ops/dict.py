"""Dict operations on Redis: a hash of encoded keys to encoded values (see ``codec.py``)."""

from __future__ import annotations

from typing import Any

from proxyshare import _protocol as P
from proxyshare._backends.redis.codec import dump_key, dump_value, load_key, load_value
from proxyshare._backends.redis.ops.base import Context, describes, implements, on, resource_script
from proxyshare._backends.redis.sansio import Eval, Run, Script
from proxyshare._rules import INT64_MAX, INT64_MIN, cannot_increment, check_int

__all__ = [
    "clear",
    "compare_and_set",
    "contains",
    "delete",
    "describe",
    "get",
    "get_default",
    "increment",
    "keys",
    "length",
    "pop",
    "set_item",
    "setdefault",
    "snapshot",
    "update",
]

KIND = "dict"

# KEYS registry, v; ARGV name, kind, field  -> {1, value} | {0} if absent
_GET = resource_script(
    "local v = redis.call('HGET', KEYS[2], ARGV[3]) if v then return {1, v} end return {0}"
)

# KEYS registry, v; ARGV name, kind, field, value
_SET = resource_script("redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) return 1")

# KEYS registry, v; ARGV name, kind, field  -> 1 if it was there
_DEL = resource_script("return redis.call('HDEL', KEYS[2], ARGV[3])")

# KEYS registry, v; ARGV name, kind
_LEN = resource_script("return redis.call('HLEN', KEYS[2])")

# KEYS registry, v; ARGV name, kind, field
_CONTAINS = resource_script("return redis.call('HEXISTS', KEYS[2], ARGV[3])")

# KEYS registry, v; ARGV name, kind  -> {field, value, field, value, ...}
_ALL = resource_script("return redis.call('HGETALL', KEYS[2])")

# KEYS registry, v; ARGV name, kind, cursor  -> {next cursor, {field, value, ...}}
_SCAN = resource_script("return redis.call('HSCAN', KEYS[2], ARGV[3], 'COUNT', 500)")

# KEYS registry, v; ARGV name, kind, field  -> {1, value} | {0} if absent
_POP = resource_script(
    """
local v = redis.call('HGET', KEYS[2], ARGV[3])
if not v then return {0} end
redis.call('HDEL', KEYS[2], ARGV[3])
return {1, v}
"""
)

# KEYS registry, v; ARGV name, kind, field, default  -> the value now stored
_SETDEFAULT = resource_script(
    "redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) return redis.call('HGET', KEYS[2], ARGV[3])"
)

# KEYS registry, v; ARGV name, kind, field, value, field, value, ...
_UPDATE = resource_script(
    """
for i = 3, #ARGV, 1000 do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""
)

# KEYS registry, v; ARGV name, kind
_CLEAR = resource_script("redis.call('DEL', KEYS[2]) return 1")

# KEYS registry, v; ARGV name, kind, field, n, default (encoded), default + n (or '')
# -> {1, new value} | {0, the value found (or the default): not a 64-bit int}
# Nothing is written unless the result is: an absent key whose default + n
# overflows gets the same error as HINCRBY's.
_INCR = resource_script(
    """
local v = redis.call('HGET', KEYS[2], ARGV[3])
if not v then
  if string.byte(ARGV[5], 1) == 128 then return {0, ARGV[5]} end
  if ARGV[6] == '' then return redis.error_reply('ERR increment or decrement would overflow') end
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[6])
  return {1, ARGV[6]}
end
if string.byte(v, 1) == 128 then return {0, v} end
redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[4])
return {1, redis.call('HGET', KEYS[2], ARGV[3])}
"""
)

# KEYS registry, v; ARGV name, kind, field, expected, new  -> 1 if set
_CAS = resource_script(
    """
if redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
return 1
"""
)


def _on(ctx: Context, script: Script, name: str, *args: Any) -> Eval:
    return on(ctx, script, name, KIND, [ctx.prefix + "v:" + name], list(args))


@implements(P.DICT_GET)
def get(ctx: Context, name: str, key: Any) -> Run[Any]:
    reply = yield _on(ctx, _GET, name, dump_key(key))
    if not reply[0]:
        raise KeyError(key)
    return load_value(reply[1])


@implements(P.DICT_GET_DEFAULT)
def get_default(ctx: Context, name: str, key: Any, default: Any = None) -> Run[Any]:
    reply = yield _on(ctx, _GET, name, dump_key(key))
    return load_value(reply[1]) if reply[0] else default


@implements(P.DICT_SET)
def set_item(ctx: Context, name: str, key: Any, value: Any) -> Run[None]:
    yield _on(ctx, _SET, name, dump_key(key), dump_value(value))


@implements(P.DICT_DEL)
def delete(ctx: Context, name: str, key: Any) -> Run[None]:
    if not (yield _on(ctx, _DEL, name, dump_key(key))):
        raise KeyError(key)


@implements(P.DICT_LEN)
def length(ctx: Context, name: str) -> Run[int]:
    return int((yield _on(ctx, _LEN, name)))


@implements(P.DICT_CONTAINS)
def contains(ctx: Context, name: str, key: Any) -> Run[bool]:
    return bool((yield _on(ctx, _CONTAINS, name, dump_key(key))))


@implements(P.DICT_SNAPSHOT)
def snapshot(ctx: Context, name: str) -> Run[dict[Any, Any]]:
    flat = yield _on(ctx, _ALL, name)
    return {load_key(flat[i]): load_value(flat[i + 1]) for i in range(0, len(flat), 2)}


@implements(P.DICT_KEYS)
def keys(ctx: Context, name: str) -> Run[list[Any]]:
    """Every key, by ``HSCAN`` pages (Redis is never blocked on a big hash)."""
    seen: dict[bytes, None] = {}  # HSCAN may return a field twice
    cursor: Any = 0
    while True:
        cursor, flat = yield _on(ctx, _SCAN, name, cursor)
        for i in range(0, len(flat), 2):
            seen.setdefault(flat[i])
        if int(cursor) == 0:
            return [load_key(field) for field in seen]


@implements(P.DICT_POP)
def pop(
    ctx: Context, name: str, key: Any, has_default: bool = False, default: Any = None
) -> Run[Any]:
    reply = yield _on(ctx, _POP, name, dump_key(key))
    if reply[0]:
        return load_value(reply[1])
    if has_default:
        return default
    raise KeyError(key)


@implements(P.DICT_SETDEFAULT)
def setdefault(ctx: Context, name: str, key: Any, default: Any = None) -> Run[Any]:
    return load_value((yield _on(ctx, _SETDEFAULT, name, dump_key(key), dump_value(default))))


@implements(P.DICT_UPDATE)
def update(ctx: Context, name: str, items: dict[Any, Any]) -> Run[None]:
    if not isinstance(items, dict):
        raise TypeError(f"update() needs a dict, not {type(items).__name__}")
    flat: list[bytes] = []
    for key, value in items.items():
        flat += (dump_key(key), dump_value(value))
    if not flat:
        yield from length(ctx, name)  # nothing to add; still refuse a wrong name or kind
        return
    yield _on(ctx, _UPDATE, name, *flat)


@implements(P.DICT_CLEAR)
def clear(ctx: Context, name: str) -> Run[None]:
    yield _on(ctx, _CLEAR, name)


@implements(P.DICT_INCR)
def increment(ctx: Context, name: str, key: Any, n: int = 1, default: int = 0) -> Run[int]:
    n = check_int(n, "increment(n)", bits64=True)
    default = check_int(default, "increment(default)", bits64=True)
    total = ""  # default + n, the new value of an absent key, if it fits in 64 bits
    if INT64_MIN <= default + n <= INT64_MAX:
        total = str(default + n)
    reply = yield _on(ctx, _INCR, name, dump_key(key), n, dump_value(default), total)
    if reply[0]:
        return int(reply[1])
    found = load_value(reply[1])
    if isinstance(found, int) and not isinstance(found, bool):
        raise OverflowError(
            f"dict {name!r}: cannot increment key {key!r}: its value {found} does not fit in "
            "64 bits on this backend; the value is unchanged"
        )
    raise cannot_increment(name, key)


@implements(P.DICT_CAS)
def compare_and_set(ctx: Context, name: str, key: Any, expected: Any, new: Any) -> Run[bool]:
    field, want, value = dump_key(key), dump_value(expected), dump_value(new)
    return bool((yield _on(ctx, _CAS, name, field, want, value)))


@describes(KIND)
def describe(ctx: Context, name: str) -> Run[dict[str, Any]]:
    return {"size": (yield from length(ctx, name))}
