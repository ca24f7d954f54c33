"""Cancelling a task that waits leaves nothing held or taken, is never granted
later, and disturbs no other lock, not even one the same task holds.

Each blocking call is cancelled three ways: ``task.cancel()`` on a deadline,
``asyncio.wait_for`` and (Python 3.11+) ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

import proxyshare
from proxyshare import aio
from tests.aio.conftest import Target
from tests.aio.helpers import connect, eventually, resource, run

pytestmark = pytest.mark.timeout(60)

Wait = Callable[[], Awaitable[Any]]


@asynccontextmanager
async def held_by_another_task(
    take: Callable[[], Awaitable[Any]], give: Callable[[], Awaitable[Any]]
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Another task holds a lock or permit until ``free()`` (or the block's end)."""
    taken, free = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        await take()
        taken.set()
        await free.wait()
        await give()

    holder = asyncio.create_task(hold())
    await asyncio.wait_for(taken.wait(), 10)

    async def release() -> None:
        free.set()
        await asyncio.wait_for(holder, 10)

    try:
        yield release
    finally:
        free.set()
        await asyncio.wait_for(holder, 10)


# (how to make the call wait, and how to check afterwards that nothing changed)
Case = Callable[[aio.AsyncManager, bool], AbstractAsyncContextManager[tuple[Wait, Any]]]


@asynccontextmanager
async def lock_case(mgr: aio.AsyncManager, served: bool) -> AsyncIterator[tuple[Wait, Any]]:
    lock = await mgr.lock("busy")
    async with held_by_another_task(lock.acquire, lock.release) as free:

        async def check() -> None:
            if served:
                assert (await resource(mgr, "busy"))["waiters"] == []  # it left the FIFO
            await free()
            assert not await lock.locked()  # never granted later

        yield lock.acquire, check


@asynccontextmanager
async def semaphore_case(mgr: aio.AsyncManager, served: bool) -> AsyncIterator[tuple[Wait, Any]]:
    sem = await mgr.semaphore("busy", 1)
    async with held_by_another_task(sem.acquire, sem.release) as free:

        async def check() -> None:
            if served:
                assert (await resource(mgr, "busy"))["waiters"] == []
            await free()
            assert await sem.value() == 1

        yield sem.acquire, check


@asynccontextmanager
async def queue_get_case(mgr: aio.AsyncManager, served: bool) -> AsyncIterator[tuple[Wait, Any]]:
    q = await mgr.queue("busy")

    async def check() -> None:
        await q.put("item")
        assert await q.get(timeout=5) == "item"  # not taken by the cancelled get

    yield q.get, check


@asynccontextmanager
async def queue_get_many_case(
    mgr: aio.AsyncManager, served: bool
) -> AsyncIterator[tuple[Wait, Any]]:
    q = await mgr.queue("busy")

    async def check() -> None:
        await q.put_many(["a", "b"])
        assert await q.get_many(10, timeout=5) == ["a", "b"]

    yield (lambda: q.get_many(5)), check


@asynccontextmanager
async def queue_put_case(mgr: aio.AsyncManager, served: bool) -> AsyncIterator[tuple[Wait, Any]]:
    q = await mgr.queue("busy", maxsize=1)
    await q.put("first")

    async def check() -> None:
        assert await q.get_many(10) == ["first"]  # nothing added

    yield (lambda: q.put("second")), check


@asynccontextmanager
async def event_case(mgr: aio.AsyncManager, served: bool) -> AsyncIterator[tuple[Wait, Any]]:
    ev = await mgr.event("busy")

    async def check() -> None:
        if served:
            assert (await resource(mgr, "busy"))["waiting"] == 0

    yield ev.wait, check


@asynccontextmanager
async def barrier_case(mgr: aio.AsyncManager, served: bool) -> AsyncIterator[tuple[Wait, Any]]:
    barrier = await mgr.barrier("busy", 2)

    async def check() -> None:
        assert await barrier.n_waiting() == 0

    yield barrier.wait, check


CASES: dict[str, Case] = {
    "lock.acquire": lock_case,
    "semaphore.acquire": semaphore_case,
    "queue.get": queue_get_case,
    "queue.get_many": queue_get_many_case,
    "queue.put": queue_put_case,
    "event.wait": event_case,
    "barrier.wait": barrier_case,
}


async def cancel_directly(call: Wait) -> None:
    task = asyncio.current_task()
    assert task is not None
    handle = asyncio.get_running_loop().call_later(0.2, task.cancel)
    try:
        await call()
    finally:
        handle.cancel()


async def cancel_by_wait_for(call: Wait) -> None:
    await asyncio.wait_for(call(), 0.2)


async def cancel_by_timeout(call: Wait) -> None:
    async with asyncio.timeout(0.2):  # type: ignore[attr-defined]  # 3.11+
        await call()


HOW = {
    "cancel": (cancel_directly, asyncio.CancelledError),
    "wait_for": (cancel_by_wait_for, asyncio.TimeoutError),
    "timeout": pytest.param(
        (cancel_by_timeout, TimeoutError),
        marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+"),
    ),
}


@pytest.mark.parametrize("how", list(HOW.values()), ids=list(HOW))
@pytest.mark.parametrize("wait", list(CASES))
def test_a_cancelled_wait_takes_nothing_and_the_task_keeps_its_other_lock(
    target: Target, wait: str, how: tuple[Any, type[BaseException]]
) -> None:
    if wait == "barrier.wait" and target.name == "redis":
        pytest.skip("no barriers on Redis")
    cancel, raised = how
    served = target.name == "served"

    async def victim(mgr: aio.AsyncManager, call: Wait) -> None:
        kept = await mgr.lock("kept")
        await kept.acquire()
        transport: Any = mgr.transport
        task = asyncio.current_task()
        connection = transport._pinned[task] if served else None
        with pytest.raises(raised):
            await cancel(call)
        if served:  # the same connection, in step, still the holder of the other lock
            assert transport._pinned[task] is connection and not connection.closed
        owner = await kept.owner()
        assert owner is not None and owner["pid"] == os.getpid()
        await kept.release()  # no NotOwnerError: this task still held it

    async def main() -> None:
        async with target.connect() as mgr:
            async with CASES[wait](mgr, served) as (call, check):
                await asyncio.create_task(victim(mgr, call))
                await check()
            assert not await (await mgr.lock("kept")).locked()

    run(main())


def test_a_wait_cancelled_as_it_is_granted_never_leaves_the_lock_taken(target: Target) -> None:
    """Cancel waiters at the moment the holder lets go, many times over: whichever
    way each race ends, the lock ends up free and nobody holds a phantom."""

    async def main() -> None:
        async with target.connect() as mgr:
            lock = await mgr.lock("race")
            for round_ in range(30):
                await lock.acquire()
                waiter = asyncio.create_task(lock.acquire())
                for _ in range(round_ % 4):  # vary how far the waiter has got
                    await asyncio.sleep(0)
                await asyncio.sleep(0.002 * (round_ % 3))
                await lock.release()
                waiter.cancel()
                outcome = await asyncio.gather(waiter, return_exceptions=True)
                if outcome == [True]:  # it won before the cancel landed: it ended holding it
                    await eventually(lambda: _free(lock))
                assert await _free_soon(lock), f"round {round_}: the lock stayed taken"

    run(main(), timeout=120)


async def _free(lock: aio.Lock) -> bool:
    return not await lock.locked()


async def _free_soon(lock: aio.Lock) -> bool:
    return bool(await eventually(lambda: _free(lock), timeout=5))


def test_other_tasks_keep_what_they_hold_when_one_is_cancelled(
    manager: proxyshare.ShareManager,
) -> None:
    async def main() -> None:
        async with connect(manager) as mgr:
            locks = [await mgr.lock(f"held{i}") for i in range(5)]
            busy = await mgr.lock("busy")
            go = asyncio.Event()

            async def hold(lock: aio.Lock) -> bool:
                async with lock:
                    await go.wait()
                    return bool(await lock.locked())

            holders = [asyncio.create_task(hold(lock)) for lock in locks]
            for lock in locks:
                await eventually(lock.locked)
            await busy.acquire()
            waiters = [asyncio.create_task(busy.acquire()) for _ in range(10)]
            await eventually(lambda: _n_waiters(mgr, "busy", 10))
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            assert (await resource(mgr, "busy"))["waiters"] == []
            go.set()
            assert await asyncio.gather(*holders) == [True] * 5
            await busy.release()
            assert not await busy.locked()

    run(main())


async def _n_waiters(mgr: aio.AsyncManager, name: str, n: int) -> bool:
    return len((await resource(mgr, name))["waiters"]) == n


def _cancel_as_the_reply_arrives(mgr: aio.AsyncManager, task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` right after its connection reads the reply, before the task
    wakes up to take it: the cancel and the reply cross."""
    transport: Any = mgr.transport
    (conn,) = [c for c in transport._all if c._waiter is not None]
    frame = conn._frame

    def crossing(data: bytes) -> None:
        frame(data)
        if not task.done():
            task.cancel()

    conn._frame = crossing


def test_a_lock_granted_as_the_task_is_cancelled_is_given_back(
    manager: proxyshare.ShareManager,
) -> None:
    async def main() -> None:
        async with connect(manager) as mgr:
            lock = await mgr.lock("crossing")
            async with held_by_another_task(lock.acquire, lock.release) as free:
                waiter = asyncio.create_task(lock.acquire())
                await eventually(lambda: _n_waiters(mgr, "crossing", 1))
                _cancel_as_the_reply_arrives(mgr, waiter)
                await free()  # grants the lock to the waiter, whose task is cancelled
                with pytest.raises(asyncio.CancelledError):
                    await waiter
            assert not await lock.locked()
            assert (await resource(mgr, "crossing"))["waiters"] == []

    run(main())


def test_items_a_cancelled_get_took_go_back_to_the_front(
    manager: proxyshare.ShareManager,
) -> None:
    async def main() -> None:
        async with connect(manager) as mgr:
            q = await mgr.queue("front")
            getter = asyncio.create_task(q.get_many(2))
            await eventually(lambda: _connection_waits(mgr))
            _cancel_as_the_reply_arrives(mgr, getter)
            await q.put_many(["a", "b", "c"])
            with pytest.raises(asyncio.CancelledError):
                await getter
            assert await q.get_many(10) == ["a", "b", "c"]

    run(main())


async def _connection_waits(mgr: aio.AsyncManager) -> bool:
    transport: Any = mgr.transport
    return any(c._waiter is not None for c in transport._all)


def test_a_task_cancelled_again_while_its_cancel_drains_still_leaves_it_in_step(
    manager: proxyshare.ShareManager,
) -> None:
    async def main() -> None:
        async with connect(manager) as mgr:
            lock = await mgr.lock("twice")
            kept = await mgr.lock("kept")
            async with held_by_another_task(lock.acquire, lock.release):

                async def victim() -> None:
                    await kept.acquire()
                    try:
                        await lock.acquire()
                    finally:
                        assert await kept.locked()
                        await kept.release()

                task = asyncio.create_task(victim())
                await eventually(lambda: _n_waiters(mgr, "twice", 1))
                task.cancel()
                await asyncio.sleep(0)  # its CANCEL is on the way: cancel it again
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert not await kept.locked() and not await lock.locked()

    run(main())
