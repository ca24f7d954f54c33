"""One resource-behaviour suite, run on both backends (``manager`` and ``redis``).

The ``backend`` fixture yields a ShareManager or a RedisManager with its own
key prefix; every test here must pass on both.  Redis-only behaviour (lease
expiry of a killed holder, a Redis restart, credentials) is at the bottom.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import proxyshare
from tests.integration.redis_workers import (
    acquire_and_return,
    announce_then_wait,
    dict_increment_many,
    dict_view_in_worker,
    flush_prefix,
    hold_then_signal,
    owner_pid_seen_by_worker,
    put_range,
    semaphore_guarded_count,
    take_permit_then_signal,
)
from tests.support import (
    increment_many,
    kill_hard,
    locked_read_modify_write,
    loky_safe_logging,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


def _in_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn`` in another thread (another owner, for both backends) and return its result."""
    with cf.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=30)


# -- counter ------------------------------------------------------------------------------


def test_counter_operations_return_the_new_value(backend: Any) -> None:
    c = backend.counter("hits", initial=5)
    assert c.increment() == 6
    assert c.increment(4) == 10
    assert c.decrement(3) == 7
    assert c.get() == c.value == 7
    c.set(-2)
    assert c.get() == -2
    c.value = 11
    assert c.get() == 11


def test_counter_compare_and_set_and_get_and_set(backend: Any) -> None:
    c = backend.counter("cas")
    assert c.compare_and_set(1, 5) is False
    assert c.compare_and_set(0, 5) is True
    assert c.get_and_set(9) == 5
    assert c.get() == 9


def test_counter_initial_applies_only_when_created(backend: Any) -> None:
    backend.counter("once", initial=3).increment()
    assert backend.counter("once", initial=100).get() == 4


@pytest.mark.parametrize("bad", [1.5, "1", None])
def test_counter_rejects_non_int_amounts(backend: Any, bad: Any) -> None:
    with pytest.raises(TypeError):
        backend.counter("typed").increment(bad)


# -- lock ---------------------------------------------------------------------------------


def test_lock_acquire_release_and_locked(backend: Any) -> None:
    lock = backend.lock("guard")
    assert lock.locked() is False
    assert lock.acquire() is True
    assert lock.locked() is True
    lock.release()
    assert lock.locked() is False
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_lock_owner_names_the_holding_process(backend: Any) -> None:
    lock = backend.lock("owned")
    assert lock.owner() is None
    with lock:
        owner = lock.owner()
        assert owner is not None and owner["pid"] == os.getpid()
        assert isinstance(owner["host"], str) and owner["since"] <= time.time() + 1


def test_lock_release_by_another_thread_raises_not_owner(backend: Any) -> None:
    lock = backend.lock("mine")
    lock.acquire()
    try:
        with pytest.raises(proxyshare.NotOwnerError):
            _in_thread(lock.release)
    finally:
        lock.release()


def test_lock_release_when_not_held_raises_not_owner(backend: Any) -> None:
    with pytest.raises(proxyshare.NotOwnerError):
        backend.lock("free").release()


def test_lock_held_elsewhere_times_out_and_refuses_non_blocking(backend: Any) -> None:
    lock = backend.lock("busy")
    lock.acquire()
    try:
        assert _in_thread(lambda: lock.acquire(blocking=False)) is False
        assert _in_thread(lambda: lock.acquire(timeout=0.2)) is False
    finally:
        lock.release()
    assert _in_thread(lambda: lock.acquire(timeout=5) and (lock.release() or True)) is True


def test_lock_waiter_gets_the_lock_when_it_is_released(backend: Any) -> None:
    lock = backend.lock("handoff")
    lock.acquire()
    got = threading.Event()

    def waiter() -> None:
        if lock.acquire(timeout=30):
            got.set()
            lock.release()

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert not got.wait(0.2)
        lock.release()
        wait_until(got.is_set, timeout=10)
    finally:
        thread.join(30)


def test_contended_lock_from_many_threads_loses_no_update(backend: Any) -> None:
    lock, d = backend.lock("contended"), backend.dict("contended-data")
    threads = [
        threading.Thread(target=locked_read_modify_write, args=(lock, d, "k", 50)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert d["k"] == 200 and not lock.locked()


def test_lock_reacquired_by_its_holder_without_timeout_raises(backend: Any) -> None:
    lock = backend.lock("reentrant")
    with lock:
        with pytest.raises(proxyshare.ProxyShareError, match="not re-entrant"):
            lock.acquire()
        assert lock.acquire(timeout=0.1) is False


def test_lock_held_by_a_thread_that_ends_is_released(backend: Any) -> None:
    lock = backend.lock("thread-ends", lease=60)
    thread = threading.Thread(target=acquire_and_return, args=(lock,))
    thread.start()
    thread.join(30)
    # Released because its thread ended, well before the 60 s lease.
    assert lock.acquire(timeout=30) is True
    lock.release()


def test_lock_held_by_a_process_that_exits_is_released(backend: Any) -> None:
    lock = backend.lock("process-exits", lease=60)
    proc = multiprocessing.get_context("spawn").Process(target=acquire_and_return, args=(lock,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    assert lock.acquire(timeout=30) is True
    lock.release()


def test_lock_rejects_a_timeout_without_blocking(backend: Any) -> None:
    with pytest.raises(ValueError):
        backend.lock("args").acquire(blocking=False, timeout=1)


# -- dict ---------------------------------------------------------------------------------


def test_dict_is_a_full_mutable_mapping(backend: Any) -> None:
    d = backend.dict("map")
    d["a"] = 1
    d[("t", 2)] = [1, 2]
    d.update({"b": "text"}, c=None)
    assert len(d) == 4
    assert d["a"] == 1 and d[("t", 2)] == [1, 2] and d["c"] is None
    assert "b" in d and "zz" not in d
    assert sorted(map(str, d)) == sorted(map(str, ["a", ("t", 2), "b", "c"]))
    assert dict(d.items()) == {"a": 1, ("t", 2): [1, 2], "b": "text", "c": None}
    assert sorted(map(str, d.values())) == sorted(map(str, [1, [1, 2], "text", None]))
    assert d == {"a": 1, ("t", 2): [1, 2], "b": "text", "c": None}
    assert d.get("zz", 7) == 7 and d.get("a") == 1
    assert d.pop("b") == "text" and d.pop("b", "gone") == "gone"
    assert d.setdefault("a", 99) == 1 and d.setdefault("n", 99) == 99
    del d["a"]
    assert "a" not in d
    key, _value = d.popitem()
    assert key not in d
    d.clear()
    assert len(d) == 0 and d.snapshot() == {}


def test_dict_missing_key_raises_key_error(backend: Any) -> None:
    d = backend.dict("missing")
    with pytest.raises(KeyError):
        d["nope"]
    with pytest.raises(KeyError):
        del d["nope"]
    with pytest.raises(KeyError):
        d.pop("nope")


def test_dict_increment_and_compare_and_set(backend: Any) -> None:
    d = backend.dict("atomic")
    assert d.increment("n") == 1
    assert d.increment("n", 5) == 6
    assert d.increment("m", 1, default=10) == 11
    assert d.compare_and_set("n", 5, 0) is False
    assert d.compare_and_set("n", 6, "six") is True
    assert d["n"] == "six"
    assert d.compare_and_set("absent", None, 1) is False


def test_dict_increment_of_a_non_int_value_raises_type_error(backend: Any) -> None:
    d = backend.dict("typed")
    d["s"] = "text"
    with pytest.raises(TypeError):
        d.increment("s")
    assert d["s"] == "text"


def test_dict_iteration_works_inside_pool_workers(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    d = backend.dict("shared")
    d.update({"a": 1, "b": 2, "c": 3})
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        keys, items, size, has_a = pool.submit(dict_view_in_worker, d).result(timeout=60)
    assert keys == ["a", "b", "c"]
    assert items == [("a", 1), ("b", 2), ("c", 3)]
    assert size == 3 and has_a


# -- queue --------------------------------------------------------------------------------


def test_queue_is_fifo(backend: Any) -> None:
    q = backend.queue("fifo")
    for item in [1, "two", (3,), None]:
        q.put(item)
    assert q.qsize() == 4 and not q.empty()
    assert [q.get() for _ in range(4)] == [1, "two", (3,), None]
    assert q.empty()


def test_queue_get_raises_empty_without_items(backend: Any) -> None:
    q = backend.queue("empty")
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    with pytest.raises(queue.Empty):
        q.get(block=False, timeout=1)  # as queue.Queue: the timeout is ignored


def test_bounded_queue_raises_full(backend: Any) -> None:
    q = backend.queue("bounded", maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert q.get() == 1
    q.put(3, timeout=5)
    assert [q.get(), q.get()] == [2, 3]


def test_blocked_putter_proceeds_when_a_getter_makes_room(backend: Any) -> None:
    q = backend.queue("room", maxsize=1)
    q.put("first")
    putter = threading.Thread(target=q.put, args=("second",), kwargs={"timeout": 30})
    putter.start()
    try:
        assert q.get(timeout=5) == "first"
        assert q.get(timeout=30) == "second"
    finally:
        putter.join(30)


def test_blocked_getter_wakes_when_an_item_arrives(backend: Any) -> None:
    q = backend.queue("wake")
    timer = threading.Timer(0.2, q.put, args=("late",))
    timer.start()
    try:
        assert q.get(timeout=30) == "late"
    finally:
        timer.join()


def test_queue_put_many_and_get_many(backend: Any) -> None:
    q = backend.queue("batch")
    q.put_many(range(10))
    assert q.get_many(4) == [0, 1, 2, 3]
    assert q.get_many(100) == [4, 5, 6, 7, 8, 9]
    assert q.get_many(5, timeout=0.1) == []


def test_closed_queue_refuses_puts_and_drains(backend: Any) -> None:
    q = backend.queue("closing")
    q.put_many([1, 2])
    q.close()
    with pytest.raises(proxyshare.ProxyShareError):
        q.put(3)
    assert list(q) == [1, 2]


def test_queue_items_from_pool_workers_all_arrive(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    q = backend.queue("results")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(put_range, q, i * 100, (i + 1) * 100) for i in range(2)]
        assert sum(f.result(timeout=60) for f in futures) == 200
    assert sorted(q.get_many(1000)) == list(range(200))


# -- semaphore ----------------------------------------------------------------------------


def test_semaphore_counts_permits(backend: Any) -> None:
    sem = backend.semaphore("permits", 2)
    assert sem.value() == 2
    assert sem.acquire() and sem.acquire()
    assert sem.value() == 0
    assert sem.acquire(blocking=False) is False
    assert sem.acquire(timeout=0.2) is False
    sem.release()
    assert sem.value() == 1
    sem.release()
    assert sem.value() == 2


def test_semaphore_release_without_a_permit_raises_not_owner(backend: Any) -> None:
    sem = backend.semaphore("strict", 1)
    with pytest.raises(proxyshare.NotOwnerError):
        sem.release()
    sem.acquire()
    try:
        with pytest.raises(proxyshare.NotOwnerError):
            _in_thread(sem.release)
    finally:
        sem.release()


def test_semaphore_waiter_wakes_when_a_permit_returns(backend: Any) -> None:
    sem = backend.semaphore("one", 1)
    sem.acquire()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(sem.acquire(timeout=30) and True))
    thread.start()
    try:
        sem.release()
        thread.join(30)
        assert result == [True]
    finally:
        thread.join(30)


def test_semaphore_bounds_concurrency_across_workers(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    sem = backend.semaphore("pool-bound", 2)
    inside, peak = backend.counter("inside"), backend.counter("peak")
    with cf.ProcessPoolExecutor(3, mp_context=mp_context) as pool:
        futures = [pool.submit(semaphore_guarded_count, sem, inside, peak, 30) for _ in range(3)]
        assert sum(f.result(timeout=60) for f in futures) == 90
    assert 1 <= peak.get() <= 2
    assert inside.get() == 0 and sem.value() == 2


# -- event --------------------------------------------------------------------------------


def test_event_set_clear_and_wait(backend: Any) -> None:
    event = backend.event("flag")
    assert event.is_set() is False
    assert event.wait(0.1) is False
    event.set()
    assert event.is_set() and event.wait(0) and event.wait()
    event.clear()
    assert not event.is_set()


def test_event_wait_in_a_worker_wakes_on_set(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    event, started = backend.event("go"), backend.counter("go-started")
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        future = pool.submit(announce_then_wait, event, started, 60)
        wait_until(lambda: started.get() == 1, timeout=60)
        event.set()
        assert future.result(timeout=60) is True


# -- names, kinds, deletion, status ------------------------------------------------------

OPENERS = {
    "counter": lambda m, n: m.counter(n),
    "lock": lambda m, n: m.lock(n),
    "dict": lambda m, n: m.dict(n),
    "queue": lambda m, n: m.queue(n),
    "semaphore": lambda m, n: m.semaphore(n),
    "event": lambda m, n: m.event(n),
}


@pytest.mark.parametrize(
    ("first", "second"),
    [("counter", "lock"), ("lock", "dict"), ("dict", "queue"), ("queue", "semaphore"),
     ("semaphore", "event"), ("event", "counter")],
)  # fmt: skip
def test_same_name_other_kind_raises_resource_kind_error(
    backend: Any, first: str, second: str
) -> None:
    OPENERS[first](backend, "shared-name")
    with pytest.raises(proxyshare.ResourceKindError, match=first):
        OPENERS[second](backend, "shared-name")


def test_same_name_same_kind_is_the_same_resource(backend: Any) -> None:
    backend.counter("same").increment(3)
    assert backend.counter("same").get() == 3


def test_names_lists_every_resource_with_its_kind(backend: Any) -> None:
    for kind, opener in OPENERS.items():
        opener(backend, f"n-{kind}")
    assert {k: v for k, v in backend.names().items() if k.startswith("n-")} == {
        f"n-{kind}": kind for kind in OPENERS
    }


def test_deleted_resource_raises_not_found_and_can_be_recreated(backend: Any) -> None:
    c = backend.counter("temp")
    c.increment()
    assert backend.delete("temp") is True
    assert backend.delete("temp") is False
    with pytest.raises(proxyshare.ResourceNotFoundError):
        c.increment()
    backend.lock("temp")  # the name is free for any kind now
    assert backend.names()["temp"] == "lock"


def test_status_lists_resources_in_the_manager_shape(backend: Any) -> None:
    backend.counter("s-counter", initial=4)
    lock = backend.lock("s-lock")
    with lock:
        status = backend.status()
    assert set(status) >= {"server", "clients", "resources"}
    assert isinstance(status["clients"], list)
    resources = {r["name"]: r for r in status["resources"]}
    assert resources["s-counter"]["kind"] == "counter" and resources["s-counter"]["value"] == 4
    assert resources["s-lock"]["locked"] is True
    assert resources["s-lock"]["holders"][0]["pid"] == os.getpid()


def test_proxies_pickle_to_an_equal_working_proxy(backend: Any) -> None:
    for kind, opener in OPENERS.items():
        proxy = opener(backend, f"p-{kind}")
        again = pickle.loads(pickle.dumps(proxy))
        assert again == proxy and type(again) is type(proxy) and again.name == f"p-{kind}"
    assert pickle.loads(pickle.dumps(backend.counter("p-counter"))).increment() == 1


def test_proxies_are_instances_of_the_public_classes(backend: Any) -> None:
    assert isinstance(backend.counter("i-c"), proxyshare.Counter)
    assert isinstance(backend.lock("i-l"), proxyshare.Lock)
    assert isinstance(backend.dict("i-d"), proxyshare.Dict)
    assert isinstance(backend.queue("i-q"), proxyshare.Queue)
    assert isinstance(backend.semaphore("i-s"), proxyshare.Semaphore)
    assert isinstance(backend.event("i-e"), proxyshare.Event)


# -- pool workers x start methods: exact totals ------------------------------------------


def test_counter_increments_from_pool_workers_are_exact(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    counter = backend.counter("hits")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(increment_many, counter, 1000) for _ in range(4)]
        assert sum(f.result(timeout=60) for f in futures) == 4000
    assert counter.get() == 4000


def test_dict_increments_from_pool_workers_are_exact(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    d = backend.dict("totals")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(dict_increment_many, d, "k", 500) for _ in range(4)]
        for f in futures:
            f.result(timeout=60)
    assert d["k"] == 2000


def test_lock_guarded_read_modify_write_from_pool_workers_loses_nothing(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    lock, d = backend.lock("rmw"), backend.dict("rmw-data")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(locked_read_modify_write, lock, d, "k", 200) for _ in range(2)]
        for f in futures:
            f.result(timeout=60)
    assert d["k"] == 400
    assert not lock.locked()


def test_lock_owner_is_the_worker_that_holds_it(
    backend: Any, mp_context: multiprocessing.context.BaseContext
) -> None:
    lock = backend.lock("worker-owned")
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        worker_pid, owner_pid = pool.submit(owner_pid_seen_by_worker, lock).result(timeout=60)
    assert worker_pid == owner_pid != os.getpid()


# -- Redis only ---------------------------------------------------------------------------


@pytest.fixture
def redis_mgr(redis_server: Any) -> Iterator[Any]:
    from proxyshare._backends.redis import RedisManager

    prefix = f"redis-only:{os.getpid()}:{time.monotonic_ns()}:"
    try:
        yield RedisManager(redis_server.url, prefix=prefix)
    finally:
        flush_prefix(redis_server.url, prefix)


@pytest.mark.redis
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_redis_lock_is_free_within_its_lease_when_holder_is_killed(
    redis_mgr: Any, start_method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    lease = 1.0
    lock = redis_mgr.lock("killed-holder", lease=lease)
    ctx = multiprocessing.get_context(start_method)
    ready = ctx.Event()
    holder = ctx.Process(target=hold_then_signal, args=(lock, ready))
    holder.start()
    try:
        assert ready.wait(60), "the holder never acquired the lock"
        # Held past several leases: the holder's renewer keeps it alive.
        assert lock.acquire(timeout=2.5 * lease) is False
        assert lock.owner()["pid"] == holder.pid
        kill_hard(holder)
        killed = time.monotonic()
        assert lock.acquire(timeout=30) is True
        freed_after = time.monotonic() - killed
        lock.release()
    finally:
        kill_hard(holder)
    with capsys.disabled():
        print(f"\n[{start_method}] lock free {freed_after:.3f}s after SIGKILL (lease {lease}s)")


@pytest.mark.redis
def test_redis_semaphore_permit_returns_within_its_lease_when_holder_is_killed(
    redis_mgr: Any,
) -> None:
    sem = redis_mgr.semaphore("killed-permit", 1, lease=1.0)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=take_permit_then_signal, args=(sem, ready))
    holder.start()
    try:
        assert ready.wait(60)
        assert sem.value() == 0
        kill_hard(holder)
        assert sem.acquire(timeout=30) is True
        sem.release()
    finally:
        kill_hard(holder)


@pytest.mark.redis
def test_redis_lease_is_renewed_while_the_holder_lives(redis_mgr: Any) -> None:
    lock = redis_mgr.lock("renewed", lease=0.5)
    lock.acquire()
    # Another owner waits well past the lease: the renewer must keep it held.
    assert _in_thread(lambda: lock.acquire(timeout=2.0)) is False
    assert lock.locked()
    lock.release()  # still ours: no NotOwnerError


@pytest.mark.redis
def test_redis_restart_gives_server_unavailable_then_recovers(
    redis_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxyshare._backends.redis import RedisManager

    # Persistence on, so the counter survives the crash and the next call can go on.
    server = redis_factory("--appendonly", "yes", "--appendfsync", "always")
    mgr = RedisManager(server.url, prefix="restart:")
    counter = mgr.counter("hits")
    assert counter.increment(5) == 5
    server.kill()
    started = time.monotonic()
    with pytest.raises(proxyshare.ServerUnavailableError, match="cannot reach Redis"):
        counter.increment()
    failed_after = time.monotonic() - started
    with pytest.raises(proxyshare.ServerUnavailableError):
        counter.get()  # still down: still an error, never a hang
    server.start()
    assert counter.increment() == 6  # the very next call reconnects
    # Restarted while this client sat idle: its pooled socket is stale, yet
    # the next call must not fail (the stale socket is noticed before sending).
    server.kill()
    server.start()
    assert counter.increment() == 7
    with capsys.disabled():
        print(f"\nServerUnavailableError raised {failed_after * 1000:.1f} ms after the kill")


@pytest.mark.redis
def test_redis_restart_without_persistence_reports_the_lost_resource(redis_factory: Any) -> None:
    from proxyshare._backends.redis import RedisManager

    server = redis_factory()
    mgr = RedisManager(server.url, prefix="volatile:")
    counter = mgr.counter("hits")
    counter.increment()
    server.kill()
    server.start()
    with pytest.raises(proxyshare.ResourceNotFoundError, match="lost its data"):
        counter.increment()
    assert mgr.counter("hits").increment() == 1


@pytest.mark.redis
def test_redis_unreachable_raises_server_unavailable_at_connect() -> None:
    from tests.support import free_port

    with pytest.raises(proxyshare.ServerUnavailableError):
        proxyshare.connect(f"redis://127.0.0.1:{free_port()}/0")


@pytest.mark.redis
def test_redis_wrong_password_raises_authentication_error(
    redis_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_factory("--requirepass", "s3cret-pw")
    host = f"127.0.0.1:{server.port}"
    with pytest.raises(proxyshare.AuthenticationError):
        proxyshare.connect(f"redis://:wrong@{host}/0")
    monkeypatch.delenv("PROXYSHARE_REDIS_PASSWORD", raising=False)
    with pytest.raises(proxyshare.AuthenticationError):
        proxyshare.connect(f"redis://{host}/0")
    mgr = proxyshare.connect(f"redis://:s3cret-pw@{host}/0")
    counter = mgr.counter("c")
    assert counter.increment() == 1
    assert "s3cret-pw" not in repr(mgr) + repr(counter) + str(mgr.status())


@pytest.mark.redis
def test_redis_password_from_the_environment_reaches_spawned_workers(
    redis_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_factory("--requirepass", "env-pw")
    monkeypatch.setenv("PROXYSHARE_REDIS_PASSWORD", "env-pw")
    mgr = proxyshare.connect(server.url)
    counter = mgr.counter("c")
    assert b"env-pw" not in pickle.dumps(counter)
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        assert pool.submit(increment_many, counter, 10).result(timeout=60) == 10
    assert counter.get() == 10


@pytest.mark.redis
def test_redis_proxies_work_in_loky_workers(redis_mgr: Any) -> None:
    loky = pytest.importorskip("loky")
    counter = redis_mgr.counter("loky")
    with loky_safe_logging():
        executor = loky.get_reusable_executor(max_workers=2)
        futures = [executor.submit(increment_many, counter, 100) for _ in range(2)]
        assert sum(f.result(timeout=60) for f in futures) == 200
    assert counter.get() == 200


@pytest.mark.redis
def test_import_and_redis_proxy_unpickling_do_not_import_redis(redis_mgr: Any) -> None:
    data = pickle.dumps(redis_mgr.counter("light"))
    code = (
        "import pickle, sys\n"
        f"import proxyshare; pickle.loads({data!r})\n"
        "print('redis' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.redis
def test_redis_over_a_unix_socket_url(redis_factory: Any, tmp_path: Any) -> None:
    path = tmp_path / "redis.sock"
    redis_factory("--unixsocket", str(path), "--unixsocketperm", "700")
    mgr = proxyshare.connect(f"unix+redis://{path}?db=0")
    assert mgr.counter("over-unix").increment(2) == 2
    assert mgr.address.startswith("unix+redis://")


@pytest.mark.redis
def test_missing_redis_py_gives_an_install_hint() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import proxyshare\n"
        "try:\n"
        "    proxyshare.connect('redis://127.0.0.1:1/0')\n"
        "except proxyshare.ProxyShareError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'proxyshare[redis]'" in out.stdout


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw-1@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:pw-1@host/2", "redis://alice:***@host/2"),
        ("rediss://host:6380/0?password=pw-1", "rediss://host:6380/0?password=***"),
        ("unix+redis:///run/redis.sock?db=1", "unix+redis:///run/redis.sock?db=1"),
    ],
)
def test_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    from proxyshare._backends.redis import RedisTransport

    transport = RedisTransport(url, "p:")
    assert transport.address == shown
    assert "pw-1" not in repr(transport) + transport.where()


@pytest.mark.redis
@pytest.mark.slow
def test_redis_proxies_work_in_dask_workers(redis_mgr: Any) -> None:
    distributed = pytest.importorskip("distributed")
    counter = redis_mgr.counter("dask")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        futures = [client.submit(increment_many, counter, 100, pure=False) for _ in range(2)]
        assert sum(client.gather(futures)) == 200
    assert counter.get() == 200
