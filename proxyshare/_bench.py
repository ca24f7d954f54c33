"""``proxyshare bench``: what generality costs, measured, in one run.

    report = run_bench(BenchConfig(workers=[2], ops=20000))
    report.model_dump_json()           # the whole run, round-trips through JSON

Each scenario is W workers × N increments of one shared counter through a
real ``concurrent.futures.ProcessPoolExecutor``.  One pool per worker count
serves every scenario and repeat (repeats are interleaved across scenarios,
so a load spike on a busy machine hits them all alike).  Workers set up and
connect first, then wait on a barrier; the time from the barrier to the last
worker's end, divided by all operations, is the cost per operation.  Totals
are read back and compared with what was expected: a locked scenario that
loses an update is wrong, a racy one shows how many it lost.

Besides speed the report says what each mechanism *can do* (the
"what the cost buys" table), from probes the bench runs itself: submit the
object to a pool that is already running, reach a server by TCP address,
SIGKILL a lock holder and time how long the lock stays taken.

Heavy imports (pydantic here, rich and matplotlib inside functions) never
reach pool workers: they import ``_bench_workers`` only.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import platform
import statistics
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from proxyshare import _bench_scenarios as S
from proxyshare import _bench_workers as W
from proxyshare._errors import ProxyShareError

__all__ = [
    "DEFAULT_OPS",
    "QUICK_OPS",
    "SCENARIOS",
    "BenchConfig",
    "BenchReport",
    "Capability",
    "CapabilityRow",
    "Measurement",
    "Run",
    "Target",
    "expand_scenarios",
    "render",
    "require_matplotlib",
    "run_bench",
    "write_plot",
]

SCENARIOS = S.SCENARIOS
DEFAULT_OPS = 5000  # per worker: the default run stays under a minute on 2 busy cores
QUICK_OPS = 200
TASK_TIMEOUT = 300.0  # seconds for one timed task, barrier wait included

# Names that stand for several scenarios in --scenarios.
ALIASES: dict[str, list[str]] = {
    "default": [name for name, spec in SCENARIOS.items() if spec.default],
    "all": list(SCENARIOS),
    "queue": [name for name in SCENARIOS if name.startswith("queue-")],
}

Progress = Callable[[int, int, str], None]


def expand_scenarios(names: list[str] | None) -> list[str]:
    """Scenario names in table order; aliases expanded; ``ValueError`` on unknown names."""
    if names is None:
        return list(ALIASES["default"])
    wanted: set[str] = set()
    for name in names:
        if name in ALIASES:
            wanted.update(ALIASES[name])
        elif name in SCENARIOS:
            wanted.add(name)
        else:
            known = ", ".join([*SCENARIOS, *ALIASES])
            raise ValueError(f"unknown scenario {name!r}; choose from: {known}")
    return [name for name in SCENARIOS if name in wanted]


# -- the report ------------------------------------------------------------------


class BenchConfig(BaseModel):
    """What to run.  ``ops`` is per worker; None means the default (or quick) size."""

    model_config = ConfigDict(extra="forbid")

    workers: list[PositiveInt] = Field(default_factory=lambda: [2], min_length=1)
    ops: PositiveInt | None = None
    repeat: PositiveInt = 1
    scenarios: list[str] | None = None
    start_method: str | None = None
    redis_url: str | None = None
    quick: bool = False
    clients: list[PositiveInt] = Field(default_factory=list)
    micro: bool = False
    probes: bool = True

    @field_validator("scenarios")
    @classmethod
    def _known_scenarios(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            expand_scenarios(value)
        return value

    @field_validator("start_method")
    @classmethod
    def _known_start_method(cls, value: str | None) -> str | None:
        if value is not None and value not in multiprocessing.get_all_start_methods():
            methods = ", ".join(multiprocessing.get_all_start_methods())
            raise ValueError(f"unknown start method {value!r}; this platform has: {methods}")
        return value

    @property
    def ops_per_worker(self) -> int:
        if self.ops is not None:
            return self.ops
        return QUICK_OPS if self.quick else DEFAULT_OPS

    @property
    def selected(self) -> list[str]:
        return expand_scenarios(self.scenarios)

    @property
    def redis(self) -> str:
        return self.redis_url or S.DEFAULT_REDIS_URL


class Run(BaseModel):
    """One timed run of a scenario."""

    us_per_op: float
    expected: int
    observed: int
    round_trips_per_op: float | None = None


class Measurement(BaseModel):
    """A scenario at one worker count: the median of its runs, and their spread."""

    scenario: str
    description: str
    mechanism: str
    unit: str
    workers: int
    ops_per_worker: int
    us_per_op: float  # median over runs
    us_per_op_min: float
    us_per_op_max: float
    us_per_op_stdev: float
    ops_per_s: float
    baseline: str | None = None
    ratio_to_initializer: float | None = None  # us_per_op / baseline's us_per_op
    ratio_to_floor: float | None = None  # micro mode: us_per_op / the transport floor's
    expected: int
    observed: int
    lost_updates: int  # the most any run lost
    racy: bool
    correct: bool  # every run's total was exact
    round_trips_per_op: float | None = None  # proxyshare scenarios, from server stats
    runs: list[Run]


class Capability(BaseModel):
    """One cell of "what the cost buys"."""

    works: bool | None  # None: not applicable or not available here
    basis: Literal["checked", "structural", "n/a"]
    detail: str
    seconds: float | None = None  # holder-death probes: how long the lock stayed taken


class CapabilityRow(BaseModel):
    scenario: str
    mechanism: str
    submit_argument: Capability
    created_after_pool_start: Capability
    other_machine: Capability
    lock_release_on_holder_death: Capability


class Target(BaseModel):
    """A performance target from the issues, and whether this run met it."""

    name: str
    description: str
    measured: float | None
    limit: float
    comparison: Literal["<=", ">="]
    met: bool | None  # None: the scenarios it needs did not run
    detail: str


class MachineInfo(BaseModel):
    platform: str
    machine: str
    processor: str
    cpu_count: int | None
    load_average_start: list[float] | None = None
    load_average_end: list[float] | None = None


class BenchReport(BaseModel):
    """Everything one ``proxyshare bench`` run measured and found."""

    proxyshare_version: str
    python_version: str
    python_implementation: str
    machine: MachineInfo
    start_method: str
    mode: Literal["scenarios", "micro"]
    config: BenchConfig
    measurements: list[Measurement] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)
    capabilities: list[CapabilityRow] = Field(default_factory=list)
    targets: list[Target] = Field(default_factory=list)
    started: datetime
    finished: datetime | None = None

    def measurement(self, scenario: str, workers: int | None = None) -> Measurement | None:
        """The measurement of ``scenario`` at ``workers`` (any worker count if None)."""
        for m in self.measurements:
            if m.scenario == scenario and (workers is None or m.workers == workers):
                return m
        return None


# -- running --------------------------------------------------------------------


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_bench(config: BenchConfig, progress: Progress | None = None) -> BenchReport:
    """Run the benchmark described by ``config``; ``progress(done, total, label)`` is told."""
    from proxyshare import __version__

    ctx = multiprocessing.get_context(config.start_method)
    report = BenchReport(
        proxyshare_version=__version__,
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        machine=MachineInfo(
            platform=platform.platform(),
            machine=platform.machine(),
            processor=platform.processor() or platform.machine(),
            cpu_count=os.cpu_count(),
            load_average_start=_load(),
        ),
        start_method=ctx.get_start_method(),
        mode="micro" if config.micro else "scenarios",
        config=config,
        started=datetime.now(timezone.utc),
    )
    env = S.BenchEnv(ctx, config.redis, config.quick)
    try:
        if config.micro:
            _run_micro(env, config, report, _Steps(progress, len(_MICRO) * config.repeat))
        else:
            _run_scenarios(env, config, report, progress)
    finally:
        env.close()
    report.machine.load_average_end = _load()
    report.targets = compute_targets(report)
    report.finished = datetime.now(timezone.utc)
    return report


class _Steps:
    """Counts finished steps for the progress callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def start(self, label: str) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total, label)

    def finish(self, label: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, label)


def _run_scenarios(
    env: S.BenchEnv, config: BenchConfig, report: BenchReport, progress: Progress | None
) -> None:
    names = config.selected
    ops = config.ops_per_worker
    probe_steps = 1 if config.probes else 0
    steps = _Steps(
        progress,
        len(config.workers) * config.repeat * len(names)
        + len(config.clients) * config.repeat
        + probe_steps,
    )
    runs: dict[tuple[str, int], list[Run]] = {}
    for workers in config.workers:
        jobs = [(name, name, ops) for name in names]
        _run_pool(env, workers, jobs, config.repeat, runs, report, steps)
    for clients in config.clients:
        per_client = max(50, (2 * ops) // clients)
        job = [("proxyshare-clients", S.CLIENTS_SCENARIO.name, per_client)]
        _run_pool(env, clients, job, config.repeat, runs, report, steps)
    for (name, workers), scenario_runs in runs.items():
        if scenario_runs:
            report.measurements.append(_summarise(name, workers, scenario_runs))
    _fill_ratios(report.measurements)
    if config.probes:
        steps.start("probing what each mechanism can do")
        report.capabilities = probe_capabilities(env, config, report)
        steps.finish("probes")


def _run_pool(
    env: S.BenchEnv,
    workers: int,
    jobs: list[tuple[str, str, int]],
    repeat: int,
    runs: dict[tuple[str, int], list[Run]],
    report: BenchReport,
    steps: _Steps,
) -> None:
    """Run ``jobs`` ``repeat`` times, interleaved, on one pool of ``workers`` processes."""
    pool, _barrier = S.make_pool(env, workers)
    try:
        for r in range(repeat):
            for name, scenario, ops in jobs:
                label = f"{name} × {workers}"
                steps.start(label)
                if name in report.skipped or name in report.failed:
                    steps.finish(label)
                    continue
                try:
                    run = _run_once(env, pool, scenario, workers, ops, f"w{workers}r{r}")
                except S.Skip as skip:
                    report.skipped[name] = str(skip)
                except Exception as exc:  # reported in the output, and the exit code is 1
                    report.failed[name] = _failure(exc)
                    if isinstance(exc, (cf.process.BrokenProcessPool, cf.TimeoutError)):
                        S.shutdown_pool(pool)
                        pool, _barrier = S.make_pool(env, workers)
                else:
                    runs.setdefault((name, workers), []).append(run)
                steps.finish(label)
    finally:
        S.shutdown_pool(pool)


def _failure(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename.rsplit('/', 1)[-1]}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def _run_once(
    env: S.BenchEnv,
    pool: cf.ProcessPoolExecutor,
    scenario: str,
    workers: int,
    ops: int,
    tag: str,
) -> Run:
    prepared = S.prepare(env, scenario, workers, ops, tag)
    try:
        before = prepared.operations() if prepared.operations else None
        consumer: dict[str, Any] = {}
        thread = None
        if prepared.consume is not None:
            consume = prepared.consume
            deadline = time.monotonic() + TASK_TIMEOUT

            def run_consumer() -> None:
                try:
                    consumer["result"] = consume(deadline)
                except BaseException as exc:  # handed to the main thread below
                    consumer["error"] = exc

            thread = threading.Thread(target=run_consumer, name="bench-consumer", daemon=True)
            thread.start()
        futures = [
            pool.submit(W.timed, prepared.kind, ops, *prepared.args) for _ in range(workers)
        ]
        results = [f.result(timeout=TASK_TIMEOUT) for f in futures]
        start = min(r[0] for r in results)
        end = max(r[1] for r in results)
        observed = sum(r[2] for r in results)
        if thread is not None:
            thread.join(TASK_TIMEOUT)
            if "error" in consumer:
                raise consumer["error"]
            if "result" not in consumer:
                raise ProxyShareError(f"the {scenario} consumer did not finish in time")
            end, observed = consumer["result"]
        total = workers * ops
        round_trips = None
        if prepared.operations is not None and before is not None:
            # Minus the status request that read ``before`` and the workers' set-up calls.
            served = prepared.operations() - before - 1 - prepared.setup_calls * workers
            round_trips = round(max(served, 0) / total, 4)
        if prepared.observe is not None:
            observed = prepared.observe()
        return Run(
            us_per_op=(end - start) / total * 1e6,
            expected=prepared.expected,
            observed=observed,
            round_trips_per_op=round_trips,
        )
    finally:
        for cleanup in prepared.cleanup:
            cleanup()


def _spec(name: str) -> S.ScenarioSpec:
    return S.CLIENTS_SCENARIO if name == S.CLIENTS_SCENARIO.name else SCENARIOS[name]


def _summarise(name: str, workers: int, runs: list[Run]) -> Measurement:
    spec = _spec(name)
    costs = [r.us_per_op for r in runs]
    median = statistics.median(costs)
    lost = max(r.expected - r.observed for r in runs)
    trips = [r.round_trips_per_op for r in runs if r.round_trips_per_op is not None]
    last = runs[-1]
    return Measurement(
        scenario=name,
        description=spec.description,
        mechanism=spec.mechanism,
        unit=spec.unit,
        workers=workers,
        ops_per_worker=last.expected // workers,
        us_per_op=median,
        us_per_op_min=min(costs),
        us_per_op_max=max(costs),
        us_per_op_stdev=statistics.stdev(costs) if len(costs) > 1 else 0.0,
        ops_per_s=1e6 / median if median > 0 else math.inf,
        baseline=spec.baseline,
        expected=last.expected,
        observed=last.observed,
        lost_updates=lost,
        racy=spec.racy,
        correct=all(r.expected == r.observed for r in runs),
        round_trips_per_op=statistics.median(trips) if trips else None,
        runs=runs,
    )


def _fill_ratios(measurements: list[Measurement]) -> None:
    by_key = {(m.scenario, m.workers): m for m in measurements}
    for m in measurements:
        base = by_key.get((m.baseline, m.workers)) if m.baseline else None
        if base is not None and base.us_per_op > 0:
            m.ratio_to_initializer = m.us_per_op / base.us_per_op


# -- micro mode: one client, one primitive at a time ----------------------------


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

        mgr = env.share_manager()
        name = env.name("micro", what)
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
            counter = S._shm_open(lambda: mgr.counter(name, shared_memory=True), "counter")
            return counter.increment, None
        lock = S._shm_open(lambda: mgr.lock(name, shared_memory=True), "lock")

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


_MICRO: dict[str, tuple[str, Callable[[S.BenchEnv], tuple[Callable[[], Any], Any]]]] = {
    "floor": ("raw multiprocessing.connection ping-pong (unix socket)", _micro_floor),
    "proxyshare ping": ("lean request through the client path, no resource", _micro_share("ping")),
    "counter.get()": ("proxyshare counter read", _micro_share("get")),
    "counter.increment()": ("proxyshare counter increment", _micro_share("increment")),
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


def _run_micro(env: S.BenchEnv, config: BenchConfig, report: BenchReport, steps: _Steps) -> None:
    n = config.ops_per_worker
    costs: dict[str, list[float]] = {}
    ops: dict[str, tuple[Callable[[], Any], Any]] = {}
    try:
        for _ in range(config.repeat):
            for name, (_desc, make) in _MICRO.items():
                steps.start(name)
                if name in report.skipped or name in report.failed:
                    steps.finish(name)
                    continue
                try:
                    if name not in ops:
                        ops[name] = make(env)
                        ops[name][0]()  # warm up: connect
                    op = ops[name][0]
                    t0 = time.perf_counter()
                    for _ in range(n):
                        op()
                    costs.setdefault(name, []).append((time.perf_counter() - t0) / n * 1e6)
                except S.Skip as skip:
                    report.skipped[name] = str(skip)
                except Exception as exc:  # reported in the output, and the exit code is 1
                    report.failed[name] = _failure(exc)
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
                description=_MICRO[name][0],
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


# -- "what the cost buys": facts the bench checks itself -------------------------


def _cap(fact: S.Fact) -> Capability:
    return Capability(
        works=fact.works,
        basis=fact.basis,  # type: ignore[arg-type]
        detail=fact.detail,
        seconds=fact.seconds,
    )


_Facts = tuple[S.Fact, S.Fact, S.Fact, S.Fact]


def probe_capabilities(
    env: S.BenchEnv, config: BenchConfig, report: BenchReport
) -> list[CapabilityRow]:
    """One row per scenario (but the floor), from probes run once per mechanism."""
    names = [n for n in config.selected if n != "floor"]
    if config.clients:
        names.append(S.CLIENTS_SCENARIO.name)
    mechanisms = {_spec(n).mechanism for n in names}
    stay_held = 0.5 if config.quick else 1.0
    facts: dict[str, _Facts] = {}
    pool = cf.ProcessPoolExecutor(1, mp_context=env.ctx)
    try:
        pool.submit(W.pid).result(timeout=TASK_TIMEOUT)  # the pool is running from here on
        for mechanism in sorted(mechanisms):
            try:
                facts[mechanism] = _PROBES[mechanism](env, pool, report, stay_held)
            except Exception as exc:  # a probe that breaks is reported, not hidden
                broken = S.Fact(None, "n/a", f"probe failed: {_failure(exc)}")
                facts[mechanism] = (broken, broken, broken, broken)
                report.failed[f"probe {mechanism}"] = _failure(exc)
    finally:
        S.shutdown_pool(pool)
    rows = []
    for name in names:
        mechanism = _spec(name).mechanism
        submit, after, remote, death = facts[mechanism]
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


def _after_from_submit(submit: S.Fact) -> S.Fact:
    if submit.works:
        return S.Fact(True, "checked", "made after the pool started, then submitted")
    return submit


def _unavailable(reason: str) -> _Facts:
    fact = S.Fact(None, "n/a", f"not available here: {reason}")
    return (fact, fact, fact, fact)


def _probe_initializer(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    submit = S.probe_submit(pool, "mp-value", env.ctx.Value("q", 0), TASK_TIMEOUT)
    if submit.works:
        after = _after_from_submit(submit)
    else:
        after = S.Fact(
            False,
            "structural",
            "initializer= runs once as each worker starts; a later object would have "
            "to be submitted, which fails",
        )
    remote = S.Fact(
        False, "structural", "shared memory and pipes inherited within one machine's process tree"
    )
    death, _ = S.probe_holder_death(env.ctx, env.ctx.Lock(), stay_held)
    return submit, after, remote, death


def _probe_sync(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    mgr = env.sync_manager()
    submit = S.probe_submit(pool, "syncmanager-value", mgr.Value("q", 0), TASK_TIMEOUT)
    remote = S.probe_tcp_sync(env, pool, TASK_TIMEOUT)
    death, _ = S.probe_holder_death(env.ctx, mgr.Lock(), stay_held)
    return submit, _after_from_submit(submit), remote, death


def _probe_base(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    submit = S.probe_submit(pool, "basemanager", env.base_manager().Counter(), TASK_TIMEOUT)
    remote = S.Fact(
        True, "structural", "same transport as SyncManager (a BaseManager can listen on TCP)"
    )
    death = S.Fact(None, "n/a", "no lock: the floor serves a counter only")
    return submit, _after_from_submit(submit), remote, death


def _probe_share(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    mgr = env.share_manager()
    submit = S.probe_submit(pool, "counter", mgr.counter(env.name("probe", "c")), TASK_TIMEOUT)
    remote = S.probe_tcp_share(env, pool, TASK_TIMEOUT)
    death, _ = S.probe_holder_death(env.ctx, mgr.lock(env.name("probe", "l")), 5.0)
    return submit, _after_from_submit(submit), remote, death


def _probe_shm(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    mgr = env.share_manager()
    try:
        counter = S._shm_open(
            lambda: mgr.counter(env.name("probe", "shm"), shared_memory=True), "counter"
        )
        lock = S._shm_open(
            lambda: mgr.lock(env.name("probe", "shm-l"), shared_memory=True), "lock"
        )
    except S.Skip as skip:
        return _unavailable(str(skip))
    submit = S.probe_submit(pool, "counter", counter, TASK_TIMEOUT)
    remote = S.Fact(
        False,
        "structural",
        "same host only: a file in shared memory; unpickled elsewhere it raises ProxyShareError",
    )
    death, _ = S.probe_holder_death(env.ctx, lock, 5.0)
    return submit, _after_from_submit(submit), remote, death


def _probe_redis(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    import redis

    try:
        env.redis()
    except S.Skip as skip:
        return _unavailable(str(skip))
    submit = S.probe_submit(pool, "redis-client", redis.Redis.from_url(env.redis_url), 30)
    if not submit.works:
        submit.detail += " (workers pass the URL and connect themselves)"
    after = S.Fact(True, "structural", "a key exists once the first INCR runs; workers need the URL")
    remote = _redis_remote(env)
    death = S.Fact(None, "n/a", "INCR needs no lock (redis-py locks are leases that expire)")
    return submit, after, remote, death


def _redis_remote(env: S.BenchEnv) -> S.Fact:
    if env.redis_url.startswith(("redis://", "rediss://")):
        return S.Fact(True, "checked", f"the bench reached it by URL ({env.redis_url})")
    return S.Fact(True, "structural", "Redis serves TCP clients; this run used a unix socket")


def _probe_share_redis(
    env: S.BenchEnv, pool: cf.ProcessPoolExecutor, report: BenchReport, stay_held: float
) -> _Facts:
    if "proxyshare-redis" in report.skipped:
        return _unavailable(report.skipped["proxyshare-redis"])
    from proxyshare._manager import connect

    counter = connect(env.redis_url).counter(env.name("probe", "redis"))
    submit = S.probe_submit(pool, "counter", counter, TASK_TIMEOUT)
    death = S.Fact(
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
    "redis-py": _probe_redis,
    "proxyshare (Redis backend)": _probe_share_redis,
}


# -- targets (from the issues; reported, never asserted) ------------------------


def _target_workers(report: BenchReport) -> int:
    counts = sorted({m.workers for m in report.measurements if m.scenario != "proxyshare-clients"})
    return 2 if 2 in counts or not counts else counts[0]


def compute_targets(report: BenchReport) -> list[Target]:
    """Each target's measured value, at 2 workers (or the smallest count run)."""
    if report.mode != "scenarios":
        return []
    w = _target_workers(report)

    def cost(name: str) -> float | None:
        m = report.measurement(name, w)
        return m.us_per_op if m is not None else None

    def ratio(a: str, b: str) -> tuple[float | None, str]:
        x, y = cost(a), cost(b)
        if x is None or y is None:
            missing = " and ".join(n for n, v in ((a, x), (b, y)) if v is None)
            hint = " (add --scenarios all)" if "basemanager-floor" in missing else ""
            return None, f"{missing} not measured{hint}"
        return x / y, f"{x:.2f} ÷ {y:.2f} µs"

    shm_death = _shm_death_ms(report)
    targets: list[tuple[str, str, tuple[float | None, str], str, float]] = [
        (
            "counter-vs-basemanager",
            "proxyshare-counter ÷ basemanager-floor, µs/op (#6)",
            ratio("proxyshare-counter", "basemanager-floor"),
            "<=",
            1.0,
        ),
        (
            "counter-vs-basemanager-0.7",
            "proxyshare-counter ÷ basemanager-floor, µs/op (#9)",
            ratio("proxyshare-counter", "basemanager-floor"),
            "<=",
            0.7,
        ),
        (
            "counter-vs-syncmanager",
            "syncmanager ÷ proxyshare-counter, µs/op (#9)",
            ratio("syncmanager", "proxyshare-counter"),
            ">=",
            8.0,
        ),
        (
            "counter-vs-redis",
            "redis ÷ proxyshare-counter, µs/op (#6, #9)",
            ratio("redis", "proxyshare-counter"),
            ">=",
            2.5,
        ),
        (
            "lock-vs-basemanager",
            "proxyshare-lock ÷ basemanager-floor, µs/op (#9)",
            ratio("proxyshare-lock", "basemanager-floor"),
            "<=",
            4.5,
        ),
        (
            "lock-round-trips",
            "proxyshare-lock round trips per increment (#6)",
            _round_trips(report, "proxyshare-lock", w),
            "<=",
            4.0,
        ),
        (
            "pipeline-vs-initializer",
            "proxyshare-pipeline ÷ initializer, µs/op (#9)",
            ratio("proxyshare-pipeline", "initializer"),
            "<=",
            3.0,
        ),
        (
            "shm-vs-initializer",
            "proxyshare-shm ÷ initializer, µs/op (#12)",
            ratio("proxyshare-shm", "initializer"),
            "<=",
            1.5,
        ),
        (
            "shm-lock-us",
            "proxyshare-shm-lock µs per locked increment (#12)",
            _absolute(cost("proxyshare-shm-lock"), "proxyshare-shm-lock", w),
            "<=",
            3.0,
        ),
        (
            "shm-lock-holder-death-ms",
            "shm lock free after its holder's SIGKILL, ms (#12)",
            shm_death,
            "<=",
            10.0,
        ),
        (
            "redis-backend-vs-redis",
            "proxyshare-redis ÷ redis, µs/op (#11)",
            ratio("proxyshare-redis", "redis"),
            "<=",
            1.2,
        ),
    ]
    out = []
    for name, description, (value, detail), comparison, limit in targets:
        met = None
        if value is not None:
            met = value <= limit if comparison == "<=" else value >= limit
        out.append(
            Target(
                name=name,
                description=description,
                measured=value,
                limit=limit,
                comparison=comparison,  # type: ignore[arg-type]
                met=met,
                detail=detail,
            )
        )
    return out


def _round_trips(report: BenchReport, name: str, w: int) -> tuple[float | None, str]:
    m = report.measurement(name, w)
    if m is None or m.round_trips_per_op is None:
        return None, f"{name} not measured"
    return m.round_trips_per_op, "requests counted by the server"


def _absolute(value: float | None, name: str, w: int) -> tuple[float | None, str]:
    if value is None:
        return None, f"{name} not measured"
    return value, f"{value:.2f} µs"


def _shm_death_ms(report: BenchReport) -> tuple[float | None, str]:
    for row in report.capabilities:
        if row.mechanism == "proxyshare (shared memory)":
            fact = row.lock_release_on_holder_death
            if fact.works and fact.basis == "checked" and fact.seconds is not None:
                return fact.seconds * 1e3, fact.detail
            if fact.works is None:
                return None, "proxyshare-shm-lock not measured"
            return None, fact.detail
    return None, "proxyshare-shm-lock not probed"


# -- output: rich tables and a matplotlib plot (imported only when used) --------


def _fmt_us(us: float) -> str:
    return f"{us:,.3f}" if us < 10 else f"{us:,.1f}"


def render(report: BenchReport) -> list[Any]:
    """The report as rich renderables: results, capabilities, targets, notes."""
    from rich.table import Table
    from rich.text import Text

    out: list[Any] = []
    repeat = report.config.repeat
    title = (
        f"proxyshare bench — {report.start_method}, Python {report.python_version}, "
        f"{report.machine.cpu_count} CPUs, load {report.machine.load_average_start}"
    )
    micro = report.mode == "micro"
    table = Table(title=title, title_justify="left")
    table.add_column("scenario", no_wrap=True)
    table.add_column("W", justify="right")
    table.add_column("µs/op", justify="right")
    if repeat > 1:
        table.add_column("min–max", justify="right")
    table.add_column("ops/s", justify="right")
    table.add_column("× floor" if micro else "× init", justify="right")
    if not micro:
        table.add_column("trips/op", justify="right")
        table.add_column("lost", justify="right")
        table.add_column("correct?")
    units = set()
    for m in report.measurements:
        ratio = m.ratio_to_floor if micro else m.ratio_to_initializer
        name = m.scenario
        if m.unit not in ("increment", "op"):
            name += " †" if m.unit == "round trip" else " ‡"
            units.add(m.unit)
        row = [name, str(m.workers), _fmt_us(m.us_per_op)]
        if repeat > 1:
            row.append(f"{_fmt_us(m.us_per_op_min)}–{_fmt_us(m.us_per_op_max)}")
        row.append(f"{m.ops_per_s:,.0f}")
        row.append("" if ratio is None else f"{ratio:,.1f}×")
        if not micro:
            trips = m.round_trips_per_op
            row.append("" if trips is None else f"{trips:.2f}" if trips >= 0.1 else f"{trips:.3f}")
            row.append(str(m.lost_updates))
            if m.correct:
                row.append("[green]yes[/]")
            elif m.racy:
                row.append("[yellow]no (racy)[/]")
            else:
                row.append("[red]NO[/]")
        table.add_row(*row)
    out.append(table)
    notes = []
    if "round trip" in units:
        notes.append("† per round trip")
    if "item" in units:
        notes.append("‡ per queue item (put by a worker, got by the parent); × queue-initializer")
    if not micro:
        notes.append("trips/op: requests the proxyshare server counted per operation")
    if notes:
        out.append(Text("; ".join(notes), style="dim"))

    if report.capabilities:
        out.extend(_render_capabilities(report.capabilities))

    known = [t for t in report.targets if t.met is not None]
    if report.targets:
        w = _target_workers(report)
        targets = Table(
            title=f"targets at {w} workers (reported, not asserted)", title_justify="left"
        )
        targets.add_column("target")
        targets.add_column("limit", justify="right")
        targets.add_column("measured", justify="right")
        targets.add_column("met?")
        for t in report.targets:
            if t.measured is None:
                measured = "[dim]not run[/]"
            else:
                measured = f"{t.measured:.2f}"
            met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]—[/]"}[t.met]
            targets.add_row(t.description, f"{t.comparison} {t.limit:g}", measured, met)
        out.append(targets)
        if not known:
            out.append(Text("no target could be evaluated in this run", style="dim"))

    for name, reason in report.skipped.items():
        out.append(Text(f"skipped {name}: {reason}", style="yellow"))
    for name, reason in report.failed.items():
        out.append(Text(f"FAILED {name}: {reason}", style="bold red"))
    return out


_CAP_COLUMNS = (
    ("submit_argument", "submit arg"),
    ("created_after_pool_start", "made after pool start"),
    ("other_machine", "other machine"),
    ("lock_release_on_holder_death", "lock freed on holder death"),
)


def _render_capabilities(rows: list[CapabilityRow]) -> list[Any]:
    """One line per mechanism (its scenarios share the facts), details underneath."""
    from rich.table import Table
    from rich.text import Text

    groups: dict[str, list[CapabilityRow]] = {}
    for row in rows:
        groups.setdefault(row.mechanism, []).append(row)
    table = Table(title="what the cost buys", title_justify="left")
    table.add_column("mechanism (scenarios)")
    for _field, header in _CAP_COLUMNS:
        table.add_column(header)
    details: list[str] = []
    for mechanism, members in groups.items():
        first = members[0]
        cells = [getattr(first, field) for field, _header in _CAP_COLUMNS]
        names = ", ".join(m.scenario for m in members)
        table.add_row(f"{mechanism}\n[dim]{names}[/]", *(_cap_text(c) for c in cells))
        for (_field, header), cell in zip(_CAP_COLUMNS, cells):
            if cell.works is not None:  # n/a cells: the reason is in the skipped list
                details.append(f"{mechanism} · {header}: {cell.detail}")
    legend = (
        "checked: tried by the bench in this run; structural: follows from how the "
        "mechanism works; n/a: does not apply or is not available here"
    )
    return [table, Text(legend, style="dim"), Text("\n".join(details), style="dim")]


def _cap_text(c: Capability) -> str:
    mark = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]n/a[/]"}[c.works]
    return mark if c.basis == "n/a" else f"{mark} [dim]{c.basis}[/]"


def require_matplotlib() -> None:
    """Raise a clear error now, before a minute of benchmarking, if plots cannot be made."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ProxyShareError(
            "--plot needs matplotlib, which is not installed: pip install 'proxyshare[plot]'"
        ) from exc


def write_plot(report: BenchReport, path: str) -> None:
    """µs per op of each scenario against workers, log scale, as a PNG at ``path``."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    if report.mode == "micro":
        names = [m.scenario for m in report.measurements]
        ax.barh(names, [m.us_per_op for m in report.measurements])
        ax.set_xscale("log")
        ax.set_xlabel("µs per operation, one client (log scale)")
        ax.invert_yaxis()
    else:
        series: dict[str, list[tuple[int, float]]] = {}
        for m in report.measurements:
            series.setdefault(m.scenario, []).append((m.workers, m.us_per_op))
        colours = plt.get_cmap("tab20").colors
        for i, (name, points) in enumerate(series.items()):
            points.sort()
            xs, ys = zip(*points)
            spec = _spec(name)
            style = ":" if spec.racy else "--" if spec.unit != "increment" else "-"
            ax.plot(xs, ys, style, marker="o", color=colours[i % len(colours)], label=name)
        ax.set_yscale("log")
        ax.set_xlabel("workers (clients for proxyshare-clients)")
        ax.set_ylabel("µs per operation (log scale)")
        ax.set_xticks(sorted({m.workers for m in report.measurements}))
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(
        f"proxyshare bench ({report.start_method}, Python {report.python_version}, "
        f"{report.machine.cpu_count} CPUs)"
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)

