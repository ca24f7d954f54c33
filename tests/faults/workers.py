"""Worker functions for the fault suite (module level: importable by spawn/forkserver).

Times are ``time.monotonic()`` readings: CLOCK_MONOTONIC is one clock for the
whole machine on Linux, so a reading taken in a worker can be compared with
one taken in the test process.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from proxyshare import ServerUnavailableError

# -- load ---------------------------------------------------------------------


def increment_n(counter: Any, n: int) -> None:
    for _ in range(n):
        counter.increment()


def locked_read_modify_write(lock: Any, d: Any, key: str, n: int) -> None:
    for _ in range(n):
        with lock:
            d[key] = d.get(key, 0) + 1


# -- holder death ----------------------------------------------------------------


def hold_lock_forever(lock: Any, ready: Any) -> None:
    lock.acquire()
    ready.set()
    while True:
        time.sleep(60)


def acquire_and_report(lock: Any, results: Any) -> None:
    """Block in ``acquire()``; report when it returns."""
    lock.acquire()
    results.put(time.monotonic())
    lock.release()


def acquire_both_and_die(lock: Any, semaphore: Any) -> None:
    """A pool task that dies (SIGKILL) while holding a lock and a permit."""
    lock.acquire()
    semaphore.acquire()
    os.kill(os.getpid(), signal.SIGKILL)


# -- server death ------------------------------------------------------------------


def _blocking_call(kind: str, proxy: Any) -> None:
    """One call of ``kind``; the ones that block never return while the server lives."""
    if kind == "increment-loop":
        proxy.increment()
    elif kind in ("lock.acquire", "semaphore.acquire"):
        proxy.acquire()
    elif kind == "queue.get":
        proxy.get()
    elif kind in ("event.wait", "barrier.wait"):
        proxy.wait()
    else:
        raise ValueError(kind)


def call_until_unavailable(kind: str, proxy: Any, results: Any, calls: int = 3) -> None:
    """Call until the server dies; report (error type, time) of each later call.

    After the first ``ServerUnavailableError`` it calls ``calls - 1`` more
    times: every one must fail fast too (nothing hangs on reconnect).
    """
    while True:
        try:
            _blocking_call(kind, proxy)
        except ServerUnavailableError:
            break
        except BaseException as exc:
            results.put((type(exc).__name__, time.monotonic()))
            return
    results.put(("ServerUnavailableError", time.monotonic()))
    for _ in range(calls - 1):
        try:
            _blocking_call(kind, proxy)
        except BaseException as exc:
            results.put((type(exc).__name__, time.monotonic()))
        else:
            results.put(("no error", time.monotonic()))


# -- model-based ----------------------------------------------------------------


def apply(proxy: Any, method: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    """Run ``proxy.method(*args)`` in a helper process; return ("ok", result) or ("error", type)."""
    try:
        return ("ok", getattr(proxy, method)(*args))
    except Exception as exc:
        return ("error", type(exc).__name__)


# -- parent death -----------------------------------------------------------------


def start_manager_and_report(method: str, pipe: Any, pool_workers: int = 0) -> None:
    """Start an embedded server (and maybe a fork pool); send the pids; idle until killed.

    Sends ``(server pid, [pool worker pids])``.  Fork pool workers inherit
    every descriptor this process holds, among them its end of the pipe the
    server watches: the server must notice this process's death anyway.
    """
    import concurrent.futures as cf
    import multiprocessing

    import proxyshare

    mgr = proxyshare.ShareManager(ctx=multiprocessing.get_context(method))
    mgr.start()
    counter = mgr.counter("alive")
    pool_pids: list[int] = []
    if pool_workers:
        fork = multiprocessing.get_context("fork")
        pool = cf.ProcessPoolExecutor(pool_workers, mp_context=fork)
        pool.submit(increment_n, counter, 1).result(timeout=60)
        pool_pids = list(pool._processes)
    pipe.send((mgr._process.pid, pool_pids))
    while True:
        time.sleep(60)


# -- bad values -------------------------------------------------------------------


def _explode(kind: str) -> Any:
    if kind == "ValueError":
        raise ValueError("this value refuses to be unpickled")
    if kind == "SystemExit":
        raise SystemExit(3)
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if kind == "unrebuildable":
        raise TwoPartError("a", "b")
    if kind == "ImportError":
        import proxyshare_module_that_does_not_exist  # type: ignore[import-not-found]  # noqa: F401
    raise AssertionError(kind)


class TwoPartError(Exception):
    """Pickles, but cannot be rebuilt from its args (``__init__`` wants two)."""

    def __init__(self, first: str, second: str) -> None:
        super().__init__(f"{first}/{second}")


class ExplodesWhenUnpickled:
    """Pickles fine in the client; raises ``kind`` when the server unpickles it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (_explode, (self.kind,))


class RefusesToPickle:
    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("RefusesToPickle cannot be pickled")


def survive_restart(lock: Any, counter: Any, restarted: Any, results: Any) -> None:
    """Block in acquire until the server dies, then use the restarted server."""
    try:
        lock.acquire()
    except ServerUnavailableError:
        results.put(("ServerUnavailableError", time.monotonic()))
    else:
        results.put(("acquired", time.monotonic()))
        return
    if not restarted.wait(60):
        results.put(("no restart", time.monotonic()))
        return
    results.put(("incremented", counter.increment()))


def block_in(kind: str, proxy: Any, ready: Any) -> None:
    """Connect, say so, then block in ``kind`` until killed."""
    proxy.name  # noqa: B018  # (no round trip) keeps the proxy alive in this frame
    ready.set()
    _blocking_call(kind, proxy)


# -- durable state and at-least-once queues ---------------------------------------------


def count_acks_until_unavailable(counter: Any, tally: Any, key: str, results: Any) -> None:
    """Increment a counter and a dict key in turn until the server dies.

    Reports ``(key, acknowledged increments, acknowledged dict increments)``:
    the calls that returned, which a restarted server must all still hold.
    """
    acked = [0, 0]
    try:
        while True:
            counter.increment()
            acked[0] += 1
            tally.increment(key)
            acked[1] += 1
    except ServerUnavailableError:
        results.put((key, *acked))


def take_and_hold(q: Any, how: str, taken: Any, default_sigterm: bool = False) -> None:
    """Take work from ``q`` (``get`` or ``get_many``), report it, then "work" until killed.

    ``default_sigterm``: SIGTERM's default action, whatever a tool installed (coverage's
    ``sigterm = true`` handler exits through atexit, which is a clean exit).
    """
    if default_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    got = q.get(timeout=30) if how == "get" else q.get_many(2, timeout=30)
    taken.put(got)
    while True:
        time.sleep(60)


def take_one(q: Any) -> Any:
    """A pool task that takes one item and returns: its process then exits cleanly."""
    return q.get(timeout=30)


class PicklesOnlyWhereMade:
    """Crosses to the server, which cannot pickle it again (to record it): another pid."""

    def __init__(self, pid: int | None = None) -> None:
        self.pid = os.getpid() if pid is None else pid

    def __reduce__(self) -> tuple[Any, ...]:
        if os.getpid() != self.pid:
            raise TypeError("PicklesOnlyWhereMade pickles only in the process that made it")
        return (PicklesOnlyWhereMade, (self.pid,))
