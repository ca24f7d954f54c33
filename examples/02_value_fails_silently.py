"""Step 2: a process pool and a ``multiprocessing.Value`` -- the silent failure.

Threads share memory; processes do not.  The natural next try is to hand a
``multiprocessing.Value`` to each task.  With the stdlib executor the call
*looks* fine: ``submit()`` returns, the pool shuts down, nothing is printed.
The task never ran -- the Value could not be pickled, and the error sits in
the future until somebody calls ``f.exception()`` or ``f.result()``.

``proxyshare.ProcessPoolExecutor`` is the same executor with a check in
``submit()``/``map()``: the bad argument raises ``UnshareableArgumentError``
at once, naming the argument and what to use instead (``mgr.counter(...)``).

Run:  python examples/02_value_fails_silently.py
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from typing import Any

import proxyshare

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "10000"))
WORKERS = 2


def count(value: Any, n: int) -> int:
    for _ in range(n):
        with value.get_lock():
            value.value += 1
    return n


if __name__ == "__main__":
    value = multiprocessing.Value("i", 0)

    print("1) stdlib ProcessPoolExecutor.submit(count, multiprocessing.Value(...))")
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(count, value, N) for _ in range(WORKERS)]
    elapsed = (time.perf_counter() - start) * 1000
    # Nothing was raised or printed above: the pool ran and shut down "fine".
    print(f"   pool finished in {elapsed:.1f} ms, no error shown; value = {value.value}")
    error = futures[0].exception()  # the only place the failure is visible
    print(f"   only f.exception() tells: {type(error).__name__}: {error}")

    print("2) proxyshare.ProcessPoolExecutor.submit(count, multiprocessing.Value(...))")
    with proxyshare.ProcessPoolExecutor(WORKERS) as pool:
        try:
            pool.submit(count, value, N)
        except proxyshare.UnshareableArgumentError as exc:
            caught: Exception | None = exc
        else:
            caught = None
    if caught is None:
        print("   submit() accepted the Value: this proxyshare has no argument check")
        raise SystemExit(1)
    print(f"   raised at submit time: {type(caught).__name__}: {caught}")
    stdlib_silent = error is not None and value.value == 0
    print(
        f"result: stdlib failed silently={stdlib_silent}, "
        f"proxyshare raised {type(caught).__name__} at submit"
    )
