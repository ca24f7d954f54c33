"""Pools made with no ``mp_context``, as most user code makes them.

Such a pool starts its workers with the default start method, and that is not
``fork`` everywhere: macOS defaults to ``spawn``, and Python 3.14 on Linux to
``forkserver``.  CI runs this module, with the pool, proxy, shared-memory and
primitive tests, once with each of those as the default
(``PROXYSHARE_TEST_START_METHOD``, see ``conftest.py``); a plain run covers the
platform's own default.  The embedded server starts the default way too.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from typing import Any

import pytest

import proxyshare
from tests.integration.prim_workers import produce, wait_at_barrier, wait_for_event
from tests.integration.shm_workers import guarded_read_modify_write, increment_in_threads
from tests.support import START_METHOD_ENV, increment_many, locked_read_modify_write

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(120)]

# The stdlib executor, and proxyshare's checking subclass: each made with no mp_context.
POOLS = [
    pytest.param(cf.ProcessPoolExecutor, id="stdlib-pool"),
    pytest.param(proxyshare.ProcessPoolExecutor, id="proxyshare-pool"),
]


@pytest.fixture(params=POOLS)
def pool_class(request: pytest.FixtureRequest) -> Any:
    return request.param


def test_the_default_start_method_is_the_one_the_run_asked_for() -> None:
    wanted = os.environ.get(START_METHOD_ENV)
    if wanted:
        assert multiprocessing.get_start_method() == wanted
    else:
        assert multiprocessing.get_start_method() in ("fork", "spawn", "forkserver")


def test_a_pool_without_mp_context_starts_its_workers_the_default_way(pool_class: Any) -> None:
    with pool_class(1) as pool:
        worker_parent = pool.submit(os.getppid).result(timeout=60)
        method = pool._mp_context.get_start_method()
    assert method == multiprocessing.get_start_method()
    # A forkserver worker is a child of the fork server; fork and spawn workers are ours.
    assert (worker_parent != os.getpid()) == (method == "forkserver")


def test_counter_increments_are_exact(manager: proxyshare.ShareManager, pool_class: Any) -> None:
    counter = manager.counter("hits")
    with pool_class(2) as pool:
        futures = [pool.submit(increment_many, counter, 2_000) for _ in range(2)]
        assert sum(f.result(timeout=60) for f in futures) == 4_000
    assert counter.get() == 4_000


def test_lock_and_dict_read_modify_write_loses_nothing(
    manager: proxyshare.ShareManager, pool_class: Any
) -> None:
    lock, totals = manager.lock("guard"), manager.dict("totals")
    with pool_class(2) as pool:
        futures = [pool.submit(locked_read_modify_write, lock, totals, "k", 300) for _ in range(2)]
        for f in futures:
            f.result(timeout=60)
    assert totals["k"] == 600
    assert not lock.locked()


def test_a_custom_authkey_travels_with_the_proxy(
    custom_key_manager: proxyshare.ShareManager, pool_class: Any
) -> None:
    counter = custom_key_manager.counter("hits")
    with pool_class(1) as pool:
        assert pool.submit(increment_many, counter, 50).result(timeout=60) == 50
    assert counter.get() == 50


def test_queue_items_from_workers_all_arrive(
    manager: proxyshare.ShareManager, pool_class: Any
) -> None:
    q = manager.queue("items")
    with pool_class(2) as pool:
        futures = [pool.submit(produce, q, worker, 25) for worker in range(2)]
        assert [f.result(timeout=60) for f in futures] == [25, 25]
    assert sorted(q.get_many(100, timeout=10)) == [(w, j) for w in range(2) for j in range(25)]


def test_event_and_barrier_reach_workers(manager: proxyshare.ShareManager, pool_class: Any) -> None:
    event, barrier = manager.event("go"), manager.barrier("meet", 2)
    event.set()
    with pool_class(2) as pool:
        assert pool.submit(wait_for_event, event, 30).result(timeout=60) is True
        arrivals = [pool.submit(wait_at_barrier, barrier, 30) for _ in range(2)]
        assert sorted(f.result(timeout=60) for f in arrivals) == [0, 1]


def test_a_semaphore_permit_is_returned_by_each_worker(
    manager: proxyshare.ShareManager, pool_class: Any
) -> None:
    sem, totals = manager.semaphore("slots", value=1), manager.dict("totals")
    with pool_class(2) as pool:
        futures = [pool.submit(locked_read_modify_write, sem, totals, "k", 100) for _ in range(2)]
        for f in futures:
            f.result(timeout=60)
    assert totals["k"] == 200
    assert sem.value() == 1


def test_shared_memory_counter_and_lock_are_exact(
    manager: proxyshare.ShareManager, pool_class: Any
) -> None:
    counter = manager.counter("fast", shared_memory=True)
    guarded = manager.counter("guarded", shared_memory=True)
    lock = manager.lock("fast-guard", shared_memory=True)
    with pool_class(2) as pool:
        adds = [pool.submit(increment_in_threads, counter, 2_000, 1) for _ in range(2)]
        rmw = [pool.submit(guarded_read_modify_write, lock, guarded, 200) for _ in range(2)]
        for f in adds + rmw:
            f.result(timeout=60)
    assert counter.get() == 4_000
    assert guarded.get() == 400
