"""``proxyshare bench --micro``: one client, one primitive at a time.

Where the scenarios measure W workers contending for one counter, this mode
measures the cost of each primitive alone, from the bench process, next to
the raw ``multiprocessing.connection`` round trip (the transport floor), so
the overhead of each operation over the floor is visible.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from proxyshare._bench import scenarios as S
from proxyshare._bench import workers as W
from proxyshare._bench.report import BenchConfig, BenchReport, Measurement, Run, Steps, failure_text

__all__ = ["MICRO", "run_micro"]


def _micro_floor(env: S.BenchEnv) -> tuple[Callable[[], Any], Callable[[], None]]:
    from multiprocessing import connection as mpc

    address, authkey = env.floor_server()
    conn = mpc.Client(address, authkey=authkey)

    def op() -> None:
        conn.send_bytes(W.FLOOR_MESSAGE)
        conn.recv_bytes()

    return op, conn.close


def _micro_share(what: str) -> Callable[[S.BenchEnv], tuple[Callable[[], Any], None]]:
    def make(env: S.BenchEnv) -> tuple[Callable[[], Any], None]:
        from proxyshare import _protocol as P

        mgr = env.durable_manager() if what == "durable" else env.share_manager()
        name = env.name("micro", what)
        if what == "durable":
            return mgr.counter(name).increment, None
        if what == "ping":
            ref = mgr.server_ref
            return (lambda: ref.call(P.PING, None, b"x")), None
        if what in ("get", "increment"):
            counter = mgr.counter(name)
            return (counter.get if what == "get" else counter.increment), None
        if what == "lock":
            lock = mgr.lock(name)

            def acquire_release() -> None:
                lock.acquire()
                lock.release()

            return acquire_release, None
        d = mgr.dict(name)
        d["k"] = 0
        if what == "dict-set":
            return (lambda: d.__setitem__("k", 1)), None
        if what == "dict-get":
            return (lambda: d["k"]), None
        return (lambda: d.increment("k")), None

    return make


def _micro_shm(what: str) -> Callable[[S.BenchEnv], tuple[Callable[[], Any], None]]:
    def make(env: S.BenchEnv) -> tuple[Callable[[], Any], None]:
        mgr = env.share_manager()
        name = env.name("micro-shm", what)
        if what == "increment":
            counter = S.shm_open(lambda: mgr.counter(name, shared_memory=True), "counter")
            return counter.increment, None
        lock = S.shm_open(lambda: mgr.lock(name, shared_memory=True), "lock")

        def acquire_release() -> None:
            lock.acquire()
            lock.release()

        return acquire_release, None

    return make


def _micro_base(env: S.BenchEnv) -> tuple[Callable[[], Any], None]:
    return env.base_manager().Counter().increment, None


def _micro_sync(env: S.BenchEnv) -> tuple[Callable[[], Any], None]:
    return env.sync_manager().Value("q", 0).get, None


def _micro_redis(env: S.BenchEnv) -> tuple[Callable[[], Any], Callable[[], None]]:
    client = env.redis()
    key = "proxyshare-bench:" + env.name("micro", "incr")
    return (lambda: client.incr(key)), (lambda: client.delete(key))


MICRO: dict[str, tuple[str, Callable[[S.BenchEnv], tuple[Callable[[], Any], Any]]]] = {
    "floor": ("raw multiprocessing.connection ping-pong (unix socket)", _micro_floor),
    "proxyshare ping": ("lean request through the client path, no resource", _micro_share("ping")),
    "counter.get()": ("proxyshare counter read", _micro_share("get")),
    "counter.increment()": ("proxyshare counter increment", _micro_share("increment")),
    "durable counter.increment()": (
        "the same, on a server with a state dir (fsync everysec)",
        _micro_share("durable"),
    ),
    "lock acquire+release": ("proxyshare lock, uncontended", _micro_share("lock")),
    "dict set": ("d[k] = v", _micro_share("dict-set")),
    "dict get": ("d[k]", _micro_share("dict-get")),
    "dict.increment()": ("d.increment(k)", _micro_share("dict-incr")),
    "shm counter.increment()": ("shared_memory=True counter", _micro_shm("increment")),
    "shm lock acquire+release": ("shared_memory=True lock", _micro_shm("lock")),
    "basemanager increment()": ("bare stdlib BaseManager counter", _micro_base),
    "syncmanager Value.get()": ("stdlib Manager().Value read", _micro_sync),
    "redis INCR": ("redis-py INCR", _micro_redis),
}


def _time(op: Callable[[], Any], n: int) -> float:
    """µs per call of ``op`` over ``n`` calls."""
    t0 = time.perf_counter()
    for _ in range(n):
        op()
    return (time.perf_counter() - t0) / n * 1e6


def run_micro(env: S.BenchEnv, config: BenchConfig, report: BenchReport, steps: Steps) -> None:
    n = config.ops_per_worker
    warm_up = max(1, min(200, n // 10))
    costs: dict[str, list[float]] = {}
    ops: dict[str, tuple[Callable[[], Any], Any]] = {}
    try:
        # Start every server and connect first, so that no timing pays for a
        # process that is still starting up next to it.
        for name, (_desc, make) in MICRO.items():
            try:
                ops[name] = make(env)
                for _ in range(warm_up):
                    ops[name][0]()
            except S.Skip as skip:
                report.skipped[name] = str(skip)
            except Exception as exc:  # reported in the output, and the exit code is 1
                report.failed[name] = failure_text(exc)
        for _ in range(config.repeat):
            for name in MICRO:
                steps.start(name)
                if name in ops and name not in report.failed:
                    try:
                        costs.setdefault(name, []).append(_time(ops[name][0], n))
                    except Exception as exc:  # reported in the output, and the exit code is 1
                        report.failed[name] = failure_text(exc)
                steps.finish(name)
    finally:
        for _op, close in ops.values():
            if close is not None:
                close()
    floor = statistics.median(costs["floor"]) if "floor" in costs else None
    for name, values in costs.items():
        median = statistics.median(values)
        report.measurements.append(
            Measurement(
                scenario=name,
                description=MICRO[name][0],
                mechanism="micro",
                unit="op",
                workers=1,
                ops_per_worker=n,
                us_per_op=median,
                us_per_op_min=min(values),
                us_per_op_max=max(values),
                us_per_op_stdev=statistics.stdev(values) if len(values) > 1 else 0.0,
                ops_per_s=1e6 / median if median > 0 else math.inf,
                ratio_to_floor=median / floor if floor else None,
                expected=n,
                observed=n,
                lost_updates=0,
                racy=False,
                correct=True,
                runs=[Run(us_per_op=v, expected=n, observed=n) for v in values],
            )
        )
