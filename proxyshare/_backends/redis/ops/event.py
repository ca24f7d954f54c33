"""Event operations on Redis: a string key that exists while the event is set.

``set()`` also publishes ``1`` on the event's channel, and deleting the
event publishes ``0``; a waiter subscribes *before* it looks at the flag, so
a ``set()`` in between is not missed.
"""

from __future__ import annotations

from typing import Any

from proxyshare import _protocol as P
from proxyshare._backends.redis.ops.base import (
    Context,
    deadline_after,
    describes,
    implements,
    on,
    resource_script,
    time_left,
)
from proxyshare._backends.redis.sansio import WAIT_SLICE, NextMessage, Run, Subscribe
from proxyshare._errors import ResourceNotFoundError
from proxyshare._rules import check_timeout, deleted_while_waiting

__all__ = ["clear", "describe", "is_set", "set_flag", "wait"]

KIND = "event"

# KEYS registry, v; ARGV name, kind, channel
_SET = resource_script("redis.call('SET', KEYS[2], 1) redis.call('PUBLISH', ARGV[3], 1) return 1")

# KEYS registry, v; ARGV name, kind
_CLEAR = resource_script("redis.call('DEL', KEYS[2]) return 1")

# KEYS registry, v; ARGV name, kind  -> 1 if set
_IS_SET = resource_script("return redis.call('EXISTS', KEYS[2])")


@implements(P.EVENT_SET)
def set_flag(ctx: Context, name: str) -> Run[None]:
    channel = ctx.prefix + "ch:" + name
    yield on(ctx, _SET, name, KIND, [ctx.prefix + "v:" + name], [channel])


@implements(P.EVENT_CLEAR)
def clear(ctx: Context, name: str) -> Run[None]:
    yield on(ctx, _CLEAR, name, KIND, [ctx.prefix + "v:" + name], [])


@implements(P.EVENT_IS_SET)
def is_set(ctx: Context, name: str) -> Run[bool]:
    return bool((yield on(ctx, _IS_SET, name, KIND, [ctx.prefix + "v:" + name], [])))


@implements(P.EVENT_WAIT)
def wait(ctx: Context, name: str, timeout: float | None = None) -> Run[bool]:
    """True once set (even if cleared again at once); False if ``timeout`` ran out."""
    deadline = deadline_after(check_timeout(True, timeout))
    if (yield from is_set(ctx, name)):
        return True  # no need to subscribe
    if time_left(deadline, WAIT_SLICE) <= 0:
        return False
    yield Subscribe(ctx.prefix + "ch:" + name, name, KIND)
    while True:
        try:
            if (yield from is_set(ctx, name)):  # again: it may have been set before we listened
                return True
        except ResourceNotFoundError:
            raise deleted_while_waiting(KIND, name) from None
        left = time_left(deadline, WAIT_SLICE)
        if left <= 0:
            return False
        if (yield NextMessage(left, name, KIND)) == b"1":
            return True
        # timed out, or the event was deleted: look again


@describes(KIND)
def describe(ctx: Context, name: str) -> Run[dict[str, Any]]:
    return {"set": (yield from is_set(ctx, name))}
