"""Progress from pool workers, reported through a proxyshare queue.

Each task reports every step it finishes with ``progress.put(...)``; the
parent reads the queue while the pool runs and prints a progress line.  The
queue proxy is a plain ``submit()`` argument: no pool ``initializer``, and
no ``Manager().Queue()`` whose proxy breaks with a custom authkey.

``get_many()`` takes everything waiting (up to a limit) in one round trip,
so the parent keeps up however chatty the workers are.

Run:  python examples/09_queue_progress.py
"""

from __future__ import annotations

import os
import time

import proxyshare

TASKS = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "12"))
STEPS = 5
WORKERS = 3


def crunch(task: int, progress: proxyshare.Queue) -> int:
    """A pretend job of STEPS steps that reports each one as it goes."""
    for step in range(1, STEPS + 1):
        time.sleep(0.01)  # stands in for real work
        progress.put((task, step))
    return task * task


if __name__ == "__main__":
    total = TASKS * STEPS
    with proxyshare.ShareManager() as mgr, proxyshare.ProcessPoolExecutor(WORKERS) as pool:
        progress = mgr.queue("progress")
        futures = [pool.submit(crunch, task, progress) for task in range(TASKS)]

        seen, finished = 0, 0
        while seen < total:
            batch = progress.get_many(100, timeout=30)  # waits only while the queue is empty
            if not batch:
                raise RuntimeError("no progress for 30 s: are the workers stuck?")
            seen += len(batch)
            for task, step in batch:
                if step == STEPS:
                    finished += 1
                    print(
                        f"  task {task:2d} done: {seen:3d}/{total} steps ({100 * seen // total}%)"
                    )
        results = [f.result() for f in futures]

    expected = sum(t * t for t in range(TASKS))
    ok = seen == total and finished == TASKS and sum(results) == expected
    print(
        f"{'OK' if ok else 'WRONG'}: {TASKS} tasks on {WORKERS} workers, {seen} progress messages"
    )
    raise SystemExit(0 if ok else 1)
