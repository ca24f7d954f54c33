"""Worker functions for the ``proxyshare.ProcessPoolExecutor`` tests.

Module level, so that spawn and forkserver workers can import them by name.
"""

from __future__ import annotations

import os
import signal
from typing import Any

_initialized: dict[str, Any] = {}


def noop(*args: Any, **kwargs: Any) -> None:
    return None


def echo(value: Any) -> Any:
    return value


def fail(message: str) -> None:
    raise ValueError(message)


def fail_if_odd(n: int) -> int:
    if n % 2:
        raise ValueError(f"odd: {n}")
    return n


def increment_many(counter: Any, n: int) -> int:
    for _ in range(n):
        counter.increment()
    return n


def acquire_then_die(lock: Any) -> None:
    """Take the lock and die without releasing it (SIGKILL: no cleanup runs)."""
    lock.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


def remember(counter: Any, lock: Any) -> None:
    """Pool initializer: keep the proxies for the tasks of this worker."""
    _initialized["counter"] = counter
    _initialized["lock"] = lock


def increment_remembered(n: int) -> int:
    counter, lock = _initialized["counter"], _initialized["lock"]
    for _ in range(n):
        with lock:
            counter.increment()
    return n


def remember_value(value: Any) -> None:
    """Pool initializer, the seed's fast way: a multiprocessing.Value by inheritance."""
    _initialized["value"] = value


def add_to_remembered_value(n: int) -> int:
    value = _initialized["value"]
    for _ in range(n):
        with value.get_lock():
            value.value += 1
    return n
