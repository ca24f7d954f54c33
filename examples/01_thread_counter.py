"""Step 1: threads share a global counter; a lock makes `+=` safe.

Two threads each add 1 to a module-level counter N times (default 100,000;
set PROXYSHARE_EXAMPLE_N for a quicker run).  ``counter += 1`` is a read, an
add and a write: two threads can read the same value and one update is lost.
Whether that *shows* on CPython depends on where the interpreter switches
threads, so this script prints what happened rather than promising a race.

Run:  python examples/01_thread_counter.py
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "100000"))
WORKERS = 2

counter = 0
lock = threading.Lock()


def add_unlocked(n: int) -> None:
    global counter
    for _ in range(n):
        counter += 1  # not atomic: read, add, write


def add_locked(n: int) -> None:
    global counter
    for _ in range(n):
        with lock:  # only one thread at a time runs the read-add-write
            counter += 1


def run(work: Callable[[int], None]) -> tuple[int, float]:
    """Run ``work`` in WORKERS threads; return the final count and the time in ms."""
    global counter
    counter = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(work, N) for _ in range(WORKERS)]:
            future.result()  # re-raises anything the thread raised
    return counter, (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    expected = WORKERS * N
    unlocked, unlocked_ms = run(add_unlocked)
    locked, locked_ms = run(add_locked)
    print(f"{WORKERS} threads x {N:,} increments of a global (expected {expected:,})")
    print(
        f"  without lock: {unlocked:>10,}  lost {expected - unlocked:>8,}  {unlocked_ms:8.1f} ms"
        + (
            "   (none lost this time: CPython did not switch threads inside +=; no guarantee)"
            if unlocked == expected
            else "   (the race lost updates)"
        )
    )
    print(f"  with lock:    {locked:>10,}  lost {expected - locked:>8,}  {locked_ms:8.1f} ms")
    print(f"result: with lock {locked}/{expected} {'correct' if locked == expected else 'WRONG'}")
    raise SystemExit(0 if locked == expected else 1)
