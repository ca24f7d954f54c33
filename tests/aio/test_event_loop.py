"""The event loop is never blocked, and no thread is started per call."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time

import pytest

import proxyshare
from tests.aio.helpers import connect, eventually, resource, run
from tests.support import hold_lock_forever, kill_hard

pytestmark = pytest.mark.timeout(90)

TICK = 0.01
HELD_FOR = 3.0  # a call that blocked the loop would make one tick this late
LATE_BOUND = 0.5  # generous: the machine may be busy, but never HELD_FOR


def test_a_heartbeat_keeps_its_pace_while_tasks_hammer_and_wait(
    manager: proxyshare.ShareManager,
) -> None:
    """100 tasks hammer a counter and one waits on a lock another process holds."""
    ctx = multiprocessing.get_context("spawn")
    lock = manager.lock("elsewhere")
    ready = ctx.Event()
    holder = ctx.Process(target=hold_lock_forever, args=(lock, ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(30)

        async def main() -> tuple[float, int, int, int, bool]:
            async with connect(manager) as mgr:
                hits = await mgr.counter("hits")
                waited_lock = await mgr.lock("elsewhere")
                threads = threading.active_count()
                stop = asyncio.Event()
                worst = 0.0
                ticks = 0

                async def heartbeat() -> None:
                    nonlocal worst, ticks
                    loop = asyncio.get_running_loop()
                    while not stop.is_set():
                        start = loop.time()
                        await asyncio.sleep(TICK)
                        worst = max(worst, loop.time() - start - TICK)
                        ticks += 1

                async def hammer() -> int:
                    done = 0
                    while not stop.is_set():
                        await hits.increment()
                        done += 1
                    return done

                async def wait_for_the_lock() -> bool:
                    got = await waited_lock.acquire(timeout=HELD_FOR)  # held elsewhere: waits
                    if got:
                        await waited_lock.release()
                    return got

                beat = asyncio.create_task(heartbeat())
                hammers = [asyncio.create_task(hammer()) for _ in range(100)]
                got = await wait_for_the_lock()
                during = threading.active_count()
                stop.set()
                done = sum(await asyncio.gather(*hammers))
                await beat
                assert await hits.get() == done  # exact, batched or not
                return worst, ticks, done, during - threads, got

        worst, ticks, done, new_threads, got = run(main())
    finally:
        kill_hard(holder)
    assert not got  # the holder never let go: the wait ran its whole timeout
    assert worst < LATE_BOUND, f"a {TICK}s tick was {worst:.3f}s late"
    assert ticks > HELD_FOR / LATE_BOUND  # and it kept ticking all along
    assert done > 100
    assert new_threads == 0


def test_a_waiter_gets_the_lock_at_once_when_its_holder_process_is_killed(
    manager: proxyshare.ShareManager,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    lock = manager.lock("guard")
    ready = ctx.Event()
    holder = ctx.Process(target=hold_lock_forever, args=(lock, ready), daemon=True)
    holder.start()
    try:
        assert ready.wait(30)

        async def main() -> float:
            async with connect(manager) as mgr:
                guard = await mgr.lock("guard")
                got_it = 0.0

                async def wait() -> None:
                    nonlocal got_it
                    async with guard:
                        got_it = time.monotonic()

                waiter = asyncio.create_task(wait())
                await eventually(lambda: _waiting(mgr))
                started = time.monotonic()
                kill_hard(holder)  # SIGKILL: its connection drops, the server releases
                await waiter
                return got_it - started

        assert run(main()) < 2.0
    finally:
        kill_hard(holder)


async def _waiting(mgr: proxyshare.aio.AsyncManager) -> bool:
    return len((await resource(mgr, "guard"))["waiters"]) == 1
