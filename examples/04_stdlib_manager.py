"""Step 4: the stdlib manager -- general, correct with its lock, but slow.

``multiprocessing.Manager()`` runs a server process; its ``Value`` and
``Lock`` are proxies that *can* be passed as ``submit()`` arguments, created
whenever you like.  Each proxy call is a round trip to that server, and
``v.value += 1`` is two of them (get, then set) -- so without the lock,
updates are lost, and with it every increment costs four round trips.

(More stdlib pitfalls, not shown here: a lock is never released if its holder
dies; a custom authkey is dropped when a proxy is pickled into a worker.)

Run:  python examples/04_stdlib_manager.py
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "10000"))
WORKERS = 2


def add_locked(value: Any, lock: Any, n: int) -> int:
    for _ in range(n):
        with lock:  # acquire + release: two round trips
            value.value += 1  # get + set: two more
    return n


def add_unlocked(value: Any, n: int) -> int:
    for _ in range(n):
        value.value += 1  # get, then set: another worker can set in between
    return n


def warm_up(_: int) -> None:
    """A no-op task: makes the pool start its workers before the clock starts."""


if __name__ == "__main__":
    expected = WORKERS * N
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(warm_up, range(WORKERS)))

        value, lock = manager.Value("q", 0), manager.Lock()
        start = time.perf_counter()
        for future in [pool.submit(add_locked, value, lock, N) for _ in range(WORKERS)]:
            future.result()
        locked, locked_ms = value.value, (time.perf_counter() - start) * 1000

        value = manager.Value("q", 0)
        start = time.perf_counter()
        for future in [pool.submit(add_unlocked, value, N) for _ in range(WORKERS)]:
            future.result()
        unlocked, unlocked_ms = value.value, (time.perf_counter() - start) * 1000

    print(f"{WORKERS} workers x {N:,} increments, Manager().Value passed to submit()")
    print(
        f"  with Manager().Lock(): {locked:>9,} of {expected:,}  {locked_ms:8.1f} ms"
        f"  ({locked_ms * 1000 / expected:.1f} us per increment)"
    )
    print(
        f"  without lock:          {unlocked:>9,} of {expected:,}  {unlocked_ms:8.1f} ms"
        f"  lost updates: {expected - unlocked:,}"
    )
    print(
        f"result: with lock {locked}/{expected} {'correct' if locked == expected else 'WRONG'}; "
        f"without lock lost {expected - unlocked}"
    )
    raise SystemExit(0 if locked == expected else 1)
