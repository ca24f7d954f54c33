"""Synthetic ``proxyshare bench`` reports: chosen numbers, no benchmark run.

The verdict, the picture and ``--compare`` are pure functions of a report,
so their tests build one here with the costs they need and the capability
facts a real run finds (the probes' findings on any Linux machine).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from proxyshare._bench.report import (
    BenchConfig,
    BenchReport,
    Capability,
    CapabilityRow,
    MachineInfo,
    Run,
    spec_of,
)
from proxyshare._bench.run import _fill_ratios, _summarise
from proxyshare._bench.targets import compute_targets
from proxyshare._bench.verdict import make_verdict

Costs = Mapping[str, "float | Sequence[float]"]

_YES = Capability(works=True, basis="checked", detail="checked")
_YES_BY_DESIGN = Capability(works=True, basis="structural", detail="by design")
_NO = Capability(works=False, basis="checked", detail="failed when tried")
_NO_BY_DESIGN = Capability(works=False, basis="structural", detail="not by design")
_NA = Capability(works=None, basis="n/a", detail="does not apply")

# submit argument, made after pool start, other machine, lock freed on holder death
FACTS: dict[str, tuple[Capability, Capability, Capability, Capability]] = {
    "multiprocessing (initializer)": (_NO, _NO_BY_DESIGN, _NO_BY_DESIGN, _NO),
    "proxyshare (served)": (_YES, _YES, _YES, _YES),
    "proxyshare (shared memory)": (_YES, _YES, _NO_BY_DESIGN, _YES),
    "stdlib SyncManager": (_YES, _YES, _YES, _NO),
    "stdlib BaseManager": (_YES, _YES, _YES_BY_DESIGN, _NA),
    "redis-py": (_NO, _YES_BY_DESIGN, _YES, _NA),
    "proxyshare (Redis backend)": (_YES, _YES, _YES, _YES_BY_DESIGN),
}


def synthetic_report(
    costs: Costs,
    *,
    workers: int = 2,
    sweep: Mapping[int, Costs] | None = None,
    load: float = 0.1,
    cpus: int = 2,
    probed: bool = True,
    lost: Mapping[str, int] | None = None,
) -> BenchReport:
    """A finished report: µs/op per scenario (a list: one per repeat) at ``workers``.

    ``sweep`` adds other worker counts; ``load`` is the 1-minute load average
    when the run "started"; ``lost`` plants lost updates.
    """
    by_workers = {workers: costs, **(sweep or {})}
    repeat = max(
        (len(c) if not isinstance(c, (int, float)) else 1)
        for w_costs in by_workers.values()
        for c in w_costs.values()
    )
    report = BenchReport(
        proxyshare_version="0.1.0",
        python_version="3.11.7",
        python_implementation="CPython",
        machine=MachineInfo(
            platform="Linux-6.18.44-x86_64-with-glibc2.36",
            machine="x86_64",
            processor="x86_64",
            cpu_count=cpus,
            load_average_start=[load, load, load],
            load_average_end=[load, load, load],
        ),
        start_method="fork",
        mode="scenarios",
        config=BenchConfig(workers=sorted(by_workers), repeat=repeat),
        started=datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc),
        finished=datetime(2026, 12, 1, 12, 1, tzinfo=timezone.utc),
    )
    for w in sorted(by_workers):
        for name, cost in by_workers[w].items():
            values = [float(cost)] if isinstance(cost, (int, float)) else [float(c) for c in cost]
            expected = 1000 * w
            observed = expected - (lost or {}).get(name, 0)
            runs = [Run(us_per_op=v, expected=expected, observed=observed) for v in values]
            report.measurements.append(_summarise(name, w, runs))
    _fill_ratios(report.measurements)
    if probed:
        # In measurement order, as the bench's own rows are (a set's order varies by run).
        names = dict.fromkeys(m.scenario for m in report.measurements if m.scenario != "floor")
        report.capabilities = [_row(name) for name in names]
    report.targets = compute_targets(report)
    report.verdict = make_verdict(report)
    return report


def _row(name: str) -> CapabilityRow:
    spec = spec_of(name)
    mechanism = spec.mechanism
    submit, after, remote, death = FACTS[mechanism]
    if not spec.submittable:  # an asyncio proxy (see probes.probe_capabilities)
        submit = after = _NO_BY_DESIGN
    return CapabilityRow(
        scenario=name,
        mechanism=mechanism,
        submit_argument=submit,
        created_after_pool_start=after,
        other_machine=remote,
        lock_release_on_holder_death=death,
    )


# Costs shaped like the README's run on a 2-core VM (µs/op at 2 workers).
TYPICAL: dict[str, float] = {
    "initializer": 2.1,
    "initializer-nolock": 0.6,
    "proxyshare-counter": 24.6,
    "proxyshare-lock": 65.0,
    "proxyshare-dict": 13.6,
    "proxyshare-pipeline": 4.4,
    "proxyshare-shm": 3.0,
    "proxyshare-shm-lock": 6.5,
    "syncmanager": 222.0,
    "syncmanager-nolock": 70.0,
    "basemanager-floor": 23.5,
    "redis": 63.5,
    "proxyshare-redis": 54.1,
    "floor": 11.9,
    "queue-initializer": 7.3,
    "queue-syncmanager": 67.2,
    "queue-proxyshare": 24.1,
}
