"""Worker functions for the backend suite (module level: importable under spawn/forkserver).

They take proxies of either backend and use only the shared resource API.
"""

from __future__ import annotations

import os
import time
from typing import Any


def dict_increment_many(d: Any, key: str, n: int) -> int:
    for _ in range(n):
        d.increment(key)
    return n


def dict_view_in_worker(d: Any) -> tuple[list[Any], list[tuple[Any, Any]], int, bool]:
    """Iteration, items() and len() inside a worker (the stdlib proxies fail here)."""
    return sorted(d), sorted(d.items()), len(d), "a" in d


def put_range(q: Any, start: int, stop: int) -> int:
    for i in range(start, stop):
        q.put(i)
    return stop - start


def semaphore_guarded_count(sem: Any, inside: Any, peak: Any, n: int) -> int:
    """Enter the semaphore ``n`` times; record the highest number inside at once."""
    for _ in range(n):
        with sem:
            now = inside.increment()
            current = peak.get()
            while now > current and not peak.compare_and_set(current, now):
                current = peak.get()
            inside.decrement()
    return n


def announce_then_wait(event: Any, started: Any, timeout: float) -> bool:
    """Say "started" through a counter, then wait for ``event``."""
    started.increment()
    return bool(event.wait(timeout))


def hold_then_signal(lock: Any, ready: Any) -> None:
    """Acquire ``lock``, tell the parent, and hold it until killed."""
    lock.acquire()
    ready.set()
    while True:
        time.sleep(1)


def take_permit_then_signal(sem: Any, ready: Any) -> None:
    sem.acquire()
    ready.set()
    while True:
        time.sleep(1)


def owner_pid_seen_by_worker(lock: Any) -> tuple[int, int | None]:
    """Acquire in the worker; return (own pid, pid reported by owner())."""
    with lock:
        owner = lock.owner()
        return os.getpid(), None if owner is None else owner["pid"]


def measure_per_op(mgr: Any, n: int = 20_000) -> dict[str, float]:
    """µs per operation, one client (used by hand for the report, not by tests)."""
    counter, d, lock = mgr.counter("bench-c"), mgr.dict("bench-d"), mgr.lock("bench-l")
    result = {}
    for label, op in (
        ("counter.increment", counter.increment),
        ("dict.increment", lambda: d.increment("k")),
        ("lock acquire+release", lambda: (lock.acquire(), lock.release())),
    ):
        for _ in range(200):
            op()
        start = time.perf_counter()
        for _ in range(n):
            op()
        result[label] = (time.perf_counter() - start) / n * 1e6
    return result


def flush_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (test clean-up)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def acquire_and_return(lock: Any) -> bool:
    """Take ``lock`` and end without releasing it."""
    return bool(lock.acquire(timeout=30))
