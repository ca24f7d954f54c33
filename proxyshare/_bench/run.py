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
reach pool workers: they import ``proxyshare._bench.workers`` only.
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
from datetime import datetime, timezone
from typing import Any

from proxyshare._bench import scenarios as S
from proxyshare._bench import workers as W
from proxyshare._bench.report import (
    SCENARIOS,
    TASK_TIMEOUT,
    BenchConfig,
    BenchReport,
    MachineInfo,
    Measurement,
    Progress,
    Run,
    Steps,
    failure_text,
    spec_of,
)
from proxyshare._bench.targets import compute_targets
from proxyshare._bench.verdict import make_verdict
from proxyshare._errors import ProxyShareError

__all__ = ["run_bench"]


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
            from proxyshare._bench.micro import MICRO, run_micro

            run_micro(env, config, report, Steps(progress, len(MICRO) * config.repeat))
        else:
            _run_scenarios(env, config, report, progress)
    finally:
        env.close()
    report.machine.load_average_end = _load()
    report.targets = compute_targets(report)
    report.verdict = make_verdict(report)
    report.finished = datetime.now(timezone.utc)
    return report


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
        from proxyshare._bench.probes import probe_capabilities

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
            connect_us=prepared.connect_us,
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


def _summarise(name: str, workers: int, runs: list[Run]) -> Measurement:
    spec = spec_of(name)
    costs = [r.us_per_op for r in runs]
    median = statistics.median(costs)
    lost = max(r.expected - r.observed for r in runs)
    trips = [r.round_trips_per_op for r in runs if r.round_trips_per_op is not None]
    connects = [r.connect_us for r in runs if r.connect_us is not None]
    last = runs[-1]
    return Measurement(
        scenario=name,
        description=spec.description,
        mechanism=spec.mechanism,
        unit=spec.unit,
        family=spec.family,
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
        connect_us=statistics.median(connects) if connects else None,
        runs=runs,
    )


def _fill_ratios(measurements: list[Measurement]) -> None:
    by_key = {(m.scenario, m.workers): m for m in measurements}
    for m in measurements:
        base = by_key.get((m.baseline, m.workers)) if m.baseline else None
        if base is not None and base.us_per_op > 0:
            m.ratio_to_initializer = m.us_per_op / base.us_per_op
