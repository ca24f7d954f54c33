"""Server death: every client call fails fast with ServerUnavailableError; a restart heals."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from multiprocessing import managers
from typing import Any

import pytest

import proxyshare
from tests.faults import workers
from tests.faults.conftest import Figures, poll_until, reap
from tests.support import START_METHODS, kill_hard

pytestmark = pytest.mark.matrix

CLIENTS = 4
KINDS = [
    "increment-loop",
    "lock.acquire",
    "semaphore.acquire",
    "queue.get",
    "event.wait",
    "barrier.wait",
]


def _proxy_for(kind: str, mgr: proxyshare.ShareManager) -> Any:
    if kind == "increment-loop":
        return mgr.counter("hits")
    if kind == "lock.acquire":
        lock = mgr.lock("guard")
        assert lock.acquire()  # held by the test: the clients block
        return lock
    if kind == "semaphore.acquire":
        semaphore = mgr.semaphore("permits", value=1)
        assert semaphore.acquire()  # the only permit is held by the test
        return semaphore
    if kind == "queue.get":
        return mgr.queue("jobs")
    if kind == "event.wait":
        return mgr.event("go")
    if kind == "barrier.wait":
        return mgr.barrier("meet", parties=CLIENTS + 1)
    raise ValueError(kind)


def _busy(kind: str, mgr: proxyshare.ShareManager) -> bool:
    """True once all clients are inside the call (where the server lets us see it)."""
    status = mgr.status()
    if len(status["clients"]) < CLIENTS + 1:
        return False
    by_name = {r["name"]: r for r in status["resources"]}
    if kind == "increment-loop":
        return bool(by_name["hits"]["value"] >= 10 * CLIENTS)
    if kind in ("lock.acquire", "semaphore.acquire"):
        name = "guard" if kind == "lock.acquire" else "permits"
        return len(by_name[name]["waiters"]) == CLIENTS
    if kind == "barrier.wait":
        return bool(by_name["meet"]["n_waiting"] == CLIENTS)
    return True  # queue.get / event.wait: connected; the get may still be in flight


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_client_call_raises_server_unavailable_within_5s_when_the_server_is_sigkilled(
    tcp_manager: proxyshare.ShareManager, kind: str, method: str, figures: Figures
) -> None:
    ctx = multiprocessing.get_context(method)
    proxy = _proxy_for(kind, tcp_manager)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=workers.call_until_unavailable, args=(kind, proxy, results))
        for _ in range(CLIENTS)
    ]
    try:
        for proc in procs:
            proc.start()
        poll_until(lambda: _busy(kind, tcp_manager), timeout=60)
        killed_at = time.monotonic()
        os.kill(tcp_manager._process.pid, signal.SIGKILL)
        outcomes = [results.get(timeout=30) for _ in range(CLIENTS * 3)]
        for proc in procs:
            proc.join(10)
        assert [p.exitcode for p in procs] == [0] * CLIENTS
    finally:
        reap(procs)
    assert {name for name, _ in outcomes} == {"ServerUnavailableError"}
    worst = max(at for _, at in outcomes) - killed_at
    figures.record(
        f"server SIGKILLed during {kind} ({method} clients)",
        f"{len(outcomes)}/{len(outcomes)} calls: ServerUnavailableError",
        worst,
    )
    assert worst < 5.0


@pytest.mark.timeout(90)
def test_a_server_restarted_on_the_same_address_serves_new_clients_and_old_proxies(
    tcp_manager: proxyshare.ShareManager, figures: Figures
) -> None:
    ctx = multiprocessing.get_context("fork")
    address, authkey = tcp_manager.address, bytes(tcp_manager._authkey)
    lock, counter = tcp_manager.lock("guard"), tcp_manager.counter("hits")
    assert lock.acquire()
    restarted, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=workers.survive_restart, args=(lock, counter, restarted, results))
        for _ in range(CLIENTS)
    ]
    again = proxyshare.ShareManager(address=address, authkey=authkey)
    try:
        for proc in procs:
            proc.start()
        poll_until(lambda: len(tcp_manager.status()["resources"][0]["waiters"]) == CLIENTS, 30)
        os.kill(tcp_manager._process.pid, signal.SIGKILL)
        failures = [results.get(timeout=30) for _ in range(CLIENTS)]
        assert {name for name, _ in failures} == {"ServerUnavailableError"}
        kill_hard(tcp_manager._process)

        again.start()
        restarted_at = time.monotonic()
        fresh = proxyshare.connect(address, authkey=authkey)
        assert fresh.counter("hits").increment() == 1  # a new client
        assert counter.increment() == 2  # an old proxy whose connection went stale
        with pytest.raises(proxyshare.ResourceNotFoundError, match="server restarted"):
            lock.acquire(timeout=5)  # state died with the server: a clear error, no hang
        fresh.lock("guard")
        assert lock.acquire(timeout=5)  # the old proxy, once the lock exists again
        lock.release()
        restarted.set()
        later = [results.get(timeout=30) for _ in range(CLIENTS)]
        assert sorted(value for _, value in later) == [3, 4, 5, 6]
        for proc in procs:
            proc.join(10)
        assert [p.exitcode for p in procs] == [0] * CLIENTS
    finally:
        restarted.set()
        reap(procs)
        if again._state.value == managers.State.STARTED:
            again.shutdown()
    figures.record(
        "server SIGKILLed, restarted on same TCP address",
        "new client + old proxies served",
        time.monotonic() - restarted_at,
    )
