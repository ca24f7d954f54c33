"""The benchmark's scenarios, the servers they need, and the pools they run in.

Parent side only (the bench process).  A scenario turns into a
:class:`Prepared` task: which worker body to run (see ``_bench_workers``),
with which arguments, how many operations that should add up to, and how to
read back what actually happened.  ``_bench.run_bench`` times it.

Servers (a ``ShareManager``, a stdlib ``SyncManager``, a bare
``BaseManager``, the floor echo server) start on first use and stop in
:meth:`BenchEnv.close`; a scenario whose server cannot be had raises
:class:`Skip` with a one-line reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from typing import Any

from proxyshare._bench import workers as W

__all__ = [
    "AIO_TASKS",
    "CLIENTS_SCENARIO",
    "DEFAULT_REDIS_URL",
    "FAMILIES",
    "SCENARIOS",
    "BenchEnv",
    "Prepared",
    "ScenarioSpec",
    "Skip",
    "adder_open",
    "env_shared",
    "family_of",
    "make_pool",
    "prepare",
    "redacted_url",
    "shm_open",
    "shutdown_pool",
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PIPELINE_BATCH = 1000
AIO_TASKS = 64  # concurrent tasks of the aio-64 scenario, in each worker process


def redacted_url(url: str) -> str:
    """``url`` with any password replaced by ``***``: reports and messages never show it."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Skip(Exception):
    """This scenario cannot run here; the message says why, in one line."""


# The families that group scenarios in the picture and the verdict, in the
# order they are drawn: key -> heading.
FAMILIES: dict[str, str] = {
    "same-host": "same-host fast paths",
    "served": "proxyshare, served",
    "stdlib": "stdlib managers",
    "redis": "Redis",
    "floor": "transport floors",
    "queue": "queues (per item)",
    "other": "other",
}

# Mechanisms whose family is known by name; any other is guessed from its
# words in family_of(), so a new scenario slots in without a table edit.
_FAMILY_OF_MECHANISM = {
    "multiprocessing (initializer)": "same-host",
    "proxyshare (shared memory)": "same-host",
    "proxyshare (adder)": "same-host",
    "proxyshare (served)": "served",
    "stdlib SyncManager": "stdlib",
    "stdlib BaseManager": "floor",  # basemanager-floor: the stdlib's bare floor
    "redis-py": "redis",
    "proxyshare (Redis backend)": "redis",
    "transport floor": "floor",
}


def family_of(mechanism: str, unit: str = "increment") -> str:
    """The family (a key of :data:`FAMILIES`) of a scenario with this mechanism and unit."""
    if unit == "item":
        return "queue"
    known = _FAMILY_OF_MECHANISM.get(mechanism)
    if known is not None:
        return known
    words = mechanism.lower()
    if "redis" in words:
        return "redis"
    if "shared memory" in words or "same host" in words or "same-host" in words:
        return "same-host"
    if "floor" in words:
        return "floor"
    if words.startswith("proxyshare"):
        return "served"  # asyncio, TLS, durable: all served by the manager
    if "stdlib" in words or "manager" in words:
        return "stdlib"
    return "other"


@dataclass(frozen=True)
class ScenarioSpec:
    """What a scenario measures and how to read its numbers."""

    name: str
    description: str
    mechanism: str  # row of the "what the cost buys" table
    default: bool = True
    racy: bool = False  # expected to lose updates: reported, not a failure
    unit: str = "increment"
    baseline: str | None = "initializer"  # the "x initializer" column
    # Scenarios that cost about a microsecond per op run this many times more
    # ops, so that they last long enough to time and for racy ones to collide.
    ops_scale: int = 1
    # A key of FAMILIES; "" means: follow from the mechanism and unit (family_of).
    family: str = ""
    # Whether the object the workers use can itself be a submit() argument (an
    # asyncio proxy is bound to its event loop: its mechanism's probes say what
    # the resource can do, this says the object cannot be passed).
    submittable: bool = True

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", family_of(self.mechanism, self.unit))


def _spec(*args: Any, **kwargs: Any) -> tuple[str, ScenarioSpec]:
    spec = ScenarioSpec(*args, **kwargs)
    return spec.name, spec


SCENARIOS: dict[str, ScenarioSpec] = dict(
    [
        _spec(
            "initializer",
            "mp.Value + its lock, inherited through initializer=",
            "multiprocessing (initializer)",
            ops_scale=10,
        ),
        _spec(
            "initializer-nolock",
            "the same mp.Value, `value += 1` without holding its lock",
            "multiprocessing (initializer)",
            racy=True,
            ops_scale=10,
        ),
        _spec("proxyshare-counter", "counter.increment()", "proxyshare (served)"),
        _spec(
            "proxyshare-durable",
            "counter.increment() on a server with a state dir (--fsync everysec)",
            "proxyshare (served)",
        ),
        _spec(
            "proxyshare-lock",
            "with lock: d[k] = d[k] + 1 (mgr.lock + mgr.dict)",
            "proxyshare (served)",
        ),
        _spec("proxyshare-dict", "d.increment(k)", "proxyshare (served)"),
        _spec(
            "proxyshare-pipeline",
            f"counter.increment() batched {PIPELINE_BATCH} per mgr.pipeline()",
            "proxyshare (served)",
            ops_scale=10,
        ),
        _spec(
            "proxyshare-tcp",
            "counter.increment() over loopback TCP: the baseline of proxyshare-tls",
            "proxyshare (served)",
            family="served",
        ),
        _spec(
            "proxyshare-tls",
            "counter.increment() over tls:// (loopback; certificates made at run time)",
            "proxyshare (served)",
            family="served",
        ),
        _spec(
            "aio-1",
            "asyncio: one task awaiting counter.increment() (from proxyshare import aio)",
            "proxyshare (served)",
            default=False,
            submittable=False,
        ),
        _spec(
            "aio-64",
            f"asyncio: {AIO_TASKS} tasks of one event loop awaiting counter.increment()",
            "proxyshare (served)",
            default=False,
            submittable=False,
        ),
        _spec(
            "proxyshare-shm",
            "mgr.counter(name, shared_memory=True).increment()",
            "proxyshare (shared memory)",
            ops_scale=10,
        ),
        _spec(
            "proxyshare-shm-lock",
            "with shm lock: c.set(c.get() + 1) (shared_memory=True)",
            "proxyshare (shared memory)",
            ops_scale=10,
        ),
        _spec(
            "proxyshare-adder",
            "mgr.adder(name).add(): each process adds to its own slot, no lock",
            "proxyshare (adder)",
            ops_scale=10,
        ),
        _spec(
            "syncmanager",
            "Manager().Value + Manager().Lock: with lock: v.value += 1",
            "stdlib SyncManager",
        ),
        _spec(
            "syncmanager-nolock",
            "Manager().Value: v.value += 1 without a lock",
            "stdlib SyncManager",
            racy=True,
        ),
        _spec(
            "basemanager-floor",
            "bare stdlib BaseManager, registered Counter.increment()",
            "stdlib BaseManager",
        ),
        _spec("redis", "redis-py INCR", "redis-py"),
        _spec(
            "proxyshare-redis",
            'proxyshare.connect("redis://...").counter(...).increment()',
            "proxyshare (Redis backend)",
        ),
        _spec(
            "floor",
            "raw multiprocessing.connection ping-pong with a server thread",
            "transport floor",
            unit="round trip",
        ),
        _spec(
            "queue-initializer",
            "multiprocessing.Queue via initializer=: workers put, the parent gets",
            "multiprocessing (initializer)",
            unit="item",
            baseline="queue-initializer",
        ),
        _spec(
            "queue-syncmanager",
            "Manager().Queue(): workers put, the parent gets",
            "stdlib SyncManager",
            unit="item",
            baseline="queue-initializer",
        ),
        _spec(
            "queue-proxyshare",
            "mgr.queue(): workers put, the parent gets",
            "proxyshare (served)",
            unit="item",
            baseline="queue-initializer",
        ),
    ]
)

# Only with --clients: aggregate throughput of C client processes on one counter.
CLIENTS_SCENARIO = ScenarioSpec(
    "proxyshare-clients",
    "C client processes hammering one counter.increment() (aggregate ops/s)",
    "proxyshare (served)",
    default=False,
    baseline=None,
)


@dataclass
class Prepared:
    """One scenario, ready to submit to a pool of ``workers`` processes."""

    kind: str  # key of _bench_workers.BODIES
    args: tuple[Any, ...]
    expected: int
    # Reads the shared total back; None: the workers' (or consumer's) own counts.
    observe: Callable[[], int] | None
    # Queue scenarios: the parent consumes; returns (time of last item, items seen).
    consume: Callable[[float], tuple[float, int]] | None = None
    # proxyshare scenarios: the server's operation count, for round trips per op.
    operations: Callable[[], int] | None = None
    setup_calls: int = 0  # per worker, before the barrier (subtracted from round trips)
    connect_us: float | None = None  # served over TCP: opening one new connection, median
    cleanup: list[Callable[[], None]] = field(default_factory=list)


class BenchEnv:
    """The servers the scenarios share, started on first use."""

    def __init__(self, ctx: BaseContext, redis_url: str, quick: bool) -> None:
        self.ctx = ctx
        self.redis_url = redis_url
        self.redis_shown = redacted_url(redis_url)
        self.quick = quick
        self.run_id = uuid.uuid4().hex[:8]
        self._share: Any = None
        self._durable: Any = None
        self._sync: Any = None
        self._base: Any = None
        self._floor: tuple[Any, bytes] | None = None
        self._floor_proc: Any = None
        self._redis_ok: str | None = None  # None: not checked yet; "" ok; else reason
        self._redis_client: Any = None
        self._closers: list[Callable[[], None]] = []
        self._inherited: dict[str, Any] | None = None
        self._tcp: dict[bool, tuple[Any, float]] = {}  # tls? -> (client, connect µs)
        self._certs: Any = None

    # -- servers ---------------------------------------------------------------

    def share_manager(self) -> Any:
        if self._share is None:
            from proxyshare._manager import ShareManager

            mgr = ShareManager(ctx=self.ctx)
            mgr.start()
            self._share = mgr
            self._closers.append(mgr.shutdown)
        return self._share

    def durable_manager(self) -> Any:
        """A second ShareManager that keeps a state dir (fsync everysec), removed at close."""
        if self._durable is None:
            import shutil
            import tempfile

            from proxyshare._manager import ShareManager

            directory = tempfile.mkdtemp(prefix="proxyshare-bench-state-")
            self._closers.append(lambda: shutil.rmtree(directory, ignore_errors=True))
            mgr = ShareManager(ctx=self.ctx, state_dir=f"{directory}/state", fsync="everysec")
            mgr.start()
            self._durable = mgr
            self._closers.append(mgr.shutdown)
        return self._durable

    def sync_manager(self) -> Any:
        if self._sync is None:
            mgr = self.ctx.Manager()
            self._sync = mgr
            self._closers.append(mgr.shutdown)
        return self._sync

    def base_manager(self) -> Any:
        if self._base is None:
            mgr = W.BenchBaseManager(ctx=self.ctx)
            mgr.start()
            self._base = mgr
            self._closers.append(mgr.shutdown)
        return self._base

    def floor_server(self) -> tuple[Any, bytes]:
        """Address and key of the echo server (its own process, unix socket)."""
        if self._floor is None:
            authkey = secrets.token_bytes(16)
            reader, writer = self.ctx.Pipe(duplex=False)
            ctx: Any = self.ctx  # BaseContext's stubs lack Process
            proc = ctx.Process(
                target=W.FloorServer.serve,
                args=(None, authkey, writer),
                name="proxyshare-bench-floor",
                daemon=True,
            )
            proc.start()
            writer.close()
            if not reader.poll(60):
                proc.kill()
                raise Skip("the floor echo server did not start within 60 s")
            address = reader.recv()
            reader.close()
            self._floor_proc = proc
            self._floor = (address, authkey)

            def stop() -> None:
                proc.kill()
                proc.join(5)

            self._closers.append(stop)
        return self._floor

    def tcp_share(self, tls: bool) -> tuple[Any, float]:
        """A client of a server process on loopback TCP, with TLS or not, and its connect cost.

        Both servers are started the same way, so the two scenarios differ
        by TLS alone.  The connect cost is the median µs of opening a new
        connection (TCP, TLS, HMAC handshake, HELLO) and closing it.
        """
        if tls not in self._tcp:
            files = self.bench_certs() if tls else None
            authkey = secrets.token_bytes(16)
            reader, writer = self.ctx.Pipe(duplex=False)
            ctx: Any = self.ctx  # BaseContext's stubs lack Process
            cert = key = None
            if files is not None:
                cert, key = str(files.cert), str(files.key)
            proc = ctx.Process(
                target=serve_tcp,
                args=(writer, authkey, cert, key),
                name="proxyshare-bench-tcp",
                daemon=True,
            )
            proc.start()
            writer.close()

            def stop() -> None:
                proc.kill()
                proc.join(5)

            self._closers.append(stop)
            if not reader.poll(60):
                raise Skip("the TCP server did not start within 60 s")
            address = reader.recv()
            reader.close()
            if isinstance(address, BaseException):
                raise Skip(f"the TCP server could not start: {address}")
            from proxyshare._manager import ShareManager

            tls_ca = None if files is None else files.ca
            client = ShareManager(address, authkey=authkey, tls_ca=tls_ca)
            client.connect()
            self._tcp[tls] = (client, _connect_cost(client.server_ref))
        return self._tcp[tls]

    def bench_certs(self) -> Any:
        """Throwaway certificates for the TLS scenario (``Skip`` if none can be made)."""
        if self._certs is None:
            import shutil
            import tempfile
            from pathlib import Path

            from proxyshare._bench.certs import CertificatesUnavailable, make_certificates

            directory = Path(tempfile.mkdtemp(prefix="proxyshare-bench-tls-"))
            self._closers.append(lambda: shutil.rmtree(directory, ignore_errors=True))
            try:
                self._certs = make_certificates(directory)
            except CertificatesUnavailable as exc:
                raise Skip(str(exc)) from None
        return self._certs

    def redis(self) -> Any:
        """A redis-py client for the parent, or ``Skip`` saying why there is none."""
        if self._redis_ok is None:
            self._redis_ok = self._check_redis()
        if self._redis_ok:
            raise Skip(self._redis_ok)
        return self._redis_client

    def _check_redis(self) -> str:
        try:
            import redis
        except ImportError:
            return "redis-py is not installed (pip install 'proxyshare[redis]')"
        try:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)
            client.ping()
        except Exception as exc:  # any failure means: no usable server there
            first = str(exc).splitlines()[0] if str(exc) else ""
            where = self.redis_shown
            return f"no Redis server reachable at {where} ({type(exc).__name__}: {first})"
        self._redis_client = client
        self._closers.append(client.close)
        return ""

    def close(self) -> None:
        """Stop every server this environment started (newest first)."""
        from proxyshare._client import close_all_channels

        close_all_channels()
        errors: list[BaseException] = []
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception as exc:  # keep stopping the others, then re-raise
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- helpers -------------------------------------------------------------

    def name(self, scenario: str, tag: str) -> str:
        return f"bench-{self.run_id}-{scenario}-{tag}"

    def share_operations(self) -> int:
        return int(self.share_manager().status()["server"]["operations"])


# -- one prepare function per scenario ------------------------------------------


def prepare(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    """Set ``scenario`` up for one timed run (``Skip`` if it cannot run here)."""
    return _PREPARE[scenario](env, scenario, workers, ops, tag)


def _initializer(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    # The Value itself was inherited by the pool's workers; reset it.
    value = env_shared(env)["value"]
    value.value = 0
    kind = "initializer" if scenario == "initializer" else "initializer-nolock"
    return Prepared(kind, (), workers * ops, lambda: int(value.value))


def _share(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    mgr = env.share_manager()
    name = env.name(scenario, tag)
    common: dict[str, Any] = {"operations": env.share_operations, "setup_calls": 1}
    if scenario in ("proxyshare-counter", "proxyshare-clients"):
        counter = mgr.counter(name)
        return Prepared("counter", (counter,), workers * ops, counter.get, **common)
    if scenario == "proxyshare-lock":
        lock, d = mgr.lock(name), mgr.dict(name + "-d")
        d["k"] = 0
        return Prepared("lock-dict", (lock, d, "k"), workers * ops, lambda: int(d["k"]), **common)
    if scenario == "proxyshare-dict":
        d = mgr.dict(name)
        d["k"] = 0
        return Prepared("dict-increment", (d, "k"), workers * ops, lambda: int(d["k"]), **common)
    if scenario == "proxyshare-pipeline":
        counter = mgr.counter(name)
        common["setup_calls"] = 2
        batch = min(PIPELINE_BATCH, ops)
        return Prepared("pipeline", (mgr, name, batch), workers * ops, counter.get, **common)
    raise KeyError(scenario)


def _tcp(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    client, connect_us = env.tcp_share(tls=scenario == "proxyshare-tls")
    counter = client.counter(env.name(scenario, tag))

    def operations() -> int:
        return int(client.status()["server"]["operations"])

    return Prepared(
        "counter",
        (counter,),
        workers * ops,
        counter.get,
        operations=operations,
        setup_calls=1,
        connect_us=connect_us,
    )


CONNECTS = 20  # new connections timed per server, for the connect cost


def _connect_cost(ref: Any) -> float:
    """Median µs to open (and close) one new connection to ``ref``'s server."""
    import statistics

    from proxyshare._client import Channel

    costs = []
    for _ in range(CONNECTS):
        start = time.perf_counter()
        channel = Channel(ref.address, ref.authkey, tls=ref.tls)
        costs.append((time.perf_counter() - start) * 1e6)
        channel.close()
    return statistics.median(costs)


def serve_tcp(writer: Any, authkey: bytes, cert: str | None, key: str | None) -> None:
    """Body of the TCP (or, with ``cert``, TLS) server process; sends its address first."""
    try:
        from proxyshare._manager import ShareManager

        server = ShareManager(("127.0.0.1", 0), authkey=authkey).get_server(
            tls_cert=cert, tls_key=key
        )
    except Exception as exc:  # the parent skips the scenario, saying why
        writer.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
        writer.close()
        return
    writer.send(server.address)
    writer.close()
    server.serve_forever()


def _durable(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    mgr = env.durable_manager()
    counter = mgr.counter(env.name(scenario, tag))

    def operations() -> int:
        return int(mgr.status()["server"]["operations"])

    return Prepared(
        "counter", (counter,), workers * ops, counter.get, operations=operations, setup_calls=1
    )


def _aio(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    """Each worker runs an event loop with 1 or ``AIO_TASKS`` tasks sharing its ops."""
    mgr = env.share_manager()
    name = env.name(scenario, tag)
    counter = mgr.counter(name)
    ref = mgr.server_ref
    tasks = 1 if scenario == "aio-1" else AIO_TASKS
    return Prepared(
        "aio-counter",
        (ref.address, ref.authkey, name, tasks),
        workers * ops,
        counter.get,
        operations=env.share_operations,
        setup_calls=W.aio_setup_calls(tasks),
    )


def _shm(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    mgr = env.share_manager()
    name = env.name(scenario, tag)
    counter = shm_open(lambda: mgr.counter(name, shared_memory=True), "counter")
    if scenario == "proxyshare-shm":
        return Prepared("counter", (counter,), workers * ops, counter.get)
    lock = shm_open(lambda: mgr.lock(name + "-lock", shared_memory=True), "lock")
    return Prepared("shm-lock", (lock, counter), workers * ops, counter.get)


def _adder(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    mgr = env.share_manager()
    adder = adder_open(mgr, env.name(scenario, tag))
    return Prepared("adder", (adder,), workers * ops, adder.get)


def adder_open(mgr: Any, name: str) -> Any:
    try:
        return mgr.adder(name)
    except Exception as exc:  # not available here (no OFD locks): say why, skip
        raise Skip(f"mgr.adder(name) is not available here ({type(exc).__name__}: {exc})") from exc


def shm_open(make: Callable[[], Any], what: str) -> Any:
    try:
        return make()
    except Exception as exc:  # not available (yet) here: say why, skip
        raise Skip(
            f"mgr.{what}(name, shared_memory=True) is not available here "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _syncmanager(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    mgr = env.sync_manager()
    value = mgr.Value("q", 0)
    if scenario == "syncmanager":
        lock = mgr.Lock()
        return Prepared("syncmanager", (value, lock), workers * ops, lambda: int(value.value))
    return Prepared("syncmanager-nolock", (value,), workers * ops, lambda: int(value.value))


def _basemanager(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    counter = env.base_manager().Counter()
    return Prepared("basemanager", (counter,), workers * ops, counter.get)


def _redis(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    client = env.redis()
    key = "proxyshare-bench:" + env.name(scenario, tag)
    client.delete(key)
    prepared = Prepared(
        "redis", (env.redis_url, key), workers * ops, lambda: int(client.get(key) or 0)
    )
    prepared.cleanup.append(lambda: client.delete(key))
    return prepared


def _proxyshare_redis(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    env.redis()  # skips when no server is reachable
    try:
        from proxyshare._manager import connect

        client = connect(env.redis_url)
        counter = client.counter(env.name(scenario, tag))
    except Exception as exc:  # backend not available (yet): say why, skip
        raise Skip(
            f'proxyshare.connect("{env.redis_shown}") is not available here '
            f"({type(exc).__name__}: {exc})"
        ) from exc
    prepared = Prepared("counter", (counter,), workers * ops, counter.get)
    delete = getattr(client, "delete", None)
    if delete is not None:
        prepared.cleanup.append(lambda: delete(counter.name))
    return prepared


def _floor(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    address, authkey = env.floor_server()
    # Each worker counts the echoes it got back intact; the parent sums them.
    return Prepared("floor", (address, authkey), workers * ops, None)


def _queue(env: BenchEnv, scenario: str, workers: int, ops: int, tag: str) -> Prepared:
    total = workers * ops
    if scenario == "queue-initializer":
        q = env_shared(env)["queue"]
        prepared = Prepared("queue-inherited", (), total, None)
    elif scenario == "queue-syncmanager":
        q = env.sync_manager().Queue()
        prepared = Prepared("queue-put", (q,), total, None)
    else:
        q = env.share_manager().queue(env.name(scenario, tag))
        prepared = Prepared(
            "queue-put", (q,), total, None, operations=env.share_operations, setup_calls=1
        )

    def consume(deadline: float) -> tuple[float, int]:
        seen = 0
        get = q.get
        while seen < total:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                get(timeout=min(left, 5.0))
            except queue.Empty:  # keep waiting until the deadline
                continue
            seen += 1
        return time.perf_counter(), seen

    prepared.consume = consume
    return prepared


_PREPARE: dict[str, Callable[[BenchEnv, str, int, int, str], Prepared]] = {
    "initializer": _initializer,
    "initializer-nolock": _initializer,
    "proxyshare-counter": _share,
    "proxyshare-durable": _durable,
    "proxyshare-lock": _share,
    "proxyshare-dict": _share,
    "proxyshare-pipeline": _share,
    "proxyshare-clients": _share,
    "proxyshare-tcp": _tcp,
    "proxyshare-tls": _tcp,
    "aio-1": _aio,
    "aio-64": _aio,
    "proxyshare-shm": _shm,
    "proxyshare-shm-lock": _shm,
    "proxyshare-adder": _adder,
    "syncmanager": _syncmanager,
    "syncmanager-nolock": _syncmanager,
    "basemanager-floor": _basemanager,
    "redis": _redis,
    "proxyshare-redis": _proxyshare_redis,
    "floor": _floor,
    "queue-initializer": _queue,
    "queue-syncmanager": _queue,
    "queue-proxyshare": _queue,
}


# -- pools ---------------------------------------------------------------------


def env_shared(env: BenchEnv) -> dict[str, Any]:
    """The objects pool workers inherit through ``initializer=`` (made once)."""
    if env._inherited is None:
        env._inherited = {"value": env.ctx.Value("q", 0), "queue": env.ctx.Queue()}
    return env._inherited


def make_pool(env: BenchEnv, workers: int) -> tuple[cf.ProcessPoolExecutor, Any]:
    """A pool of ``workers`` processes that inherited the start barrier and shared objects."""
    barrier = env.ctx.Barrier(workers)
    pool = cf.ProcessPoolExecutor(
        workers,
        mp_context=env.ctx,
        initializer=W.init_worker,
        initargs=(barrier, env_shared(env)),
    )
    return pool, barrier


def shutdown_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool even if a worker is stuck (e.g. in a broken barrier)."""
    processes = list(getattr(pool, "_processes", {}).values())
    done = threading.Event()

    def stop() -> None:
        pool.shutdown(wait=True, cancel_futures=True)
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    if not done.wait(30):
        for proc in processes:
            proc.kill()
