"""Worker functions for the primitive tests (module level: spawn/forkserver import them).

Each takes proxies as plain arguments, exactly as a user's pool task would.
"""

from __future__ import annotations

import os
import time
from typing import Any


def produce(q: Any, worker: int, n: int, batch: int = 10) -> int:
    """Put ``(worker, 0) .. (worker, n-1)``: whole batches with put_many, the rest one by one."""
    i = 0
    while i + batch <= n:
        q.put_many([(worker, j) for j in range(i, i + batch)])
        i += batch
    for j in range(i, n):
        q.put((worker, j))
    return n


def drain(q: Any) -> list[Any]:
    """Everything this worker gets until the queue is closed and drained."""
    return list(q)


def drain_until(q: Any, sentinel: Any) -> list[Any]:
    return list(q.iter(sentinel=sentinel))


def get_one(q: Any, timeout: float | None) -> Any:
    return q.get(timeout=timeout)


def limited_section(sem: Any, inside: Any, stats: Any, hold: float) -> int:
    """Enter a semaphore-guarded section; record how many were inside at once."""
    with sem:
        now = inside.increment()
        while True:  # stats["peak"] = max(stats["peak"], now), atomically
            peak = stats["peak"]
            if now <= peak or stats.compare_and_set("peak", peak, now):
                break
        time.sleep(hold)
        inside.decrement()
    stats.increment("passes")
    return os.getpid()


def wait_for_event(event: Any, timeout: float) -> bool:
    return bool(event.wait(timeout))


def wait_at_barrier(barrier: Any, timeout: float | None) -> int:
    return int(barrier.wait(timeout))


def hold_permit_until(sem: Any, go: Any) -> int:
    """Hold a permit until ``go`` is set; return this worker's pid."""
    with sem:
        go.wait(60)
    return os.getpid()


# -- for fault tests: these never return; the test SIGKILLs them ----------------


def hold_permit_forever(sem: Any, ready: Any, blocker: Any = None) -> None:
    """Take a permit, say so on ``ready``, then idle, or block in ``blocker.get()``."""
    sem.acquire()
    ready.put(os.getpid())
    if blocker is not None:
        blocker.get()  # parked inside a server call when the test kills us
    while True:
        time.sleep(1)


def wait_on_event_forever(event: Any) -> None:
    event.wait()


def wait_at_barrier_then_report(barrier: Any, results: Any) -> None:
    """Wait at the barrier; report the outcome through a queue."""
    import threading

    try:
        results.put(("passed", barrier.wait()))
    except threading.BrokenBarrierError:
        results.put(("broken", time.time()))


def block_in_get(q: Any) -> None:
    item = q.get()
    raise AssertionError(f"this consumer should have been killed, but got {item!r}")
