"""The performance targets, computed from a report: reported, never asserted."""

from __future__ import annotations

from typing import Literal

from proxyshare._bench.report import BenchReport, Target
from proxyshare._bench.scenarios import AIO_TASKS

__all__ = ["compute_targets", "target_workers"]


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
    targets: list[tuple[str, str, tuple[float | None, str], Literal["<=", ">="], float]] = [
        (
            "counter-vs-basemanager",
            "served counter ÷ bare stdlib BaseManager counter, µs/op",
            ratio("proxyshare-counter", "basemanager-floor"),
            "<=",
            1.0,
        ),
        (
            "counter-vs-basemanager-0.7",
            "served counter ÷ bare stdlib BaseManager counter, µs/op (stretch)",
            ratio("proxyshare-counter", "basemanager-floor"),
            "<=",
            0.7,
        ),
        (
            "counter-vs-syncmanager",
            "stdlib SyncManager ÷ served counter, µs/op",
            ratio("syncmanager", "proxyshare-counter"),
            ">=",
            8.0,
        ),
        (
            "counter-vs-redis",
            "redis-py INCR ÷ served counter, µs/op",
            ratio("redis", "proxyshare-counter"),
            ">=",
            2.5,
        ),
        (
            "durable-vs-counter",
            "served counter with a state dir ÷ without, µs/op",
            ratio("proxyshare-durable", "proxyshare-counter"),
            "<=",
            1.5,
        ),
        (
            "lock-vs-basemanager",
            "served lock + dict ÷ bare stdlib BaseManager counter, µs/op",
            ratio("proxyshare-lock", "basemanager-floor"),
            "<=",
            4.5,
        ),
        (
            "lock-round-trips",
            "served lock + dict: round trips per locked increment",
            _round_trips(report, "proxyshare-lock", w),
            "<=",
            4.0,
        ),
        (
            "pipeline-vs-initializer",
            "served pipeline ÷ initializer, µs/op",
            ratio("proxyshare-pipeline", "initializer"),
            "<=",
            3.0,
        ),
        (
            "shm-vs-initializer",
            "shared-memory counter ÷ initializer, µs/op",
            ratio("proxyshare-shm", "initializer"),
            "<=",
            1.5,
        ),
        (
            "shm-lock-us",
            "shared-memory lock + counter: µs per locked increment",
            _absolute(cost("proxyshare-shm-lock"), "proxyshare-shm-lock", w),
            "<=",
            3.0,
        ),
        (
            "shm-lock-holder-death-ms",
            "shared-memory lock free after its holder's SIGKILL, ms",
            shm_death,
            "<=",
            10.0,
        ),
        (
            "tls-vs-tcp",
            "served counter over TLS ÷ over plain TCP, µs/op",
            _tls_ratio(report, w),
            "<=",
            1.5,
        ),
        (
            "redis-backend-vs-redis",
            "proxyshare on Redis ÷ redis-py INCR, µs/op",
            ratio("proxyshare-redis", "redis"),
            "<=",
            1.2,
        ),
    ]
    if _aio_workers(report) is not None:  # only when they ran: not in the default run
        targets += [
            (
                "aio-64-vs-sync",
                f"asyncio, {AIO_TASKS} tasks per process ÷ one sync client per process, ops/s",
                _aio_speedup(report),
                ">=",
                3.0,
            ),
            (
                "aio-overhead-us",
                "asyncio client, one task: µs/op over the sync client's",
                _aio_overhead(report),
                "<=",
                25.0,
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
                comparison=comparison,
                met=met,
                detail=detail,
            )
        )
    return out


def _tls_ratio(report: BenchReport, w: int) -> tuple[float | None, str]:
    """TLS ÷ TCP per op; the detail gives each one's cost of a new connection."""
    tls, tcp = report.measurement("proxyshare-tls", w), report.measurement("proxyshare-tcp", w)
    if tls is None or tcp is None:
        missing = " and ".join(
            n for n, m in (("proxyshare-tls", tls), ("proxyshare-tcp", tcp)) if m is None
        )
        return None, f"{missing} not measured (add --scenarios tls)"
    detail = f"{tls.us_per_op:.2f} ÷ {tcp.us_per_op:.2f} µs"
    if tls.connect_us is not None and tcp.connect_us is not None:
        detail += (
            f"; a new connection: {tls.connect_us / 1e3:.2f} ms with TLS, "
            f"{tcp.connect_us / 1e3:.2f} ms without"
        )
    return tls.us_per_op / tcp.us_per_op, detail


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


def _aio_workers(report: BenchReport) -> int | None:
    """The asyncio targets speak of one process when the run measured one, else of the
    smallest worker count it measured them at."""
    counts = sorted(
        m.workers
        for m in report.measurements
        if m.scenario in ("aio-1", "aio-64")
        and report.measurement("proxyshare-counter", m.workers) is not None
    )
    return counts[0] if counts else None


def _aio_speedup(report: BenchReport) -> tuple[float | None, str]:
    w = _aio_workers(report)
    aio = report.measurement("aio-64", w) if w is not None else None
    sync = report.measurement("proxyshare-counter", w) if w is not None else None
    if aio is None or sync is None or aio.us_per_op <= 0:
        return None, "aio-64 and proxyshare-counter not measured at the same worker count"
    return sync.us_per_op / aio.us_per_op, (
        f"{aio.ops_per_s:,.0f} ÷ {sync.ops_per_s:,.0f} ops/s at {w} worker(s)"
    )


def _aio_overhead(report: BenchReport) -> tuple[float | None, str]:
    w = _aio_workers(report)
    aio = report.measurement("aio-1", w) if w is not None else None
    sync = report.measurement("proxyshare-counter", w) if w is not None else None
    if aio is None or sync is None:
        return None, "aio-1 and proxyshare-counter not measured at the same worker count"
    return aio.us_per_op - sync.us_per_op, (
        f"{aio.us_per_op:.1f} − {sync.us_per_op:.1f} µs/op at {w} worker(s)"
    )
