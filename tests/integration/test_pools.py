"""The seed's workload: proxies passed as plain ``submit`` arguments."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing

import pytest

import proxyshare
from tests.support import increment_many, locked_read_modify_write

pytestmark = pytest.mark.matrix


@pytest.mark.parametrize("workers", [2, 4])
def test_counter_increments_from_pool_workers_are_exact(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext, workers: int
) -> None:
    counter = manager.counter("hits")
    with cf.ProcessPoolExecutor(workers, mp_context=mp_context) as pool:
        futures = [pool.submit(increment_many, counter, 10_000) for _ in range(workers)]
        assert sum(f.result(timeout=60) for f in futures) == workers * 10_000
    assert counter.get() == workers * 10_000


def test_lock_and_dict_read_modify_write_loses_nothing(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    lock, d = manager.lock("guard"), manager.dict("totals")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(locked_read_modify_write, lock, d, "k", 500) for _ in range(2)]
        for f in futures:
            f.result(timeout=60)
    assert d["k"] == 1000


def test_custom_authkey_travels_with_the_proxy(
    custom_key_manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    counter = custom_key_manager.counter("hits")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        assert pool.submit(increment_many, counter, 100).result(timeout=60) == 100
    assert counter.get() == 100


def test_a_temporary_proxy_works_in_a_child(manager: proxyshare.ShareManager) -> None:
    proc = multiprocessing.get_context("spawn").Process(
        target=increment_many, args=(manager.counter("tmp"), 10)
    )
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert manager.counter("tmp").get() == 10
