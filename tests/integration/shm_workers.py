"""Worker functions for the shared-memory tests (module level: picklable under spawn)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any


def _in_threads(body: Callable[[], None], threads: int) -> None:
    """Run ``body`` in ``threads`` threads of this process; re-raise the first error."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            body()
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]


def increment_in_threads(counter: Any, n: int, threads: int) -> int:
    """``threads`` threads of this process each add 1 to ``counter`` ``n`` times."""

    def body() -> None:
        for _ in range(n):
            counter.increment()

    _in_threads(body, threads)
    return n * threads


def guarded_read_modify_write(lock: Any, counter: Any, n: int, threads: int = 1) -> int:
    """``get`` then ``set`` under ``lock``: exact only if the lock excludes everybody.

    ``sleep(0)`` between the read and the write invites another thread or
    process to run there, so a lock that does not exclude loses updates.
    """

    def body() -> None:
        for _ in range(n):
            with lock:
                value = counter.get()
                time.sleep(0)
                counter.set(value + 1)

    _in_threads(body, threads)
    return n * threads


def hold_lock_and_fork(lock: Any, ready: Any, child_pid: Any) -> None:
    """Acquire ``lock``, fork a child that just sleeps, then wait to be killed.

    The child inherits this process's descriptors; it must close them, or the
    lock would survive this process's death.
    """
    lock.acquire()
    pid = os.fork()
    if pid == 0:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(0)
    child_pid.value = pid
    ready.set()
    while True:
        time.sleep(1)


def lock_state_in_child(lock: Any) -> tuple[bool, bool, str]:
    """(locked(), acquire(blocking=False), release() error name) seen by another process."""
    try:
        lock.release()
        release = "no error"
    except Exception as exc:
        release = type(exc).__name__
    return lock.locked(), lock.acquire(blocking=False), release
