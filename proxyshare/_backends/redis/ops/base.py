"""What every Redis operation shares: its registration, its context, keys and Lua preludes.

Keys, for prefix ``p`` and resource name ``n`` (every key sits under ``p``)::

    p + "registry"     hash     name -> kind: the source of truth for names and kinds
    p + "meta:" + n    hash     options fixed at creation (lease, maxsize, value, closed)
    p + "v:" + n       value    counter: string; dict: hash; queue: list; lock: string
                                (owner token, SET NX PX); semaphore: sorted set of owner
                                tokens scored by lease expiry; event: string
    p + "w:" + n       list     wake-up tokens for lock/semaphore waiters and queue putters
    p + "x:" + n       list     the "queue closed" signal for blocked getters
    p + "ch:" + n      channel  pub/sub channel an event's waiters listen on

Every resource script starts with :data:`CHECK`, so a name used as another
kind, or deleted, is refused by Redis itself in the same atomic step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from proxyshare._backends.redis.leases import Owner, Runner
from proxyshare._backends.redis.sansio import Eval, Run, Script
from proxyshare._protocol import Op

__all__ = [
    "CHECK",
    "DESCRIBERS",
    "IMPLEMENTATIONS",
    "NOW",
    "UNSUPPORTED",
    "WAKE",
    "Context",
    "Implementation",
    "Keyspace",
    "deadline_after",
    "describes",
    "implements",
    "keys",
    "on",
    "resource_script",
    "time_left",
    "unsupported",
]

R = TypeVar("R")

#: An operation's implementation: ``(ctx, name, *args)`` -> a run of commands.
Implementation = Callable[..., Run[Any]]

#: op code -> its one implementation (``implements``).
IMPLEMENTATIONS: dict[int, Implementation] = {}

#: op code -> why this backend does not offer it (``unsupported``).
UNSUPPORTED: dict[int, str] = {}

#: kind -> ``(ctx, name)`` -> a run returning the resource's ``status()`` fields.
DESCRIBERS: dict[str, Callable[[Context, str], Run[dict[str, Any]]]] = {}


def implements(op: Op[R]) -> Callable[[Callable[..., Run[R]]], Callable[..., Run[R]]]:
    """Register the decorated generator as the Redis implementation of ``op``."""

    def register(function: Callable[..., Run[R]]) -> Callable[..., Run[R]]:
        if op.code in IMPLEMENTATIONS or op.code in UNSUPPORTED:
            raise RuntimeError(f"{op!r} has two Redis implementations")
        IMPLEMENTATIONS[op.code] = function
        return function

    return register


def unsupported(op: Op[Any], why: str) -> None:
    """Declare that the Redis backend does not offer ``op``, and why (the error says so)."""
    if op.code in IMPLEMENTATIONS or op.code in UNSUPPORTED:
        raise RuntimeError(f"{op!r} is declared twice on Redis")
    UNSUPPORTED[op.code] = why


def describes(
    kind: str,
) -> Callable[
    [Callable[[Context, str], Run[dict[str, Any]]]], Callable[[Context, str], Run[dict[str, Any]]]
]:
    """Register the decorated generator as the ``status()`` reader of ``kind``."""

    def register(
        function: Callable[[Context, str], Run[dict[str, Any]]],
    ) -> Callable[[Context, str], Run[dict[str, Any]]]:
        DESCRIBERS[kind] = function
        return function

    return register


class Keyspace(Protocol):
    """Where a backend's keys are: a prefix, and the registry's key (prefix + "registry")."""

    prefix: str
    registry: str


class Context(Keyspace, Protocol):
    """What an operation may ask of whoever runs it (``RedisTransport`` today)."""

    @property
    def address(self) -> str:
        """The server's URL without its password (for ``status()``)."""
        ...

    def owner(self) -> Owner:
        """Who is calling: the owner of what this call acquires or releases."""
        ...

    def lease_runner(self) -> Runner:
        """What the renewer thread runs this owner's renewals and give-backs with."""
        ...


def keys(ctx: Keyspace, name: str) -> tuple[str, str, str, str]:
    """``(meta, v, w, x)`` keys of resource ``name``."""
    p = ctx.prefix
    return (p + "meta:" + name, p + "v:" + name, p + "w:" + name, p + "x:" + name)


def on(
    ctx: Keyspace, script: Script, name: str, kind: str, resource_keys: list[str], args: list[Any]
) -> Eval:
    """Run a ``resource_script`` on ``name``, checking that it is a ``kind``."""
    return Eval(script, [ctx.registry, *resource_keys], [name, kind, *args], name, kind)


def deadline_after(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def time_left(deadline: float | None, cap: float) -> float:
    """How long the next wait may last: at most ``cap``; ``<= 0`` once the time is up."""
    if deadline is None:
        return cap
    return min(cap, deadline - time.monotonic())


# -- Lua preludes ---------------------------------------------------------------------

#: KEYS[1] is the registry, ARGV[1] the name, ARGV[2] the expected kind.
#: Refuses with ``PSKIND <found>`` (``-`` when there is no such name).
CHECK = """
local found = redis.call('HGET', KEYS[1], ARGV[1])
if found ~= ARGV[2] then return redis.error_reply('PSKIND ' .. (found or '-')) end
"""

#: ``wake(key, cap)``: leave a wake-up token in list ``key`` for one blocked
#: waiter, keeping at most ``cap`` tokens.
WAKE = """
local function wake(key, cap)
  redis.call('RPUSH', key, 1)
  redis.call('LTRIM', key, 0, math.max(cap, 1) - 1)
end
"""

#: ``now``: Redis's clock in milliseconds (the same for every client).
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""


def resource_script(body: str, *preludes: str) -> Script:
    """A script on one resource: ``CHECK``, then ``preludes``, then ``body``.

    KEYS[1] is the registry, ARGV[1] the name and ARGV[2] the kind; the
    operation's own keys and arguments start at KEYS[2] and ARGV[3].
    """
    return Script(CHECK + "".join(preludes) + body)
