"""The verdict: what a run says, in a few plain sentences drawn from its report.

A pure function of the report (no clock, no machine, no I/O), so the same
report always gets the same verdict and tests feed it synthetic reports.
Every number in it comes from the measurements; every "it buys" from the
capability probes of the same run.

    make_verdict(report).sentences
    ["On this machine, at 2 workers, a served counter costs 11.8× the
      initializer way (24.6 vs 2.1 µs/op); it buys passing as an argument, ...",
     "The cheapest way that still passes as a submit() argument is ...",
     "The stdlib Manager() way costs ...",
     "This machine was too noisy to trust these numbers: ..."]
"""

from __future__ import annotations

from proxyshare._bench.report import BenchReport, Capability, CapabilityRow, Measurement, Verdict
from proxyshare._bench.targets import target_workers

__all__ = ["NOISY_LOAD_PER_CPU", "NOISY_SPREAD", "make_verdict"]

# Spread between repeats, (max - min) / median, above which a run is noisy.
NOISY_SPREAD = 0.30
# 1-minute load average per CPU, when the run started, above which other
# work was taking cores the bench's workers and server need.  (The load at
# the end counts the bench's own processes, so it says nothing about others.)
NOISY_LOAD_PER_CPU = 0.5

# What a capability column buys, as the verdict words it.
_BUYS = (
    ("submit_argument", "passing as an argument"),
    ("created_after_pool_start", "objects made after the pool started"),
    ("other_machine", "other machines"),
    ("lock_release_on_holder_death", "locks freed on holder death"),
)


def make_verdict(report: BenchReport) -> Verdict:
    """The verdict on ``report``: a few sentences, the cheapest passable way, the noise."""
    noise = _noise(report)
    if report.mode == "micro":
        sentences = _micro_sentences(report)
        w: int | None = 1
        cheapest = None
    else:
        w = target_workers(report)
        at_w = {m.scenario: m for m in report.measurements if m.workers == w}
        rows = {row.scenario: row for row in report.capabilities}
        cheapest_m = _cheapest_passable(at_w, rows)
        cheapest = cheapest_m.scenario if cheapest_m is not None else None
        sentences = [
            s
            for s in (
                _served_sentence(at_w, rows, w),
                _cheapest_sentence(at_w, rows, cheapest_m),
                _stdlib_sentence(at_w, rows),
                _wrong_sentence(report),
            )
            if s
        ]
        if not sentences:
            sentences.append("Nothing this verdict compares was measured in this run.")
    sentences.append(_noise_sentence(report, noise))
    return Verdict(
        sentences=sentences, workers=w, cheapest_passable=cheapest, noisy=bool(noise), noise=noise
    )


# -- formatting -------------------------------------------------------------------


def _us(x: float) -> str:
    return f"{x:.2f}" if x < 1 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _x(ratio: float) -> str:
    return f"{ratio:.1f}×" if ratio < 100 else f"{ratio:,.0f}×"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"


def _join(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


# -- the sentences ----------------------------------------------------------------


def _served_sentence(at_w: dict[str, Measurement], rows: dict[str, CapabilityRow], w: int) -> str:
    served, init = at_w.get("proxyshare-counter"), at_w.get("initializer")
    if served is None or init is None or init.us_per_op <= 0:
        return ""
    ratio = served.us_per_op / init.us_per_op
    text = (
        f"On this machine, at {w} workers, a served counter costs {_x(ratio)} the initializer "
        f"way ({_us(served.us_per_op)} vs {_us(init.us_per_op)} µs/op)"
    )
    return text + _buys(rows.get("proxyshare-counter"), rows.get("initializer")) + "."


def _buys(row: CapabilityRow | None, reference: CapabilityRow | None) -> str:
    """ "; it buys A, B and C (checked in this run)", from the capability probes."""
    if row is None:
        return "; what that buys was not checked in this run"
    bought: list[tuple[str, Capability]] = []
    failed: list[str] = []
    for field, phrase in _BUYS:
        cell: Capability = getattr(row, field)
        ref: Capability | None = getattr(reference, field) if reference is not None else None
        if cell.works and not (ref is not None and ref.works):
            bought.append((phrase, cell))
        elif cell.works is False and cell.basis == "checked":
            failed.append(phrase)
    text = ""
    if bought:
        text = "; it buys " + _join([phrase for phrase, _cell in bought])
        unchecked = [phrase for phrase, cell in bought if cell.basis != "checked"]
        if not unchecked:
            text += " (checked in this run)"
        elif len(unchecked) < len(bought):
            text += f" (checked in this run; {_join(unchecked)} by design)"
        else:
            text += " (by design, not checked in this run)"
    if failed:
        text += f"; {_join(failed)} failed in this run"
    return text


def _passes(rows: dict[str, CapabilityRow], name: str) -> bool:
    row = rows.get(name)
    return row is not None and row.submit_argument.works is True


def _reaches_other_machines(rows: dict[str, CapabilityRow], name: str) -> bool:
    row = rows.get(name)
    return row is not None and row.other_machine.works is True


def _candidates(at_w: dict[str, Measurement], rows: dict[str, CapabilityRow]) -> list[Measurement]:
    """Exact per-increment ways whose object passes as a submit() argument, cheapest first."""
    found = [
        m
        for m in at_w.values()
        if m.unit == "increment" and not m.racy and m.correct and _passes(rows, m.scenario)
    ]
    return sorted(found, key=lambda m: m.us_per_op)


def _cheapest_passable(
    at_w: dict[str, Measurement], rows: dict[str, CapabilityRow]
) -> Measurement | None:
    found = _candidates(at_w, rows)
    return found[0] if found else None


def _cost(m: Measurement, init: Measurement | None) -> str:
    if init is not None and init.us_per_op > 0 and m.baseline == "initializer":
        return f"{_x(m.us_per_op / init.us_per_op)} the initializer ({_us(m.us_per_op)} µs/op)"
    return f"{_us(m.us_per_op)} µs/op"


def _cheapest_sentence(
    at_w: dict[str, Measurement], rows: dict[str, CapabilityRow], cheapest: Measurement | None
) -> str:
    if not rows:
        return "Which ways pass as a submit() argument was not checked in this run."
    if cheapest is None:
        return "No way measured in this run passes as a submit() argument."
    init = at_w.get("initializer")
    text = (
        f"The cheapest way that still passes as a submit() argument is {cheapest.scenario} "
        f"({cheapest.description}): {_cost(cheapest, init)}"
    )
    if not _reaches_other_machines(rows, cheapest.scenario):
        text += ", same host only"
        remote = [m for m in _candidates(at_w, rows) if _reaches_other_machines(rows, m.scenario)]
        if remote:
            text += f"; across machines, {remote[0].scenario}: {_cost(remote[0], init)}"
    return text + "."


def _stdlib_sentence(at_w: dict[str, Measurement], rows: dict[str, CapabilityRow]) -> str:
    sync, init = at_w.get("syncmanager"), at_w.get("initializer")
    if sync is None:
        return ""
    text = f"The stdlib Manager() way costs {_cost(sync, init)}"
    served = at_w.get("proxyshare-counter")
    if served is not None and served.us_per_op > 0:
        text += f", {_x(sync.us_per_op / served.us_per_op)} the served counter"
    row = rows.get("syncmanager")
    death = row.lock_release_on_holder_death if row is not None else None
    if death is not None and death.works is False and death.basis == "checked":
        text += ", and its lock stayed taken after its holder was killed"
    return text + "."


def _wrong_sentence(report: BenchReport) -> str:
    wrong = sorted({m.scenario for m in report.measurements if not m.racy and not m.correct})
    if not wrong:
        return ""
    return f"Wrong totals: {_join(wrong)} lost updates although locked (see the table)."


def _micro_sentences(report: BenchReport) -> list[str]:
    floor = report.measurement("floor")
    incr = report.measurement("counter.increment()")
    if floor is None or incr is None or floor.us_per_op <= 0:
        return ["The transport floor or counter.increment() was not measured in this run."]
    ratio = incr.us_per_op / floor.us_per_op
    return [
        f"From one client, counter.increment() costs {_x(ratio)} a raw multiprocessing "
        f"round trip ({_us(incr.us_per_op)} vs {_us(floor.us_per_op)} µs)."
    ]


# -- noise ------------------------------------------------------------------------


def _worst_spread(report: BenchReport) -> tuple[float, Measurement] | None:
    worst: tuple[float, Measurement] | None = None
    for m in report.measurements:
        if len(m.runs) > 1 and m.us_per_op > 0:
            spread = (m.us_per_op_max - m.us_per_op_min) / m.us_per_op
            if worst is None or spread > worst[0]:
                worst = (spread, m)
    return worst


def _load(report: BenchReport) -> tuple[float, int] | None:
    load, cpus = report.machine.load_average_start, report.machine.cpu_count
    if not load or not cpus:
        return None
    return load[0], cpus


def _noise(report: BenchReport) -> list[str]:
    """Why this run's numbers cannot be trusted, if they cannot."""
    reasons = []
    worst = _worst_spread(report)
    if worst is not None and worst[0] > NOISY_SPREAD:
        spread, m = worst
        reasons.append(
            f"the spread between repeats reached {_pct(spread)} "
            f"({m.scenario} at {m.workers} workers; over {_pct(NOISY_SPREAD)} is noise)"
        )
    load = _load(report)
    if load is not None and load[0] / load[1] > NOISY_LOAD_PER_CPU:
        reasons.append(f"the load average was {load[0]:.2f} on {load[1]} CPUs as the run started")
    return reasons


def _noise_sentence(report: BenchReport, noise: list[str]) -> str:
    if noise:
        again = "run again" if report.config.repeat > 1 else "run again with --repeat 3"
        return (
            f"This machine was too noisy to trust these numbers: {_join(noise)}; "
            f"the ratios survive noise better than µs/op, but {again} on a quiet machine "
            "before drawing conclusions."
        )
    load = _load(report)
    quiet = f"the machine was quiet (load {load[0]:.2f} on {load[1]} CPUs)" if load else ""
    worst = _worst_spread(report)
    if worst is None:
        start = f"{quiet[0].upper()}{quiet[1:]}, but e" if quiet else "E"
        return f"{start}ach scenario ran once: --repeat 3 shows how much the numbers move."
    steady = f"The repeats agreed within {_pct(worst[0])}"
    return f"{steady} and {quiet}." if quiet else f"{steady}."
