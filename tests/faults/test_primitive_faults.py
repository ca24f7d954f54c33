"""Processes SIGKILLed while they hold or wait on a primitive: what survives.

Every victim is a real process (each start method in turn), killed with
SIGKILL, so nothing in it gets to clean up: the server must notice the dropped
connection on its own.  Measured times are recorded as test properties
(``--junitxml``) and printed (``-s``).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare import _protocol as P
from proxyshare._client import Channel
from tests.integration import prim_workers as W
from tests.support import kill_hard, wait_until

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(60)]

Context = multiprocessing.context.BaseContext
RecordProperty = Callable[[str, object], None]


@pytest.fixture
def start(mp_context: Context) -> Iterator[Callable[..., multiprocessing.process.BaseProcess]]:
    """Start a process under the current start method; every one is killed at the end."""
    started: list[multiprocessing.process.BaseProcess] = []

    def run(target: Callable[..., Any], *args: Any) -> multiprocessing.process.BaseProcess:
        proc = mp_context.Process(target=target, args=args, daemon=True)
        proc.start()
        started.append(proc)
        return proc

    try:
        yield run
    finally:
        for proc in started:
            kill_hard(proc)


def _resource(mgr: proxyshare.ShareManager, name: str) -> dict[str, Any]:
    (found,) = [r for r in mgr.status()["resources"] if r["name"] == name]
    return found


@pytest.mark.parametrize("holder_state", ["idle", "blocked in another call"])
def test_semaphore_permit_of_a_killed_holder_comes_back_within_1s(
    manager: proxyshare.ShareManager,
    start: Callable[..., Any],
    holder_state: str,
    record_property: RecordProperty,
) -> None:
    sem = manager.semaphore("slot", value=1)
    ready = manager.queue("ready")
    blocker = manager.queue("never-filled") if holder_state != "idle" else None
    victim = start(W.hold_permit_forever, sem, ready, blocker)
    assert ready.get(timeout=30) == victim.pid
    if blocker is not None:
        wait_until(lambda: _resource(manager, "never-filled")["blocked_getters"] == 1)
    assert sem.acquire(blocking=False) is False

    killed: list[float] = []

    def kill_once_we_wait() -> None:
        wait_until(lambda: len(_resource(manager, "slot")["waiters"]) == 1)
        killed.append(time.monotonic())
        kill_hard(victim)

    killer = threading.Thread(target=kill_once_we_wait, daemon=True)
    killer.start()
    assert sem.acquire(timeout=10), "the permit never came back"
    acquired = time.monotonic()
    killer.join(10)
    elapsed = acquired - killed[0]
    record_property(f"permit_return_s[{holder_state}]", round(elapsed, 4))
    print(f"\npermit back {elapsed * 1000:.1f} ms after SIGKILL ({holder_state})")
    assert elapsed < 1.0
    holders = _resource(manager, "slot")["holders"]
    assert [h["pid"] for h in holders] == [os.getpid()]


def test_a_killed_semaphore_waiter_leaves_the_wait_list(
    manager: proxyshare.ShareManager, start: Callable[..., Any]
) -> None:
    sem = manager.semaphore("slot", value=1)
    assert sem.acquire()
    victim = start(W.hold_permit_forever, sem, manager.queue("ready"))
    wait_until(lambda: len(_resource(manager, "slot")["waiters"]) == 1, timeout=30)
    kill_hard(victim)
    wait_until(lambda: _resource(manager, "slot")["waiters"] == [], timeout=5)
    sem.release()
    assert sem.value() == 1  # not handed to the dead waiter


def test_a_killed_barrier_party_breaks_the_barrier_for_the_others_within_5s(
    manager: proxyshare.ShareManager, start: Callable[..., Any], record_property: RecordProperty
) -> None:
    barrier = manager.barrier("line", parties=4)
    results = manager.queue("outcomes")
    parties = [start(W.wait_at_barrier_then_report, barrier, results) for _ in range(3)]
    wait_until(lambda: barrier.n_waiting == 3, timeout=30)
    killed_at = time.time()
    kill_hard(parties[0])
    outcomes = [results.get(timeout=5) for _ in range(2)]
    assert [kind for kind, _ in outcomes] == ["broken", "broken"]
    elapsed = max(when for _, when in outcomes) - killed_at
    record_property("barrier_broken_s", round(elapsed, 4))
    print(f"\nsurvivors got BrokenBarrierError {elapsed * 1000:.1f} ms after SIGKILL")
    assert elapsed < 5.0
    assert barrier.broken and barrier.n_waiting == 0


@pytest.mark.parametrize("items", [1, 250])
def test_items_put_after_a_blocked_consumer_is_killed_are_not_lost(
    manager: proxyshare.ShareManager, start: Callable[..., Any], mp_context: Context, items: int
) -> None:
    q = manager.queue("work")
    victim = start(W.block_in_get, q)
    wait_until(lambda: _resource(manager, "work")["blocked_getters"] == 1, timeout=30)
    kill_hard(victim)
    q.put_many(range(items))  # at once: the dead getter may not have been noticed yet
    q.put("last")
    q.close()
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        assert pool.submit(W.drain, q).result(timeout=60) == [*range(items), "last"]
    assert _resource(manager, "work")["blocked_getters"] == 0


def test_a_killed_event_waiter_is_dropped(
    manager: proxyshare.ShareManager, start: Callable[..., Any]
) -> None:
    ev = manager.event("go")
    victim = start(W.wait_on_event_forever, ev)
    wait_until(lambda: _resource(manager, "go")["waiting"] == 1, timeout=30)
    kill_hard(victim)
    wait_until(lambda: _resource(manager, "go")["waiting"] == 0, timeout=5)
    ev.set()
    assert ev.wait(1) is True


@pytest.mark.parametrize(
    "request_",
    [(P.QUEUE_GET.code, "inflight", True, None), (P.QUEUE_GET_MANY.code, "inflight", 2, None)],
    ids=["get", "get_many"],
)
def test_items_whose_reply_cannot_be_delivered_go_back_to_the_front(
    manager: proxyshare.ShareManager, request_: tuple[Any, ...]
) -> None:
    q = manager.queue("inflight")
    q.put_many(["a", "b", "c"])
    ref = manager.server_ref
    channel = Channel(ref.address, ref.authkey)  # a client of its own, outside the registry
    try:
        # The client can no longer read: the server takes the items, then its
        # reply fails -- as when a consumer dies between asking and receiving.
        with socket.socket(fileno=os.dup(channel._wire.fileno())) as sock:
            sock.shutdown(socket.SHUT_RD)
        channel._wire.send_bytes(pickle.dumps(request_, P.PICKLE_PROTOCOL))
        wait_until(lambda: _session_count(manager) == 1)  # the server dropped it
    finally:
        channel.close()
    assert q.get_many(10, timeout=5) == ["a", "b", "c"]


def _session_count(manager: proxyshare.ShareManager) -> int:
    return len(manager.status()["clients"])
