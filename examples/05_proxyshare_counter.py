"""Step 5: proxyshare -- named resources you pass as plain ``submit()`` arguments.

``ShareManager`` serves named counters, locks and dicts from its own process.
Their proxies are small picklable handles: create them whenever you like,
pass them to any pool, under any start method.  ``counter.increment()`` is
one atomic round trip (no lock needed); for a read-modify-write of your own,
take ``mgr.lock()`` around it -- a lock whose holder dies is released at once.

Run:  python examples/05_proxyshare_counter.py
"""

from __future__ import annotations

import os
import time
from typing import Any

import proxyshare

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "10000"))
WORKERS = 2


def add(counter: proxyshare.Counter, n: int) -> int:
    for _ in range(n):
        counter.increment()  # one atomic round trip
    return n


def add_with_lock(lock: proxyshare.Lock, totals: proxyshare.Dict, n: int) -> int:
    for _ in range(n):
        with lock:  # FIFO; released at once if this worker dies holding it
            totals["hits"] = totals["hits"] + 1
    return n


def warm_up(_: int) -> None:
    """A no-op task: makes the pool start its workers before the clock starts."""


def timed(pool: Any, fn: Any, *args: Any) -> float:
    """Run ``fn(*args)`` once per worker; return the time in ms."""
    start = time.perf_counter()
    for future in [pool.submit(fn, *args) for _ in range(WORKERS)]:
        future.result()
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    expected = WORKERS * N
    with proxyshare.ShareManager() as mgr, proxyshare.ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(warm_up, range(WORKERS)))

        hits = mgr.counter("hits")  # get-or-create by name
        counter_ms = timed(pool, add, hits, N)
        counted = hits.get()

        guard, totals = mgr.lock("guard"), mgr.dict("totals")
        totals["hits"] = 0
        lock_ms = timed(pool, add_with_lock, guard, totals, N)
        locked = totals["hits"]

    print(f"{WORKERS} workers x {N:,} increments through proxyshare proxies")
    print(
        f"  counter.increment():            {counted:>9,} of {expected:,}  {counter_ms:8.1f} ms"
        f"  ({counter_ms * 1000 / expected:.1f} us per increment)"
    )
    print(
        f"  lock + dict read-modify-write: {locked:>9,} of {expected:,}  {lock_ms:8.1f} ms"
        f"  ({lock_ms * 1000 / expected:.1f} us per increment)"
    )
    ok = counted == expected and locked == expected
    print(
        f"result: counter {counted}/{expected}, lock+dict {locked}/{expected} "
        f"{'correct' if ok else 'WRONG'}"
    )
    raise SystemExit(0 if ok else 1)
