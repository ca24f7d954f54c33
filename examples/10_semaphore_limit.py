"""A semaphore that limits how many pool workers use a resource at once.

Six workers share a (pretend) database that accepts only two connections.
``with slots:`` lets at most two of them in; the others queue up first come,
first served.  If a worker is killed while inside, its permit comes back as
soon as its connection to the server drops -- nobody waits forever.

Run:  python examples/10_semaphore_limit.py
"""

from __future__ import annotations

import os
import time

import proxyshare

JOBS = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "12"))
WORKERS = 6
LIMIT = 2


def query(job: int, slots: proxyshare.Semaphore, inside: proxyshare.Counter) -> int:
    """Use the database under the semaphore; return how many were inside with us."""
    with slots:  # blocks while LIMIT others hold a permit
        now = inside.increment()
        time.sleep(0.05)  # the "query"
        inside.decrement()
    return now


if __name__ == "__main__":
    with proxyshare.ShareManager() as mgr, proxyshare.ProcessPoolExecutor(WORKERS) as pool:
        slots = mgr.semaphore("db-connections", value=LIMIT)
        inside = mgr.counter("inside")
        started = time.perf_counter()
        futures = [pool.submit(query, job, slots, inside) for job in range(JOBS)]
        crowd = [f.result() for f in futures]
        elapsed = time.perf_counter() - started
        free = slots.value()

    for job, now in enumerate(crowd):
        print(f"  job {job:2d}: {now} inside the database with it")
    peak = max(crowd)
    print(f"{JOBS} jobs x 0.05 s on {WORKERS} workers took {elapsed:.2f} s (limit {LIMIT} at once)")
    ok = peak <= LIMIT and free == LIMIT
    print(f"{'OK' if ok else 'WRONG'}: at most {peak} inside at once (limit {LIMIT}), {free} free")
    raise SystemExit(0 if ok else 1)
