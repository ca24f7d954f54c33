"""A lock or permit belongs to the task that acquired it; waiters are served in order."""

from __future__ import annotations

import asyncio
import logging

import pytest

import proxyshare
from tests.aio.conftest import Target
from tests.aio.helpers import connect, eventually, resource, run

pytestmark = pytest.mark.timeout(60)


def test_another_task_cannot_release_a_lock(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            lock = await mgr.lock("mine")
            await lock.acquire()
            with pytest.raises(proxyshare.NotOwnerError, match="'mine'"):
                await asyncio.create_task(lock.release())
            assert await lock.locked()
            await lock.release()  # the owner can

    run(main())


def test_another_task_cannot_release_a_permit(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            sem = await mgr.semaphore("slots", 2)
            await sem.acquire()
            with pytest.raises(proxyshare.NotOwnerError):
                await asyncio.create_task(sem.release())
            assert await sem.value() == 1
            await sem.release()
            assert await sem.value() == 2

    run(main())


def test_a_lock_held_by_one_task_makes_another_wait(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            lock = await mgr.lock("turns")
            await lock.acquire()
            assert await asyncio.create_task(lock.acquire(timeout=0.1)) is False
            got = asyncio.Event()

            async def other() -> None:
                async with lock:  # waits until the first task lets go
                    got.set()

            waiting = asyncio.create_task(other())
            assert not got.is_set()
            await lock.release()
            await waiting
            assert got.is_set()

    run(main())


async def _waiters(mgr: proxyshare.aio.AsyncManager, name: str, n: int) -> bool:
    return len((await resource(mgr, name))["waiters"]) == n


def test_waiting_tasks_get_the_lock_first_come_first_served(
    manager: proxyshare.ShareManager,
) -> None:
    async def main() -> list[int]:
        async with connect(manager) as mgr:
            lock = await mgr.lock("fifo")
            order: list[int] = []
            await lock.acquire()

            async def take(i: int) -> None:
                async with lock:
                    order.append(i)

            tasks = []
            for i in range(8):  # each one queued on the server before the next starts
                tasks.append(asyncio.create_task(take(i)))
                await eventually(lambda n=i + 1: _waiters(mgr, "fifo", n))
            await lock.release()
            await asyncio.gather(*tasks)
            return order

    assert run(main()) == list(range(8))


def test_a_task_holding_a_lock_keeps_working_with_other_resources(
    target: Target,
) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            lock = await mgr.lock("section")
            stats = await mgr.dict("stats")
            async with lock:
                for _ in range(20):
                    await stats.increment("n")
                assert await lock.locked()
            assert await stats.get("n") == 20

    run(main())


def test_acquiring_a_lock_the_task_holds_does_not_wait_forever(
    target: Target,
) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            lock = await mgr.lock("once")
            async with lock:
                with pytest.raises(proxyshare.ProxyShareError, match="not re-entrant"):
                    await lock.acquire()

    run(main())


def test_a_task_that_ends_holding_a_lock_releases_it(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            lock = await mgr.lock("forgotten")
            sem = await mgr.semaphore("forgotten-too", 1)

            async def forget() -> None:
                await lock.acquire()
                await sem.acquire()

            with caplog.at_level(logging.WARNING, logger="proxyshare"):
                await asyncio.create_task(forget(), name="forgetful")
                await eventually(lambda: _free(lock))  # Redis: within the renewer's tick
                await eventually(lambda: _value_is(sem, 1))
            if target.name == "served":  # its connection is closed: say why
                assert "task forgetful ended holding" in caplog.text
                assert "lock 'forgotten'" in caplog.text

    run(main())


async def _free(lock: proxyshare.aio.Lock) -> bool:
    return not await lock.locked()


async def _value_is(sem: proxyshare.aio.Semaphore, value: int) -> bool:
    return await sem.value() == value


def test_tasks_holding_locks_do_not_starve_the_others(manager: proxyshare.ShareManager) -> None:
    """More tasks hold locks than the pool shares connections: the rest still run."""

    async def main() -> int:
        async with connect(manager, max_connections=2) as mgr:
            counter = await mgr.counter("n")
            locks = [await mgr.lock(f"l{i}") for i in range(6)]
            go = await mgr.event("go")

            async def hold(lock: proxyshare.aio.Lock) -> None:
                async with lock:
                    await go.wait(timeout=20)  # released only once the others have run

            holders = [asyncio.create_task(hold(lock)) for lock in locks]
            for lock in locks:
                await eventually(lock.locked)
            await asyncio.gather(*(counter.increment() for _ in range(50)))
            await go.set()
            await asyncio.gather(*holders)
            return await counter.get()

    assert run(main()) == 50
