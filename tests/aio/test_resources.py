"""Every resource kind through ``proxyshare.aio``: the sync API's names and meanings, awaited."""

from __future__ import annotations

import asyncio
import pickle
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

import proxyshare
from proxyshare import aio
from proxyshare._keys import write_key_file
from tests.aio.conftest import Target
from tests.aio.helpers import connect, run

pytestmark = pytest.mark.timeout(60)


def test_connect_is_awaited_or_entered(target: Target) -> None:
    async def main() -> None:
        mgr = await target.connect()
        try:
            assert await (await mgr.counter("c")).increment() == 1
        finally:
            await mgr.aclose()
        async with target.connect() as again:
            assert await (await again.counter("c")).get() == 1
        with pytest.raises(proxyshare.ProxyShareError, match="closed"):
            await again.names()

    run(main())


def test_connect_with_no_arguments_reads_the_environment(
    manager: proxyshare.ShareManager, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ref = manager.server_ref
    monkeypatch.setenv("PROXYSHARE_ADDRESS", f"unix:{ref.address}")
    monkeypatch.delenv("PROXYSHARE_AUTHKEY", raising=False)
    monkeypatch.setenv(
        "PROXYSHARE_AUTHKEY_FILE", str(write_key_file(tmp_path / "key", ref.authkey))
    )

    async def main() -> dict[str, str]:
        async with aio.connect() as mgr:
            await mgr.dict("from-env")
            return await mgr.names()

    assert run(main()) == {"from-env": "dict"}


def test_connect_without_an_address_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXYSHARE_ADDRESS", raising=False)
    with pytest.raises(proxyshare.ProxyShareError, match="PROXYSHARE_ADDRESS"):
        aio.connect()


def test_connect_without_a_key_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXYSHARE_AUTHKEY", raising=False)
    monkeypatch.delenv("PROXYSHARE_AUTHKEY_FILE", raising=False)
    with pytest.raises(proxyshare.ProxyShareError, match="PROXYSHARE_AUTHKEY"):
        aio.connect("127.0.0.1:1")


def test_a_bad_address_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="host:port"):
        aio.connect("nowhere", authkey=b"k")


def test_counter(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            c = await mgr.counter("hits", initial=10)
            assert await c.increment() == 11
            assert await c.increment(5) == 16
            assert await c.decrement(6) == 10
            await c.set(3)
            assert await c.get() == 3
            assert await c.compare_and_set(3, 4) is True
            assert await c.compare_and_set(3, 5) is False
            assert await c.get_and_set(9) == 4
            assert (await mgr.counter("hits", initial=100)) == c  # get-or-create: same one
            assert await c.get() == 9

    run(main())


def test_lock(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            lock = await mgr.lock("guard")
            assert not await lock.locked()
            async with lock:
                assert await lock.locked()
                owner = await lock.owner()
                assert owner is not None and owner["pid"] > 0
            assert not await lock.locked() and await lock.owner() is None
            assert await lock.acquire(blocking=False)
            assert await lock.acquire(timeout=0.05) is False  # not re-entrant: times out
            await lock.release()
            with pytest.raises(proxyshare.NotOwnerError):
                await lock.release()

    run(main())


def test_dict(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            d = await mgr.dict("stats")
            assert await d.get("a") is None and await d.get("a", 0) == 0
            await d.set("a", 1)
            assert await d.increment("a") == 2
            assert await d.increment("b", 5, default=10) == 15
            assert await d.compare_and_set("a", 2, 20) is True
            assert await d.compare_and_set("a", 2, 30) is False
            assert await d.snapshot() == {"a": 20, "b": 15}
            assert sorted(await d.keys()) == ["a", "b"]
            assert sorted(await d.items()) == [("a", 20), ("b", 15)]
            assert sorted(await d.values()) == [15, 20]
            assert await d.len() == 2
            assert await d.contains("a") and not await d.contains("z")
            assert await d.pop("a") == 20
            assert await d.pop("a", "gone") == "gone"
            with pytest.raises(KeyError):
                await d.pop("a")
            assert await d.setdefault("c", [1]) == [1]
            await d.update({"x": 1}, y=2)
            await d.delete("x")
            with pytest.raises(KeyError):
                await d.delete("x")
            assert await d.snapshot() == {"b": 15, "c": [1], "y": 2}
            await d.clear()
            assert await d.len() == 0

    run(main())


def test_queue(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            q = await mgr.queue("jobs", maxsize=3)
            assert await q.empty()
            await q.put(1)
            await q.put_many([2, 3])
            assert await q.full() and await q.qsize() == 3
            with pytest.raises(queue.Full):
                await q.put_nowait(4)
            with pytest.raises(queue.Full):
                await q.put(4, timeout=0.05)
            assert await q.get() == 1
            assert await q.get_many(10) == [2, 3]
            with pytest.raises(queue.Empty):
                await q.get_nowait()
            with pytest.raises(queue.Empty):
                await q.get(timeout=0.05)
            assert await q.get_many(5, timeout=0.05) == []
            await q.put_many(["a", "b", None, "after"])
            assert [item async for item in q.iter(sentinel=None)] == ["a", "b"]
            assert await q.get() == "after"
            await q.put_many(["x", "y"])
            await q.close()
            assert [item async for item in q] == ["x", "y"]  # until closed and drained
            with pytest.raises(proxyshare.ProxyShareError, match="closed"):
                await q.put("z")

    run(main())


def test_semaphore(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            sem = await mgr.semaphore("db", value=2)
            assert await sem.value() == 2
            async with sem:
                assert await sem.value() == 1
                assert await sem.acquire()
                assert await sem.value() == 0
                assert await sem.acquire(timeout=0.05) is False
                await sem.release()
            assert await sem.value() == 2
            with pytest.raises(proxyshare.NotOwnerError):
                await sem.release()

    run(main())


def test_event(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            ev = await mgr.event("go")
            assert not await ev.is_set()
            assert await ev.wait(timeout=0.05) is False
            waiter = asyncio.create_task(ev.wait(timeout=10))
            await asyncio.sleep(0.05)
            await ev.set()
            assert await waiter is True
            assert await ev.is_set()
            await ev.clear()
            assert not await ev.is_set()

    run(main())


def test_barrier(manager: proxyshare.ShareManager) -> None:
    async def main() -> None:
        async with connect(manager) as mgr:
            b = await mgr.barrier("meet", parties=3)
            assert await b.parties() == 3 and not await b.broken()
            results = await asyncio.gather(*(b.wait(timeout=10) for _ in range(3)))
            assert sorted(results) == [0, 1, 2]
            waiting = asyncio.create_task(b.wait(timeout=10))
            while await b.n_waiting() < 1:
                await asyncio.sleep(0.01)
            await b.abort()
            with pytest.raises(threading.BrokenBarrierError):
                await waiting
            assert await b.broken()
            await b.reset()
            assert not await b.broken()

    run(main())


def test_names_delete_and_status(manager: proxyshare.ShareManager) -> None:
    async def main() -> None:
        async with connect(manager) as mgr:
            await mgr.counter("a")
            await mgr.lock("b")
            assert await mgr.names() == {"a": "counter", "b": "lock"}
            assert await mgr.delete("a") is True
            assert await mgr.delete("a") is False
            assert await mgr.names() == {"b": "lock"}
            status = await mgr.status()
            assert {r["name"] for r in status["resources"]} == {"b"}
            assert status["server"]["operations"] > 0

    run(main())


def test_a_name_keeps_its_kind(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            await mgr.counter("x")
            with pytest.raises(proxyshare.ResourceKindError, match="'x'"):
                await mgr.lock("x")

    run(main())


def test_a_deleted_resource_says_so(target: Target) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            c = await mgr.counter("gone")
            await mgr.delete("gone")
            with pytest.raises(proxyshare.ResourceNotFoundError):
                await c.increment()

    run(main())


BAD_CALLS = {
    "empty name": lambda m: m.counter(""),
    "str initial": lambda m: m.counter("c", initial="1"),
    "semaphore 0": lambda m: m.semaphore("s", value=0),
    "barrier 0": lambda m: m.barrier("b", parties=0),
    "negative lease": lambda m: m.lock("l", lease=-1),
    "wrong kind": lambda m: m.counter("taken-by-a-dict"),
}


@pytest.mark.parametrize("call", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_a_refusal_is_the_sync_clients_refusal(target: Target, call: Any) -> None:
    """The same rulebook, the same words: the same error as the sync manager's."""
    target.sync.dict("taken-by-a-dict")
    with pytest.raises(Exception) as sync_error:
        call(target.sync)

    async def main() -> None:
        async with target.connect() as mgr:
            with pytest.raises(type(sync_error.value)) as async_error:
                await call(mgr)
            assert type(async_error.value) is type(sync_error.value)
            assert str(async_error.value) == str(sync_error.value)

    run(main())


def test_sync_and_async_clients_see_the_same_resources(target: Target) -> None:
    hits = target.sync.counter("shared")
    hits.increment(5)

    async def main() -> int:
        async with target.connect() as mgr:
            return await (await mgr.counter("shared")).increment()

    assert run(main()) == 6
    assert hits.get() == 6


def test_pipeline(manager: proxyshare.ShareManager) -> None:
    async def main() -> None:
        async with connect(manager) as mgr:
            await mgr.counter("hits")
            await mgr.dict("stats")
            async with mgr.pipeline() as p:
                p.counter("hits").increment()
                p.dict("stats").increment("calls", 2)
                p.counter("hits").increment()
                assert len(p) == 3
            assert p.results == [1, 2, 2]
            with pytest.raises(proxyshare.PipelineError) as failed:
                async with mgr.pipeline() as p:
                    p.counter("hits").increment()
                    p.counter("missing").increment()
                    p.counter("hits").increment()
            assert failed.value.index == 1 and failed.value.results == [3]
            assert isinstance(failed.value.__cause__, proxyshare.ResourceNotFoundError)
            with pytest.raises(RuntimeError):
                async with mgr.pipeline() as p:
                    p.counter("hits").increment()
                    raise RuntimeError("nothing is sent")
            assert await (await mgr.counter("hits")).get() == 3

    run(main())


def test_an_async_proxy_does_not_pickle_and_says_what_to_do(
    target: Target,
) -> None:
    async def main() -> None:
        async with target.connect() as mgr:
            c = await mgr.counter("c")
            assert repr(c).startswith("<proxyshare.aio.Counter 'c' at ")
            with pytest.raises(TypeError, match="Send the name"):
                pickle.dumps(c)

    run(main())


def test_a_manager_belongs_to_its_event_loop(target: Target) -> None:
    async def first() -> Any:
        return await target.connect()

    mgr = run(first())  # its loop is gone now

    async def second() -> None:
        with pytest.raises(proxyshare.ProxyShareError, match="another event loop"):
            await mgr.names()

    run(second())


def test_large_values_cross_in_both_directions(target: Target) -> None:
    """Larger than a connection's read buffer: the buffer grows for it, then shrinks."""
    big = bytes(range(256)) * (5 * 4096)  # 5 MiB

    async def main() -> None:
        async with target.connect() as mgr:
            d = await mgr.dict("big")
            await asyncio.gather(*(d.set(i, big) for i in range(3)))
            assert await d.get(1) == big
            assert (await d.snapshot())[2] == big
            assert await (await mgr.counter("after")).increment() == 1  # still in step

    run(main(), timeout=60)


def test_calls_after_aclose_say_the_manager_is_closed(target: Target) -> None:
    async def main() -> None:
        mgr = await target.connect()
        hits = await mgr.counter("hits")
        await mgr.aclose()
        outcomes = await asyncio.gather(
            *(hits.increment() for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(o, proxyshare.ProxyShareError) for o in outcomes), outcomes
        assert all("closed" in str(o) for o in outcomes)

    run(main())
