"""The "what the cost buys" table: facts the bench checks itself.

For each mechanism whose scenarios ran, a probe pool that is already running
is handed a freshly made object as a ``submit`` argument (which also shows
whether objects made after the pool started can be used), a server is
reached by TCP address, and a lock holder is SIGKILLed to time how long its
lock stays taken.  Where a fact follows from how a mechanism works rather
than from a check, the cell says "structural".
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Literal

from proxyshare._bench import scenarios as S
from proxyshare._bench import workers as W
from proxyshare._bench.report import (
    TASK_TIMEOUT,
    BenchConfig,
    BenchReport,
    Capability,
    CapabilityRow,
    failure_text,
    spec_of,
)

__all__ = ["probe_capabilities"]


# -- the probes ---------------------------------------------------------------


@dataclass
class Fact:
    """One cell of the capability table."""

    works: bool | None  # None: not applicable
    basis: Literal["checked", "structural", "n/a"]
    detail: str
    seconds: float | None = None  # holder-death probe: time until the lock was free


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def probe_submit(pool: cf.ProcessPoolExecutor, kind: str, obj: Any, timeout: float) -> Fact:
    """Submit ``obj`` (made after the pool started) and use it in the worker."""
    try:
        pool.submit(W.probe_use, kind, obj).result(timeout=timeout)
    except Exception as exc:  # the failure *is* the finding
        return Fact(False, "checked", f"submit failed: {_first_line(exc)}")
    return Fact(True, "checked", "submitted after the pool started; the worker used it")


def probe_holder_death(ctx: BaseContext, lock: Any, wait: float) -> tuple[Fact, float | None]:
    """SIGKILL a process holding ``lock``; how long until this process can take it?"""
    ready = ctx.Event()
    proc = ctx.Process(target=W.hold_lock, args=(lock, ready), daemon=True)  # type: ignore[attr-defined]
    proc.start()
    try:
        pid = proc.pid
        if pid is None or not ready.wait(60):
            return Fact(None, "n/a", "the holder process did not acquire the lock in 60 s"), None
        os.kill(pid, signal.SIGKILL)
        proc.join(10)
        t0 = time.perf_counter()
        got = lock.acquire(True, wait)
        elapsed = time.perf_counter() - t0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if got:
        lock.release()
        detail = f"free {elapsed * 1e3:.2f} ms after SIGKILL"
        return Fact(True, "checked", detail, elapsed), elapsed
    return Fact(False, "checked", f"still held {wait:g} s after SIGKILL"), None


def probe_tcp_share(env: S.BenchEnv, pool: cf.ProcessPoolExecutor, timeout: float) -> Fact:
    """A proxyshare server on a TCP address, used from a pool worker."""
    from proxyshare._manager import ShareManager

    mgr = ShareManager(address=("127.0.0.1", 0), ctx=env.ctx)
    mgr.start()
    try:
        fact = probe_submit(pool, "counter", mgr.counter("tcp-probe"), timeout)
    finally:
        mgr.shutdown()
    return _tcp_fact(fact)


def probe_tcp_sync(env: S.BenchEnv, pool: cf.ProcessPoolExecutor, timeout: float) -> Fact:
    """A stdlib SyncManager on a TCP address, used from a pool worker."""
    from multiprocessing.managers import SyncManager

    mgr = SyncManager(address=("127.0.0.1", 0), ctx=env.ctx)
    mgr.start()
    try:
        fact = probe_submit(pool, "syncmanager-value", mgr.Value("q", 0), timeout)
    finally:
        mgr.shutdown()
    return _tcp_fact(fact)


def _tcp_fact(fact: Fact) -> Fact:
    if fact.works:
        return Fact(True, "checked", "a worker reached it by TCP address (checked on loopback)")
    return Fact(False, "checked", f"over TCP: {fact.detail}")


# -- the table ----------------------------------------------------------------


def _cap(fact: Fact) -> Capability:
    return Capability(
        works=fact.works,
        basis=fact.basis,
        detail=fact.detail,
        seconds=fact.seconds,
    )


_Facts = tuple[Fact, Fact, Fact, Fact]

_NOT_SUBMITTABLE = (
    "an asyncio proxy belongs to its event loop and does not pickle; the same resource "
    "passes as a sync proxy"
)


def probe_capabilities(
    env: S.BenchEnv, config: BenchConfig, report: BenchReport
) -> list[CapabilityRow]:
    """One row per scenario (but the floor), from probes run once per mechanism."""
    names = [n for n in config.selected if n != "floor"]
    if config.clients:
        names.append(S.CLIENTS_SCENARIO.name)
    mechanisms = {spec_of(n).mechanism for n in names}
    stay_held = 0.5 if config.quick else 1.0
    facts: dict[str, _Facts] = {}
    pool = cf.ProcessPoolExecutor(1, mp_context=env.ctx)
    try:
        pool.submit(W.pid).result(timeout=TASK_TIMEOUT)  # the pool is running from here on
        for mechanism in sorted(mechanisms):
            try:
                facts[mechanism] = _PROBES[mechanism](env, pool, report, stay_held)
            except Exception as exc:  # a probe that breaks is reported, not hidden
                broken = Fact(None, "n/a", f"probe failed: {failure_text(exc)}")
                facts[mechanism] = (broken, broken, broken, broken)
                report.failed[f"probe {mechanism}"] = failure_text(exc)
    finally:
        S.shutdown_pool(pool)
    rows = []
    for name in names:
        spec = spec_of(name)
        mechanism = spec.mechanism
        submit, after, remote, death = facts[mechanism]
        if not spec.submittable:
            submit = after = Fact(False, "structural", _NOT_SUBMITTABLE)
        rows.append(
            CapabilityRow(
                scenario=name,
                mechanism=mechanism,
                submit_argument=_cap(submit),
                created_after_pool_start=_cap(after),
                other_machine=_cap(remote),
                lock_release_on_holder_death=_cap(death),
            )
        )
    return rows


def _after_from_submit(submit: Fact) -> Fact:
    if submit.works:
        return Fact(True, "checked", "made after the pool started, then submitted")
    return submit


def _unavailable(reason: str) -> _Facts:
    fact = Fact(None, "n/a", f"not available here: {reason}")
    return (fact, fact, fact, fact)


def _probe_initializer(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    submit = probe_submit(pool, "mp-value", env.ctx.Value("q", 0), TASK_TIMEOUT)
    if submit.works:
        after = _after_from_submit(submit)
    else:
        after = Fact(
            False,
            "structural",
            "initializer= runs once as each worker starts; a later object would have "
            "to be submitted, which fails",
        )
    remote = Fact(
        False, "structural", "shared memory and pipes inherited within one machine's process tree"
    )
    death, _ = probe_holder_death(env.ctx, env.ctx.Lock(), stay_held)
    return submit, after, remote, death


def _probe_sync(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    mgr = env.sync_manager()
    submit = probe_submit(pool, "syncmanager-value", mgr.Value("q", 0), TASK_TIMEOUT)
    remote = probe_tcp_sync(env, pool, TASK_TIMEOUT)
    death, _ = probe_holder_death(env.ctx, mgr.Lock(), stay_held)
    return submit, _after_from_submit(submit), remote, death


def _probe_base(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    submit = probe_submit(pool, "basemanager", env.base_manager().Counter(), TASK_TIMEOUT)
    remote = Fact(
        True, "structural", "same transport as SyncManager (a BaseManager can listen on TCP)"
    )
    death = Fact(None, "n/a", "no lock: the floor serves a counter only")
    return submit, _after_from_submit(submit), remote, death


def _probe_share(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    mgr = env.share_manager()
    submit = probe_submit(pool, "counter", mgr.counter(env.name("probe", "c")), TASK_TIMEOUT)
    remote = probe_tcp_share(env, pool, TASK_TIMEOUT)
    death, _ = probe_holder_death(env.ctx, mgr.lock(env.name("probe", "l")), 5.0)
    return submit, _after_from_submit(submit), remote, death


def _probe_shm(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    mgr = env.share_manager()
    try:
        counter = S.shm_open(
            lambda: mgr.counter(env.name("probe", "shm"), shared_memory=True), "counter"
        )
        lock = S.shm_open(lambda: mgr.lock(env.name("probe", "shm-l"), shared_memory=True), "lock")
    except S.Skip as skip:
        return _unavailable(str(skip))
    submit = probe_submit(pool, "counter", counter, TASK_TIMEOUT)
    remote = Fact(
        False,
        "structural",
        "same host only: a file in shared memory; unpickled elsewhere it raises ProxyShareError",
    )
    death, _ = probe_holder_death(env.ctx, lock, 5.0)
    return submit, _after_from_submit(submit), remote, death


def _probe_adder(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    try:
        adder = S.adder_open(env.share_manager(), env.name("probe", "adder"))
    except S.Skip as skip:
        return _unavailable(str(skip))
    submit = probe_submit(pool, "adder", adder, TASK_TIMEOUT)
    remote = Fact(
        False,
        "structural",
        "same host only: slots in a shared-memory file; unpickled elsewhere it raises "
        "ProxyShareError",
    )
    death = Fact(
        None,
        "n/a",
        "no lock: add() takes none; a killed worker's slot is freed by the kernel and its "
        "counts stay in the total",
    )
    return submit, _after_from_submit(submit), remote, death


def _probe_redis(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    try:
        env.redis()  # skips, with the reason, when redis-py or the server is missing
    except S.Skip as skip:
        return _unavailable(str(skip))
    import redis

    submit = probe_submit(pool, "redis-client", redis.Redis.from_url(env.redis_url), 30)
    if not submit.works:
        submit.detail += " (workers pass the URL and connect themselves)"
    after = Fact(True, "structural", "a key exists once the first INCR runs; workers need the URL")
    remote = _redis_remote(env)
    death = Fact(None, "n/a", "INCR needs no lock (redis-py locks are leases that expire)")
    return submit, after, remote, death


def _redis_remote(env: S.BenchEnv) -> Fact:
    if env.redis_url.startswith(("redis://", "rediss://")):
        return Fact(True, "checked", f"the bench reached it by URL ({env.redis_shown})")
    return Fact(True, "structural", "Redis serves TCP clients; this run used a unix socket")


def _probe_share_redis(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    if "proxyshare-redis" in report.skipped:
        return _unavailable(report.skipped["proxyshare-redis"])
    from proxyshare._manager import connect

    client = connect(env.redis_url)
    counter = client.counter(env.name("probe", "redis"))
    try:
        submit = probe_submit(pool, "counter", counter, TASK_TIMEOUT)
    finally:
        client.delete(counter.name)  # Redis outlives the bench: leave no keys behind
    death = Fact(
        True,
        "structural",
        "a dead holder's lease expires (default 10 s), not at once like the served lock",
    )
    return submit, _after_from_submit(submit), _redis_remote(env), death


_PROBES: dict[str, Callable[[S.BenchEnv, cf.ProcessPoolExecutor, BenchReport, float], _Facts]] = {
    "multiprocessing (initializer)": _probe_initializer,
    "stdlib SyncManager": _probe_sync,
    "stdlib BaseManager": _probe_base,
    "proxyshare (served)": _probe_share,
    "proxyshare (shared memory)": _probe_shm,
    "proxyshare (adder)": _probe_adder,
    "redis-py": _probe_redis,
    "proxyshare (Redis backend)": _probe_share_redis,
}
