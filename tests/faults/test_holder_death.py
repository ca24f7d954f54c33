"""Holder death: a killed holder's locks and permits come back at once."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import time

import pytest

import proxyshare
from tests.faults import workers
from tests.faults.conftest import Figures, poll_until, reap, server_load
from tests.support import START_METHODS


def _waiters(mgr: proxyshare.ShareManager, name: str) -> int:
    for resource in mgr.status()["resources"]:
        if resource["name"] == name:
            return len(resource["waiters"])
    raise AssertionError(f"no resource {name!r}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", START_METHODS)
def test_waiter_acquires_within_1s_when_the_holder_is_sigkilled(
    manager: proxyshare.ShareManager, method: str, figures: Figures
) -> None:
    ctx = multiprocessing.get_context(method)
    lock = manager.lock("guard")
    ready, results = ctx.Event(), ctx.Queue()
    holder = ctx.Process(target=workers.hold_lock_forever, args=(lock, ready))
    waiter = ctx.Process(target=workers.acquire_and_report, args=(lock, results))
    try:
        holder.start()
        assert ready.wait(30)
        waiter.start()
        poll_until(lambda: _waiters(manager, "guard") == 1, timeout=30)
        killed_at = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        acquired_at = results.get(timeout=10)
        latency = acquired_at - killed_at
        figures.record(f"SIGKILL lock holder ({method})", "waiter acquired", latency)
        assert latency < 1.0
        waiter.join(10)
        assert waiter.exitcode == 0
    finally:
        reap([holder, waiter])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", START_METHODS)
def test_pool_worker_killed_mid_task_20_times_releases_its_locks_and_leaks_nothing(
    manager: proxyshare.ShareManager, method: str, figures: Figures
) -> None:
    ctx = multiprocessing.get_context(method)
    lock, permits = manager.lock("guard"), manager.semaphore("permits", value=2)
    baseline = server_load(manager)
    resources = manager.names()
    worst = 0.0
    for _ in range(20):
        with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            future = pool.submit(workers.acquire_both_and_die, lock, permits)
            with pytest.raises(cf.process.BrokenProcessPool):
                future.result(timeout=60)
            broke_at = time.monotonic()
        poll_until(lambda: not lock.locked() and permits.value() == 2, timeout=5)
        worst = max(worst, time.monotonic() - broke_at)
    settle = poll_until(lambda: server_load(manager) == baseline, timeout=10)
    assert manager.names() == resources
    status = manager.status()
    assert [r for r in status["resources"] if r.get("holders") or r.get("waiters")] == []
    figures.record(
        f"pool worker SIGKILLed mid-task x20 ({method})",
        "lock+permit released, 0 leaked",
        max(worst, settle),
    )
