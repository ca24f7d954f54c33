"""Step 7: the same proxies in other executors -- loky and Dask.

A proxyshare proxy pickles as (server address, authkey, name), so any
executor that pickles its arguments can carry it: loky's reusable executor
and a Dask cluster's worker processes increment the same counter as a
``ProcessPoolExecutor`` would.  Either library may be missing: that part is
then skipped with a message (``pip install 'proxyshare[loky,dask]'``).

Run:  python examples/07_dask_and_loky.py
"""

from __future__ import annotations

import logging
import os
import time

import proxyshare

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "10000"))
WORKERS = 2


def add(counter: proxyshare.Counter, n: int) -> int:
    for _ in range(n):
        counter.increment()
    return n


def with_loky(hits: proxyshare.Counter) -> float | None:
    """Run ``add`` on loky's reusable executor; the time in ms, None if not installed."""
    try:
        from loky import get_reusable_executor
    except ImportError:
        print("  loky: not installed, skipped (pip install loky)")
        return None
    executor = get_reusable_executor(max_workers=WORKERS)
    start = time.perf_counter()
    for future in [executor.submit(add, hits, N) for _ in range(WORKERS)]:
        future.result()
    elapsed = (time.perf_counter() - start) * 1000
    executor.shutdown(wait=True)
    return elapsed


def with_dask(hits: proxyshare.Counter) -> float | None:
    """Run ``add`` on a local Dask cluster of worker processes; ms, None if not installed."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print("  dask: distributed is not installed, skipped (pip install distributed)")
        return None
    cluster = LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,  # real worker processes: the proxy crosses a process boundary
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    with cluster, Client(cluster) as client:
        start = time.perf_counter()
        # pure=False: two identical calls are two tasks, not one cached result.
        futures = [client.submit(add, hits, N, pure=False) for _ in range(WORKERS)]
        client.gather(futures)
        return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    with proxyshare.ShareManager() as mgr:
        hits = mgr.counter("hits")
        ran = 0
        for label, run in [("loky", with_loky), ("dask", with_dask)]:
            before = hits.get()
            elapsed = run(hits)
            if elapsed is None:
                continue
            ran += 1
            added = hits.get() - before
            print(
                f"  {label}: {WORKERS} workers x {N:,} increments -> +{added:,} in {elapsed:.0f} ms"
            )
        total, expected = hits.get(), ran * WORKERS * N
    ok = total == expected
    print(f"result: {ran} executors, counter {total}/{expected} {'correct' if ok else 'WRONG'}")
    raise SystemExit(0 if ok else 1)
