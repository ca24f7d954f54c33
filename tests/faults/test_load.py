"""Load: 64 client processes hammer one server; nothing is lost, nothing leaks."""

from __future__ import annotations

import multiprocessing
import time

import pytest

import proxyshare
from tests.faults import workers
from tests.faults.conftest import Figures, reap, server_load, settled

CLIENTS = 64
# fork keeps 64 process starts cheap on a 2-core machine; the start methods
# themselves are covered by the smaller tables elsewhere.
CTX = multiprocessing.get_context("fork")


def _run_clients(target: object, args: tuple[object, ...]) -> float:
    procs = [CTX.Process(target=target, args=args) for _ in range(CLIENTS)]
    start = time.monotonic()
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        assert [p.exitcode for p in procs] == [0] * CLIENTS
    finally:
        reap(procs)
    return time.monotonic() - start


@pytest.mark.timeout(150)
def test_64_processes_x_1000_increments_lose_0_updates_and_leak_0_connections(
    manager: proxyshare.ShareManager, figures: Figures
) -> None:
    counter = manager.counter("hits")
    baseline = server_load(manager)
    elapsed = _run_clients(workers.increment_n, (counter, 1000))
    assert counter.get() == CLIENTS * 1000  # 64,000: 0 lost
    settle = settled(manager, baseline, timeout=10)
    figures.record(
        f"{CLIENTS} procs x 1000 increment()",
        f"{counter.get()} / 64000, 0 lost, {elapsed:.1f}s",
        settle,
    )


@pytest.mark.timeout(150)
def test_64_processes_x_200_locked_dict_updates_lose_0_and_leak_0_connections(
    manager: proxyshare.ShareManager, figures: Figures
) -> None:
    lock, totals = manager.lock("guard"), manager.dict("totals")
    baseline = server_load(manager)
    elapsed = _run_clients(workers.locked_read_modify_write, (lock, totals, "k", 200))
    assert totals["k"] == CLIENTS * 200  # 12,800: 0 lost
    assert not lock.locked()
    settle = settled(manager, baseline, timeout=10)
    figures.record(
        f"{CLIENTS} procs x 200 lock+dict RMW",
        f"{totals['k']} / 12800, 0 lost, {elapsed:.1f}s",
        settle,
    )
