"""What a lock and a semaphore share: acquiring a lease, waiting for one, releasing it.

An acquire runs the kind's acquire script with a fresh owner token.  If
nothing is free it waits on the resource's wake-up list (``BLPOP``), which a
release pushes to, but never longer than the earliest lease's remaining
time to live, because a lease that expires pushes nothing.  Waiters are not
served first come, first served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxyshare._backends.redis import leases
from proxyshare._backends.redis.leases import Holding
from proxyshare._backends.redis.ops.base import Context, deadline_after, keys, on, time_left
from proxyshare._backends.redis.sansio import WAIT_SLICE, BlockingPop, Eval, Run, Script
from proxyshare._errors import ResourceNotFoundError
from proxyshare._rules import check_timeout, deleted_while_waiting, not_reentrant

__all__ = ["Owned", "acquire", "release"]


def acquire(
    ctx: Context,
    name: str,
    kind: str,
    script: Script,
    blocking: object,
    timeout: object,
    renew: Callable[[Holding], Run[bool]],
    give_back: Callable[[Holding], Run[None]],
) -> Run[bool]:
    """Take a lease with ``script`` (KEYS registry, v, meta, w; ARGV name, kind, token).

    The script returns ``{1, lease_ms}`` when taken, else ``{0, ms}``: how long
    until the earliest lease lapses (``-1``: no lease to wait for).
    """
    seconds = check_timeout(blocking, timeout)
    meta, v, w, _x = keys(ctx, name)
    owner = ctx.owner()
    runner = ctx.lease_runner()
    held = leases.here()
    deadline = deadline_after(seconds)
    waited = False
    while True:
        token = held.token(owner)
        try:
            got, wait_ms = yield on(ctx, script, name, kind, [v, meta, w], [token])
        except ResourceNotFoundError:
            if waited:
                raise deleted_while_waiting(kind, name) from None
            raise
        if got:
            lease_ms = int(wait_ms)
            held.add(Holding(runner, name, kind, token, lease_ms, owner, renew, give_back))
            return True
        if not blocking:
            return False
        if not waited and kind == "lock" and seconds is None and held.held((runner, name), owner):
            raise not_reentrant(name)
        wait = time_left(deadline, WAIT_SLICE)
        if wait <= 0:
            return False
        if wait_ms >= 0:  # an expiring lease pushes no wake-up: wait no longer than its TTL
            wait = min(wait, wait_ms / 1000.0)
        waited = True
        if wait > 0:
            yield BlockingPop([w], max(wait, 0.001), name, kind)


def release(ctx: Context, name: str, kind: str, script: Script) -> Run[None]:
    """Give back the caller's newest lease with ``script`` (KEYS registry, v, meta, w;
    ARGV name, kind, token); ``NotOwnerError`` if it holds none."""
    meta, v, w, _x = keys(ctx, name)
    holding = leases.here().pop((ctx.lease_runner(), name), ctx.owner())
    token = holding.token if holding is not None else "-"
    yield on(ctx, script, name, kind, [v, meta, w], [token])


@dataclass(frozen=True)
class Owned:
    """A kind whose units are owned leases (lock, semaphore): its scripts, bound once.

    ``renew``: KEYS v; ARGV token, lease_ms -> 1 if still ours (and extended), else 0.
    """

    kind: str
    acquire_script: Script
    release_script: Script
    renew_script: Script

    def acquire(self, ctx: Context, name: str, blocking: object, timeout: object) -> Run[bool]:
        return (
            yield from acquire(
                ctx, name, self.kind, self.acquire_script, blocking, timeout,
                self._renew, self._give_back,
            )
        )  # fmt: skip

    def release(self, ctx: Context, name: str) -> Run[None]:
        yield from release(ctx, name, self.kind, self.release_script)

    def _renew(self, holding: Holding) -> Run[bool]:
        v = holding.runner.prefix + "v:" + holding.name
        return bool((yield Eval(self.renew_script, [v], [holding.token, holding.lease_ms])))

    def _give_back(self, holding: Holding) -> Run[None]:
        meta, v, w, _x = keys(holding.runner, holding.name)
        token = [holding.token]
        yield on(holding.runner, self.release_script, holding.name, self.kind, [v, meta, w], token)
