"""Worker functions for the core integration tests (module level: picklable)."""

from __future__ import annotations

import os
import time
from typing import Any

import proxyshare


def acquire_and_report(lock: Any, order: Any, tag: str) -> str:
    """Queue on ``lock``, then record the order in which the lock was granted."""
    with lock:
        order.put(tag) if hasattr(order, "put") else order.append(tag)
    return tag


def acquire_append_release(lock: Any, log: Any, tag: str, started: Any) -> None:
    started.increment()
    with lock:
        log[len(log)] = tag


def dict_views_in_worker(d: Any) -> dict[str, Any]:
    return {
        "keys": sorted(d.keys()),
        "items": sorted(d.items()),
        "values": sorted(d.values()),
        "iter": sorted(iter(d)),
        "len": len(d),
        "contains": "a" in d,
        "get": d.get("missing", "dflt"),
    }


def hold_until_killed(lock: Any, held: Any) -> None:
    lock.acquire()
    held.set(os.getpid())
    while True:
        time.sleep(0.5)


def many_proxies_one_connection(counters: list[Any]) -> int:
    for counter in counters:
        counter.increment()
    return len(counters)


def server_process(address: Any, authkey: bytes, ready: Any) -> None:
    """Run a ShareServer in this process (what `proxyshare serve` does)."""
    from proxyshare import ShareManager

    server = ShareManager(address=address, authkey=authkey).get_server()
    ready.set()
    server.serve_forever()


def increment_and_report_pid(counter: Any, n: int) -> int:
    for _ in range(n):
        counter.increment()
    return os.getpid()


class FailsToUnpickleIn:
    """Unpickles everywhere except in process ``pid`` (there it raises)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_unless_in, (self.pid,))


def _rebuild_unless_in(pid: int) -> FailsToUnpickleIn:
    if os.getpid() == pid:
        raise ImportError("this class cannot be loaded in this process")
    return FailsToUnpickleIn(pid)


# -- a user's manager subclass: at module level, because spawn and forkserver pickle
# the class by name to start its server, and register() must run again where the
# server process imports it (a class made inside a test cannot be pickled).


class BoxManager(proxyshare.ShareManager):
    """A ShareManager subclass with a registered user type."""


BoxManager.register("Box", list)
