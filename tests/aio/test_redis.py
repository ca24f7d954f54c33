"""What is particular to the asyncio client on Redis (the rest runs on both backends)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

import proxyshare
from proxyshare import aio
from proxyshare._backends.redis.leases import RENEWER_TICK
from proxyshare._backends.redis.sansio import Call
from tests.aio.conftest import Target
from tests.aio.helpers import connect, connect_redis, eventually, run

pytestmark = [pytest.mark.timeout(60), pytest.mark.redis]


def test_barriers_and_pipelines_are_refused_as_by_the_sync_client(redis_target: Target) -> None:
    with pytest.raises(proxyshare.ProxyShareError) as sync_barrier:
        redis_target.sync.barrier("b", 2)

    async def main() -> None:
        async with redis_target.connect() as mgr:
            with pytest.raises(proxyshare.ProxyShareError) as barrier:
                await mgr.barrier("b", 2)
            assert str(barrier.value) == str(sync_barrier.value)
            with pytest.raises(proxyshare.ProxyShareError, match="pipelines are not available"):
                async with mgr.pipeline() as p:
                    p.counter("c").increment()

    run(main())


def test_a_semaphore_lease_is_a_redis_option(redis_target: Target, manager: Any) -> None:
    async def main() -> None:
        async with redis_target.connect() as mgr:
            sem = await mgr.semaphore("leased", 2, lease=30)
            async with sem:
                assert await sem.value() == 1
        async with connect(manager) as served:
            with pytest.raises(TypeError, match="option of the Redis backend"):
                await served.semaphore("leased", 2, lease=30)

    run(main())


def test_closing_the_manager_gives_back_what_its_tasks_hold(redis_target: Target) -> None:
    lock = redis_target.sync.lock("held")

    async def main() -> None:
        mgr = await redis_target.connect()
        try:
            await (await mgr.lock("held")).acquire()
            assert lock.locked()
        finally:
            await mgr.aclose()

    run(main())
    started = time.monotonic()
    while lock.locked():  # the renewer gives it back within its tick
        assert time.monotonic() - started < 5 * RENEWER_TICK + 2
        time.sleep(0.05)


def test_a_wrong_password_is_an_authentication_error(
    redis_factory: Callable[..., Any],
) -> None:
    server = redis_factory("--requirepass", "right")

    async def main() -> None:
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        with pytest.raises(proxyshare.AuthenticationError, match="rejected the credentials"):
            await aio.connect(url)
        async with aio.connect(f"redis://:right@127.0.0.1:{server.port}/0") as mgr:
            assert await (await mgr.counter("c")).increment() == 1

    run(main())


@pytest.mark.parametrize("waiting", ["lock.acquire", "queue.get", "event.wait", "increments"])
def test_redis_death_is_server_unavailable_within_seconds(
    redis_factory: Callable[..., Any], waiting: str
) -> None:
    server = redis_factory()

    async def main() -> float:
        async with connect_redis(server.url, "proxyshare:") as mgr:
            lock = await mgr.lock("guard")
            # Held elsewhere, by nobody this process renews: the acquires wait.
            await mgr.transport.run(_hold_forever("proxyshare:v:guard"))
            q = await mgr.queue("jobs")
            ev = await mgr.event("go")
            hits = await mgr.counter("hits")

            async def hammer() -> None:
                while True:
                    await hits.increment()

            calls = {
                "lock.acquire": lock.acquire,
                "queue.get": q.get,
                "event.wait": ev.wait,
                "increments": hammer,
            }
            tasks = [asyncio.create_task(calls[waiting]()) for _ in range(5)]
            await asyncio.sleep(0.3)  # under way, or waiting in Redis
            started = time.monotonic()
            server.kill()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(o, proxyshare.ServerUnavailableError) for o in outcomes), outcomes
            with pytest.raises(proxyshare.ServerUnavailableError):
                await hits.increment()
            return elapsed

    assert run(main()) < 5


def _hold_forever(key: str) -> Any:
    yield Call("SET", key, "a holder elsewhere", "PX", 60_000)


def test_a_get_cancelled_after_it_popped_puts_the_item_back(redis_target: Target) -> None:
    """The item arrives while the getter's BLPOP waits, and the cancel lands as it pops."""

    async def main() -> list[Any]:
        async with redis_target.connect() as mgr:
            q = await mgr.queue("front")
            for _round in range(20):
                getter = asyncio.create_task(q.get_many(5))
                await asyncio.sleep(0.01)
                await q.put_many(["a", "b"])
                getter.cancel()
                got = await asyncio.gather(getter, return_exceptions=True)
                back = await q.get_many(10, timeout=0.2)
                if isinstance(got[0], asyncio.CancelledError):
                    assert back == ["a", "b"]  # nothing taken by the cancelled get
                else:  # it finished before the cancel landed
                    assert got[0] + back == ["a", "b"]
            return await q.get_many(10, timeout=0)

    assert run(main(), timeout=60) == []


def test_sync_and_async_owners_are_told_apart(redis_target: Target) -> None:
    lock = redis_target.sync.lock("mine")
    assert lock.acquire()
    try:

        async def main() -> None:
            async with redis_target.connect() as mgr:
                mine = await mgr.lock("mine")
                with pytest.raises(proxyshare.NotOwnerError):
                    await mine.release()
                assert await mine.acquire(timeout=0.1) is False

        run(main())
    finally:
        lock.release()

    async def released() -> None:
        async with redis_target.connect() as mgr:
            assert await eventually((await mgr.lock("mine")).acquire, timeout=5)
            await (await mgr.lock("mine")).release()

    run(released())
