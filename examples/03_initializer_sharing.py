"""Step 3: share the Value through the pool's ``initializer`` -- fast, but rigid.

A ``multiprocessing.Value`` may reach a worker by *inheritance*: pass it in
``initargs`` and let the ``initializer`` store it in a global when the worker
starts.  Every increment is then a lock and a memory write in the worker
itself -- the fastest way there is.  The price: the Value must exist before
the pool starts, every task of that pool sees the same one, and it only
works between processes of one machine that the pool itself started.

Without the Value's lock, ``value.value += 1`` is a read and a write: two
workers overwrite each other's updates and the total comes out short.

Run:  python examples/03_initializer_sharing.py
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "10000"))
WORKERS = 2

shared: Any = None  # set in each worker by init()


def init(value: Any) -> None:
    global shared
    shared = value


def add_locked(n: int) -> int:
    for _ in range(n):
        with shared.get_lock():
            shared.value += 1
    return n


def add_unlocked(n: int) -> int:
    for _ in range(n):
        shared.value += 1  # read, then write: another worker may write in between
    return n


def warm_up(_: int) -> None:
    """A no-op task: makes the pool start its workers before the clock starts."""


def run(work: Any) -> tuple[int, float]:
    """Run ``work`` on WORKERS workers sharing one Value; return (total, ms)."""
    value = multiprocessing.Value("q", 0)
    with ProcessPoolExecutor(WORKERS, initializer=init, initargs=(value,)) as pool:
        list(pool.map(warm_up, range(WORKERS)))
        start = time.perf_counter()
        for future in [pool.submit(work, N) for _ in range(WORKERS)]:
            future.result()
        elapsed = (time.perf_counter() - start) * 1000
    return value.value, elapsed


if __name__ == "__main__":
    expected = WORKERS * N
    locked, locked_ms = run(add_locked)
    unlocked, unlocked_ms = run(add_unlocked)
    print(f"{WORKERS} workers x {N:,} increments, Value shared via initializer=")
    print(f"  with lock:    {locked:>9,} of {expected:,}  {locked_ms:8.1f} ms")
    print(
        f"  without lock: {unlocked:>9,} of {expected:,}  {unlocked_ms:8.1f} ms  "
        f"lost updates: {expected - unlocked:,}"
        + ("  (none this run: the workers did not overlap enough)" if unlocked == expected else "")
    )
    print(
        f"result: with lock {locked}/{expected} {'correct' if locked == expected else 'WRONG'}; "
        f"without lock lost {expected - unlocked}"
    )
    raise SystemExit(0 if locked == expected else 1)
