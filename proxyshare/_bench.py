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
    "MachineInfo",
    "Measurement",
    "Run",
    "Target",
    "expand_scenarios",
    "run_bench",
]

SCENARIOS = S.SCENARIOS
# Per worker (x ops_scale for the ~1 µs scenarios): the default run takes
# about 20-30 s on 2 busy cores, well under a minute.
DEFAULT_OPS = 10_000
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
        config=config.model_copy(
            update={"redis_url": S.redacted_url(config.redis_url) if config.redis_url else None}
        ),
        started=datetime.now(timezone.utc),
    )
    env = S.BenchEnv(ctx, config.redis, config.quick)
    try:
        if config.micro:
            from proxyshare._bench_micro import MICRO, run_micro

            run_micro(env, config, report, Steps(progress, len(MICRO) * config.repeat))
        else:
            _run_scenarios(env, config, report, progress)
    finally:
        env.close()
    report.machine.load_average_end = _load()
    report.targets = compute_targets(report)
    report.finished = datetime.now(timezone.utc)
    return report


class Steps:
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
    steps = Steps(
        progress,
        len(config.workers) * config.repeat * len(names)
        + len(config.clients) * config.repeat
        + probe_steps,
    )
    runs: dict[tuple[str, int], list[Run]] = {}
    for workers in config.workers:
        jobs = [(name, name, ops * SCENARIOS[name].ops_scale) for name in names]
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
        from proxyshare._bench_probes import probe_capabilities

        report.capabilities = probe_capabilities(env, config, report)
        steps.finish("probes")


def _run_pool(
    env: S.BenchEnv,
    workers: int,
    jobs: list[tuple[str, str, int]],
    repeat: int,
    runs: dict[tuple[str, int], list[Run]],
    report: BenchReport,
    steps: Steps,
) -> None:
    """Run ``jobs`` ``repeat`` times, interleaved, on one pool of ``workers`` processes."""
    pool, barrier = S.make_pool(env, workers)
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
                    report.failed[name] = failure_text(exc)
                    if isinstance(exc, (cf.process.BrokenProcessPool, cf.TimeoutError)):
                        S.shutdown_pool(pool)
                        pool, barrier = S.make_pool(env, workers)
                    else:
                        barrier.reset()  # a failed set-up aborted it; the next scenario needs it
                else:
                    runs.setdefault((name, workers), []).append(run)
                steps.finish(label)
    finally:
        S.shutdown_pool(pool)


def failure_text(exc: BaseException) -> str:
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
        futures = [pool.submit(W.timed, prepared.kind, ops, *prepared.args) for _ in range(workers)]
        cf.wait(futures, timeout=TASK_TIMEOUT)
        _raise_root_cause(futures)
        results = [f.result(timeout=0) for f in futures]
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


def _raise_root_cause(futures: list[cf.Future[Any]]) -> None:
    """Raise a worker's own error rather than the BrokenBarrierError it caused in the others."""
    errors = [f.exception(timeout=0) for f in futures if f.done()]
    found = [e for e in errors if e is not None]
    found.sort(key=lambda e: isinstance(e, threading.BrokenBarrierError))
    if found:
        raise found[0]


def spec_of(name: str) -> S.ScenarioSpec:
    return S.CLIENTS_SCENARIO if name == S.CLIENTS_SCENARIO.name else SCENARIOS[name]


def _summarise(name: str, workers: int, runs: list[Run]) -> Measurement:
    spec = spec_of(name)
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


# -- targets (from the issues; reported, never asserted) ------------------------


def target_workers(report: BenchReport) -> int:
    counts = sorted({m.workers for m in report.measurements if m.scenario != "proxyshare-clients"})
    return 2 if 2 in counts or not counts else counts[0]


def compute_targets(report: BenchReport) -> list[Target]:
    """Each target's measured value, at 2 workers (or the smallest count run)."""
    if report.mode != "scenarios":
        return []
    w = target_workers(report)

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
