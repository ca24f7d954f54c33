"""Operations that ride together in one pipeline request each get their own outcome."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import proxyshare
from proxyshare import aio
from tests.aio.helpers import connect, run

pytestmark = pytest.mark.timeout(60)


async def _operations(mgr: aio.AsyncManager) -> int:
    return int((await mgr.status())["server"]["operations"])


def test_concurrent_increments_are_exact_and_ride_together(
    manager: proxyshare.ShareManager,
) -> None:
    async def main() -> tuple[list[int], int, int]:
        async with connect(manager) as mgr:
            hits = await mgr.counter("hits")
            before = await _operations(mgr)
            values = await asyncio.gather(*(hits.increment() for _ in range(500)))
            used = await _operations(mgr) - before - 1  # minus the status request itself
            return sorted(values), await hits.get(), used

    values, total, round_trips = run(main())
    assert values == list(range(1, 501)) and total == 500  # each caller its own result
    assert round_trips < 50  # not one request per increment


def test_one_failing_operation_does_not_spoil_the_others(manager: proxyshare.ShareManager) -> None:
    async def main() -> list[Any]:
        async with connect(manager) as mgr:
            hits = await mgr.counter("hits")
            stats = await mgr.dict("stats")
            await stats.set("text", "not a number")
            gone = await mgr.counter("gone")
            await mgr.delete("gone")
            odd_ones = {
                5: lambda: stats.increment("text"),  # TypeError, on the server
                10: gone.increment,  # ResourceNotFoundError
                15: lambda: stats.set("f", threading.Lock()),  # cannot be pickled
                16: lambda: hits.increment("1"),  # type: ignore[arg-type]  # TypeError, by the rules
            }
            calls = [odd_ones.get(i, hits.increment)() for i in range(20)]
            return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = run(main())
    assert isinstance(outcomes[5], TypeError)
    assert isinstance(outcomes[10], proxyshare.ResourceNotFoundError)
    assert isinstance(outcomes[15], proxyshare.UnshareableArgumentError)
    assert isinstance(outcomes[16], TypeError)
    assert isinstance(outcomes[5].__cause__, proxyshare.RemoteTraceback)  # the server's side
    values = [v for i, v in enumerate(outcomes) if i not in (5, 10, 15, 16)]
    assert sorted(values) == list(range(1, 17))  # every other increment applied, once


def test_an_operation_cancelled_before_its_batch_leaves_is_never_applied(
    manager: proxyshare.ShareManager,
) -> None:
    async def main() -> int:
        async with connect(manager) as mgr:
            hits = await mgr.counter("hits")
            # The first task sends alone; the nine after it, in the same turn of
            # the loop, join a batch that leaves at the end of the turn ...
            tasks = [asyncio.create_task(hits.increment()) for _ in range(10)]
            await asyncio.sleep(0)
            for task in tasks[1:6]:  # ... but five of them are cancelled before it does
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 5
            return await hits.get()

    assert run(main()) == 5


def test_a_lone_caller_sends_each_operation_itself(manager: proxyshare.ShareManager) -> None:
    async def main() -> int:
        async with connect(manager) as mgr:
            hits = await mgr.counter("hits")
            before = await _operations(mgr)
            for _ in range(20):
                await hits.increment()
            return await _operations(mgr) - before - 1

    assert run(main()) == 20
