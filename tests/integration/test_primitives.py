"""Queue, Semaphore, Event and Barrier proxies inside real process pools.

Proxies go to workers as plain ``submit`` arguments, under every start method
(``mp_context``); results come back through the proxyshare resources themselves.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import queue
import threading
from typing import Any

import pytest

import proxyshare
from tests.integration import prim_workers as W
from tests.support import wait_until

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(90)]

Context = multiprocessing.context.BaseContext


def _resource(mgr: proxyshare.ShareManager, name: str) -> dict[str, Any]:
    (found,) = [r for r in mgr.status()["resources"] if r["name"] == name]
    return found


# -- queue -------------------------------------------------------------------------


def test_workers_produce_into_a_queue_the_parent_consumes(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    q = manager.queue("results", maxsize=25)  # bounded: producers feel back-pressure
    workers, per_worker = 3, 205
    with cf.ProcessPoolExecutor(workers, mp_context=mp_context) as pool:
        futures = [pool.submit(W.produce, q, w, per_worker) for w in range(workers)]
        got: list[tuple[int, int]] = []
        while len(got) < workers * per_worker:
            got.extend(q.get_many(40, timeout=30))
        assert [f.result(timeout=30) for f in futures] == [per_worker] * workers
    assert sorted(got) == [(w, j) for w in range(workers) for j in range(per_worker)]
    for w in range(workers):  # one producer's items arrive in the order it put them
        mine = [j for (p, j) in got if p == w]
        assert mine == sorted(mine)
    assert q.empty()


def test_workers_drain_a_closed_queue_and_stop(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    q = manager.queue("jobs")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(W.drain, q) for _ in range(3)]
        q.put_many(range(500))
        q.close()
        parts = [f.result(timeout=60) for f in futures]
    assert sorted(item for part in parts for item in part) == list(range(500))
    assert all(part == sorted(part) for part in parts)


def test_a_worker_iterates_until_the_sentinel(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    q = manager.queue("stream")
    q.put_many(["a", "b", None, "after"])
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        assert pool.submit(W.drain_until, q, None).result(timeout=60) == ["a", "b"]
    assert q.get_nowait() == "after"


def test_stdlib_queue_errors_reach_a_worker_and_its_caller(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    q = manager.queue("nothing")
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        future = pool.submit(W.get_one, q, 0.1)
        with pytest.raises(queue.Empty):
            future.result(timeout=60)


def test_put_many_and_get_many_are_one_round_trip_each(manager: proxyshare.ShareManager) -> None:
    q = manager.queue("batch")
    before = manager.status()["server"]["operations"]
    q.put_many(range(1000))
    assert q.get_many(1000) == list(range(1000))
    after = manager.status()["server"]["operations"]
    assert after - before == 3  # put_many, get_many, and the first status() itself


def test_queue_proxy_methods_mirror_the_stdlib(manager: proxyshare.ShareManager) -> None:
    q = manager.queue("bounded", maxsize=2)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put_nowait(1)
    q.put(2, timeout=1)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    assert q.get_nowait() == 1 and q.get(timeout=1) == 2
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert q.Empty is queue.Empty and q.Full is queue.Full
    q.put_many([4, 5])
    q.close()
    with pytest.raises(proxyshare.ProxyShareError, match="closed"):
        q.put(6)
    assert list(q) == [4, 5]
    with pytest.raises(proxyshare.ProxyShareError, match="closed and empty"):
        q.get()


def test_a_pipeline_puts_many_without_waiting_for_room(manager: proxyshare.ShareManager) -> None:
    q = manager.queue("piped", maxsize=3)
    hits = manager.counter("piped-count")
    with manager.pipeline() as p:
        p.queue("piped").put_many([1, 2])
        p.counter("piped-count").increment()
    assert p.results == [None, 1]
    with pytest.raises(proxyshare.PipelineError) as raised, manager.pipeline() as p:
        p.counter("piped-count").increment()
        p.queue("piped").put_many([3, 4])  # 2 + 2 > 3: Full at once, no waiting
    assert raised.value.index == 1 and isinstance(raised.value.__cause__, queue.Full)
    assert q.get_many(10) == [1, 2] and hits.get() == 2


def test_queue_iteration_ignores_equal_items_of_another_type(
    manager: proxyshare.ShareManager,
) -> None:
    q = manager.queue("typed")
    q.put_many([0, False, 0.0, "end", 1])
    assert list(q.iter(sentinel="end")) == [0, False, 0.0]
    q.put_many([False, 0])
    assert list(q.iter(sentinel=0)) == [1, False]


def test_a_blocked_get_does_not_block_other_clients(manager: proxyshare.ShareManager) -> None:
    q = manager.queue("slow")
    other = manager.counter("busy")
    waiter = threading.Thread(target=lambda: q.get(timeout=30), daemon=True)
    waiter.start()
    wait_until(lambda: _resource(manager, "slow")["blocked_getters"] == 1)
    for _ in range(100):  # the server answers others while one client waits
        other.increment()
        assert q.qsize() == 0
    q.put("wake")
    waiter.join(10)
    assert not waiter.is_alive() and other.get() == 100


# -- semaphore -----------------------------------------------------------------------


def test_a_semaphore_limits_how_many_workers_are_inside(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    sem = manager.semaphore("slots", value=2)
    inside = manager.counter("inside")
    stats = manager.dict("stats")
    stats.update(peak=0, passes=0)
    with cf.ProcessPoolExecutor(4, mp_context=mp_context) as pool:
        futures = [pool.submit(W.limited_section, sem, inside, stats, 0.02) for _ in range(16)]
        pids = {f.result(timeout=60) for f in futures}
    assert stats["passes"] == 16
    assert 1 <= stats["peak"] <= 2
    assert inside.get() == 0 and sem.value() == 2
    assert len(pids) >= 1


def test_status_lists_semaphore_holders_from_workers(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    sem = manager.semaphore("gate", value=3)
    go = manager.event("go")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(W.hold_permit_until, sem, go) for _ in range(2)]
        wait_until(lambda: len(_resource(manager, "gate")["holders"]) == 2, timeout=30)
        gate = _resource(manager, "gate")
        assert gate["value"] == 1 and gate["initial"] == 3
        holder_pids = {h["pid"] for h in gate["holders"]}
        go.set()
        assert {f.result(timeout=30) for f in futures} == holder_pids
    assert sem.value() == 3 and _resource(manager, "gate")["holders"] == []


def test_semaphore_proxy_basics(manager: proxyshare.ShareManager) -> None:
    sem = manager.semaphore("pair", value=2)
    assert manager.semaphore("pair", value=5).value() == 2  # first creation wins
    with sem:
        assert sem.value() == 1
        assert sem.acquire(timeout=1) is True
        assert sem.acquire(blocking=False) is False
        assert sem.acquire(timeout=0.05) is False
        sem.release()
    with pytest.raises(proxyshare.NotOwnerError):
        sem.release()
    with pytest.raises(ValueError, match=">= 1"):
        manager.semaphore("empty", value=0)
    with pytest.raises(TypeError, match="value must be an int"):
        manager.semaphore("odd", value=1.5)  # type: ignore[arg-type]


# -- event ---------------------------------------------------------------------------


def test_an_event_releases_every_waiting_worker(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    ev = manager.event("start")
    with cf.ProcessPoolExecutor(3, mp_context=mp_context) as pool:
        futures = [pool.submit(W.wait_for_event, ev, 60) for _ in range(3)]
        wait_until(lambda: _resource(manager, "start")["waiting"] == 3, timeout=30)
        assert not any(f.done() for f in futures)
        ev.set()
        assert [f.result(timeout=30) for f in futures] == [True, True, True]
    assert _resource(manager, "start")["set"] is True


def test_event_proxy_basics(manager: proxyshare.ShareManager) -> None:
    ev = manager.event("flag")
    assert ev.is_set() is False and ev.wait(0.05) is False
    ev.set()
    assert ev.is_set() and ev.wait() is True and ev.wait(0) is True
    ev.clear()
    assert ev.is_set() is False


# -- barrier -------------------------------------------------------------------------


def test_a_barrier_lines_up_workers(manager: proxyshare.ShareManager, mp_context: Context) -> None:
    barrier = manager.barrier("line", parties=3)
    with cf.ProcessPoolExecutor(3, mp_context=mp_context) as pool:
        futures = [pool.submit(W.wait_at_barrier, barrier, 60) for _ in range(3)]
        assert sorted(f.result(timeout=60) for f in futures) == [0, 1, 2]
    assert barrier.n_waiting == 0 and not barrier.broken


def test_broken_barrier_error_crosses_the_wire_into_a_worker(
    manager: proxyshare.ShareManager, mp_context: Context
) -> None:
    barrier = manager.barrier("never-full", parties=2)
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        future = pool.submit(W.wait_at_barrier, barrier, 0.1)
        with pytest.raises(threading.BrokenBarrierError):
            future.result(timeout=60)
    assert barrier.broken


def test_barrier_proxy_basics(manager: proxyshare.ShareManager) -> None:
    barrier = manager.barrier("pair", parties=2)
    assert barrier.parties == 2 and barrier.n_waiting == 0 and barrier.broken is False
    with pytest.raises(ValueError, match="parties=2, not 3"):
        manager.barrier("pair", parties=3)
    other = threading.Thread(target=barrier.wait, daemon=True)
    other.start()
    wait_until(lambda: barrier.n_waiting == 1)
    waiters = _resource(manager, "pair")["waiters"]
    assert len(waiters) == 1 and waiters[0]["pid"] > 0
    assert barrier.wait(timeout=10) in (0, 1)
    other.join(10)
    barrier.abort()
    assert barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    barrier.reset()
    assert not barrier.broken


# -- all kinds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("queue", lambda m: m.queue("gone")),
        ("semaphore", lambda m: m.semaphore("gone")),
        ("event", lambda m: m.event("gone")),
        ("barrier", lambda m: m.barrier("gone", 2)),
    ],
)
def test_proxies_of_a_deleted_primitive_say_so(
    manager: proxyshare.ShareManager, kind: str, make: Any
) -> None:
    proxy = make(manager)
    assert manager.names() == {"gone": kind}
    assert manager.delete("gone")
    call = {
        "queue": lambda: proxy.get_nowait(),
        "semaphore": lambda: proxy.acquire(),
        "event": lambda: proxy.is_set(),
        "barrier": lambda: proxy.wait(),
    }[kind]
    with pytest.raises(proxyshare.ResourceNotFoundError, match=f"no {kind} named 'gone'"):
        call()


def test_deleting_a_queue_wakes_a_blocked_getter(manager: proxyshare.ShareManager) -> None:
    q = manager.queue("doomed")
    errors: list[BaseException] = []

    def getter() -> None:
        try:
            q.get()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=getter, daemon=True)
    thread.start()
    wait_until(lambda: _resource(manager, "doomed")["blocked_getters"] == 1)
    manager.delete("doomed")
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], proxyshare.ResourceNotFoundError)


def test_primitive_proxies_pickle_with_their_name_and_server() -> None:
    import pickle

    with proxyshare.ShareManager(authkey=b"custom key for pickling") as mgr:
        for proxy in (mgr.queue("q"), mgr.semaphore("s"), mgr.event("e"), mgr.barrier("b", 2)):
            copy = pickle.loads(pickle.dumps(proxy))
            assert copy == proxy and type(copy) is type(proxy) and copy.name == proxy.name
        assert pickle.loads(pickle.dumps(mgr.queue("q"))).qsize() == 0


BLOCKING_CALLS = {
    "queue.get": lambda m: m.queue("q").get,
    "queue.put": lambda m: (m.queue("full", maxsize=1).put(0), lambda: m.queue("full").put(1))[1],
    "semaphore.acquire": lambda m: (m.semaphore("s").acquire(), m.semaphore("s").acquire)[1],
    "event.wait": lambda m: m.event("e").wait,
    "barrier.wait": lambda m: m.barrier("b", 2).wait,
}


@pytest.mark.parametrize("round_", range(4))  # the wrong outcome was a race: try it often
def test_blocked_callers_get_server_unavailable_when_the_server_stops(round_: int) -> None:
    mgr = proxyshare.ShareManager()
    mgr.start()
    errors: dict[str, BaseException] = {}
    threads = []
    try:
        for name, make in BLOCKING_CALLS.items():
            blocking = make(mgr)  # made in this thread: it holds what it took

            def waiter(name: str = name, blocking: Any = blocking) -> None:
                try:
                    blocking()
                except BaseException as exc:
                    errors[name] = exc

            threads.append(threading.Thread(target=waiter, daemon=True))
            threads[-1].start()
        wait_until(lambda: _blocked_count(mgr) == len(BLOCKING_CALLS))
    finally:
        mgr.shutdown()
    for thread in threads:
        thread.join(10)
    assert {name: type(exc).__name__ for name, exc in errors.items()} == dict.fromkeys(
        BLOCKING_CALLS, "ServerUnavailableError"
    )


def _blocked_count(mgr: proxyshare.ShareManager) -> int:
    total = 0
    for r in mgr.status()["resources"]:
        total += r.get("blocked_getters", 0) + r.get("blocked_putters", 0) + r.get("waiting", 0)
        total += len(r.get("waiters", [])) if r["kind"] != "lock" else 0
    return total
