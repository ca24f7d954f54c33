"""Queue operations on Redis: a list of pickled items, bounded by ``maxsize`` in ``meta``.

Blocked getters wait in ``BLPOP`` on the list itself and on the "closed"
list ``x`` (which ``close()`` fills), so an item or a close wakes them at
once; blocked putters wait on the wake-up list ``w``, which every get of a
bounded queue pushes to.  An item taken by a getter killed before its reply
arrives is lost (the served queue puts it back).
"""

from __future__ import annotations

import queue as _queue
from typing import Any

from proxyshare import _protocol as P
from proxyshare._backends.redis.codec import dumps, loads
from proxyshare._backends.redis.ops.base import (
    WAKE,
    Context,
    deadline_after,
    describes,
    implements,
    keys,
    on,
    resource_script,
    time_left,
)
from proxyshare._backends.redis.sansio import WAIT_SLICE, BlockingPop, Call, Eval, Run, Script
from proxyshare._errors import ResourceNotFoundError
from proxyshare._rules import (
    check_max_items,
    check_queue_timeout,
    deleted_while_waiting,
    queue_closed_and_empty,
)

__all__ = ["close", "describe", "get", "get_many", "info", "put", "put_many", "qsize", "unget"]

KIND = "queue"

# KEYS registry, v, meta, w, x; ARGV name, kind, item  -> 1 if added, 0 if full; PSCLOSED
_PUT = resource_script(
    """
if redis.call('HGET', KEYS[3], 'closed') then
  wake(KEYS[4], 1)  -- pass the news on to the next blocked putter
  return redis.error_reply('PSCLOSED')
end
local max = tonumber(redis.call('HGET', KEYS[3], 'maxsize'))
if max > 0 and redis.call('LLEN', KEYS[2]) >= max then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[3])
return 1
""",
    WAKE,
)

# KEYS registry, v, meta, w, x; ARGV name, kind, item, item, ...
# -> 1 if all were added, 0 if they do not fit; PSCLOSED
_PUT_MANY = resource_script(
    """
if redis.call('HGET', KEYS[3], 'closed') then return redis.error_reply('PSCLOSED') end
local max = tonumber(redis.call('HGET', KEYS[3], 'maxsize'))
local size = redis.call('LLEN', KEYS[2])
-- all or nothing, as served: a bounded queue takes the batch once it fits
-- (an empty queue takes any batch)
if max > 0 and size > 0 and size + #ARGV - 2 > max then return 0 end
for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""
)

# KEYS registry, v, meta, w, x; ARGV name, kind, count
# -> {1, {items}} | {2} closed and empty | {0} empty
_GET = resource_script(
    """
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
""",
    WAKE,
)

# KEYS registry, v, meta, w, x; ARGV name, kind
# After a BLPOP took an item: a bounded queue has room now.
_TAKEN = resource_script(
    """
local max = tonumber(redis.call('HGET', KEYS[3], 'maxsize'))
if max > 0 then wake(KEYS[4], max) end
return 1
""",
    WAKE,
)

# KEYS registry, v, meta, w, x; ARGV name, kind  -> {size, maxsize, closed (0/1)}
_INFO = resource_script(
    """
local closed = 0
if redis.call('HGET', KEYS[3], 'closed') then closed = 1 end
return {redis.call('LLEN', KEYS[2]), tonumber(redis.call('HGET', KEYS[3], 'maxsize')), closed}
"""
)

# KEYS registry, v, meta, w, x; ARGV name, kind
_CLOSE = resource_script(
    """
redis.call('HSET', KEYS[3], 'closed', 1)
if redis.call('LLEN', KEYS[5]) == 0 then redis.call('RPUSH', KEYS[5], 1) end
wake(KEYS[4], 1)
return 1
""",
    WAKE,
)


def _keys(ctx: Context, name: str) -> list[str]:
    meta, v, w, x = keys(ctx, name)
    return [v, meta, w, x]


def _on(ctx: Context, script: Script, name: str, args: list[Any]) -> Eval:
    return on(ctx, script, name, KIND, _keys(ctx, name), args)


def _add(
    ctx: Context, name: str, script: Script, data: list[bytes], block: bool, seconds: float | None
) -> Run[None]:
    """Run ``script`` until it has added ``data``, waiting for room while blocking."""
    deadline = deadline_after(seconds)
    waited = False
    while True:
        try:
            added = yield _on(ctx, script, name, data)
        except ResourceNotFoundError:
            if waited:
                raise deleted_while_waiting(KIND, name) from None
            raise
        if added:
            return
        if not block:
            raise _queue.Full
        wait = time_left(deadline, WAIT_SLICE)
        if wait <= 0:
            raise _queue.Full
        waited = True
        yield BlockingPop([ctx.prefix + "w:" + name], max(wait, 0.001), name, KIND)


@implements(P.QUEUE_PUT)
def put(
    ctx: Context, name: str, item: Any, block: bool = True, timeout: float | None = None
) -> Run[None]:
    seconds = check_queue_timeout(block, timeout)
    yield from _add(ctx, name, _PUT, [dumps(item)], bool(block), seconds)


@implements(P.QUEUE_PUT_MANY)
def put_many(
    ctx: Context, name: str, items: list[Any], block: bool = True, timeout: float | None = None
) -> Run[None]:
    if not isinstance(items, list):
        raise TypeError(f"put_many() needs a list of items, not {type(items).__name__}")
    seconds = check_queue_timeout(block, timeout)
    data = [dumps(item) for item in items]
    if not data:
        yield from info(ctx, name)  # nothing to add; still refuse a wrong name or kind
        return
    yield from _add(ctx, name, _PUT_MANY, data, bool(block), seconds)


def _take(ctx: Context, name: str, count: int, block: bool, seconds: float | None) -> Run[Any]:
    """Up to ``count`` items; [] when it stays empty until the timeout; None once closed."""
    deadline = deadline_after(seconds)
    v, _meta, _w, x = qkeys = _keys(ctx, name)
    waited = False
    while True:
        try:
            reply = yield on(ctx, _GET, name, KIND, qkeys, [count])
        except ResourceNotFoundError:
            if waited:
                raise deleted_while_waiting(KIND, name) from None
            raise
        if reply[0] == 1:
            return [loads(item) for item in reply[1]]
        if reply[0] == 2:
            return None
        if not block:
            return []
        wait = time_left(deadline, WAIT_SLICE)
        if wait <= 0:
            return []
        waited = True
        popped = yield BlockingPop([v, x], max(wait, 0.001), name, KIND)
        if popped is not None and popped[0].decode() == v:
            yield on(ctx, _TAKEN, name, KIND, qkeys, [])
            items = [loads(popped[1])]
            if count > 1:
                more = yield on(ctx, _GET, name, KIND, qkeys, [count - 1])
                if more[0] == 1:
                    items.extend(loads(item) for item in more[1])
            return items
        # timed out, or the close signal (which _GET puts back): look again


@implements(P.QUEUE_GET)
def get(ctx: Context, name: str, block: bool = True, timeout: float | None = None) -> Run[Any]:
    seconds = check_queue_timeout(block, timeout)
    items = yield from _take(ctx, name, 1, bool(block), seconds)
    if items is None:
        raise queue_closed_and_empty(name)
    if not items:
        raise _queue.Empty
    return items[0]


@implements(P.QUEUE_GET_MANY)
def get_many(
    ctx: Context, name: str, max_items: int, timeout: float | None = None
) -> Run[list[Any]]:
    count = check_max_items(max_items)
    seconds = check_queue_timeout(True, timeout)
    items = yield from _take(ctx, name, count, True, seconds)
    return items or []


@implements(P.QUEUE_INFO)
def info(ctx: Context, name: str) -> Run[tuple[int, int, bool]]:
    size, maxsize, closed = yield _on(ctx, _INFO, name, [])
    return (int(size), int(maxsize), bool(closed))


@implements(P.QUEUE_SIZE)
def qsize(ctx: Context, name: str) -> Run[int]:
    size, _maxsize, _closed = yield from info(ctx, name)
    return size


@implements(P.QUEUE_CLOSE)
def close(ctx: Context, name: str) -> Run[None]:
    yield _on(ctx, _CLOSE, name, [])


def unget(ctx: Context, name: str, items: list[Any]) -> Run[None]:
    """Put back, at the front and in order, items a get took whose caller was cancelled
    before it could return them (the served queue's ``unget``; no op code: the asyncio
    driver runs it to undo a cancelled get)."""
    if items:
        v = keys(ctx, name)[1]
        yield Call("LPUSH", v, *[dumps(item) for item in reversed(items)], name=name, kind=KIND)


@describes(KIND)
def describe(ctx: Context, name: str) -> Run[dict[str, Any]]:
    size, maxsize, closed = yield from info(ctx, name)
    return {"size": size, "maxsize": maxsize, "closed": closed}
