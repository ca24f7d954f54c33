"""``--compare OLD.json``: this run against a saved report, scenario by scenario.

µs/op moves with the machine and its load.  A ratio to a reference measured
in the same run moves much less: load slows both sides alike.  So each
scenario's change is judged on its ratios to two references, its baseline
(``initializer``; ``queue-initializer`` for the queues) and
``basemanager-floor``, with the raw µs/op shown beside them:

    change against a reference = (new ratio ÷ old ratio) − 1

A scenario **regressed** when it got worse by more than the threshold
against *every* reference both runs measured: a reference that itself moved
shifts every ratio to it, and that is not the scenario's doing.  With no
common reference, the raw µs/op is judged.  The references themselves (the
stdlib's yardsticks) are shown, not judged.

Reading a report goes through :func:`load_report`, which knows the schema
versions: a report without ``schema_version`` is version 1 (read: the
fields added since have defaults); a newer version than this code knows is
refused with a message saying so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from proxyshare._bench.report import SCHEMA_VERSION, BenchReport, Measurement
from proxyshare._bench.verdict import NOISY_SPREAD, make_verdict

__all__ = ["DEFAULT_FLAG_PCT", "Change", "Comparison", "compare_reports", "load_report"]

# Without --fail-over, changes beyond the noise a single run can show are flagged.
DEFAULT_FLAG_PCT = NOISY_SPREAD * 100
BASELINE = "baseline"  # stands for each scenario's own baseline in REFERENCES
REFERENCES = {
    "scenarios": (BASELINE, "basemanager-floor"),
    "micro": ("floor", "basemanager increment()"),
}


def load_report(text: str, source: str) -> BenchReport:
    """The report in ``text`` (read from ``source``); ``ValueError`` says why it cannot be read."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not JSON ({exc})") from None
    if not isinstance(data, dict) or "measurements" not in data or "machine" not in data:
        raise ValueError(
            f"{source} is not a proxyshare bench report (write one with `proxyshare bench --json`)"
        )
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{source} has an invalid schema_version: {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{source} is a bench report of schema version {version}, written by a newer "
            f"proxyshare; this one reads versions 1 to {SCHEMA_VERSION} (upgrade to compare)"
        )
    try:
        report = BenchReport.model_validate({**data, "schema_version": version})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(
            f"{source} is not a readable bench report of schema version {version}: "
            f"{where}: {first['msg']}"
        ) from None
    return report


@dataclass(frozen=True)
class Measure:
    """One quantity compared: a ratio to a reference, or the raw µs/op."""

    label: str  # "× initializer", "× basemanager-floor", "µs/op"
    old: float | None
    new: float | None

    @property
    def change(self) -> float | None:
        """new ÷ old − 1 (positive: worse, it costs more)."""
        if self.old is None or self.new is None or self.old <= 0:
            return None
        return self.new / self.old - 1


@dataclass(frozen=True)
class Change:
    """One scenario at one worker count, then and now."""

    scenario: str
    workers: int
    raw: Measure  # µs/op, shown, judged only when no reference is common to both runs
    ratios: tuple[Measure, ...]  # to each reference (None where a run lacks it)
    judged: tuple[Measure, ...]  # what the verdict on this row rests on
    threshold: float  # a fraction: 0.3 is 30 %
    # "compared", "reference" (a yardstick: shown, not judged), "new" (not in
    # the old run) or "gone" (not in this one)
    status: str

    @property
    def worse_by(self) -> float | None:
        """The smallest change over the judged measures: how much worse it surely got."""
        changes = [m.change for m in self.judged if m.change is not None]
        return min(changes) if changes else None

    @property
    def better_by(self) -> float | None:
        """The largest change over the judged measures, negated: how much better it surely got."""
        changes = [m.change for m in self.judged if m.change is not None]
        return -max(changes) if changes else None

    @property
    def regressed(self) -> bool:
        worse = self.worse_by
        return self.status == "compared" and worse is not None and worse > self.threshold

    @property
    def improved(self) -> bool:
        better = self.better_by
        return self.status == "compared" and better is not None and better > self.threshold

    @property
    def mixed(self) -> bool:
        """The references disagree: beyond the threshold against one, not against another."""
        changes = [m.change for m in self.judged if m.change is not None]
        beyond = any(abs(c) > self.threshold for c in changes)
        return self.status == "compared" and beyond and not (self.regressed or self.improved)


@dataclass
class Comparison:
    changes: list[Change]
    threshold_pct: float
    references: tuple[str, ...]
    notes: list[str] = field(default_factory=list)  # why to read it with care

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regressed]


def compare_reports(
    old: BenchReport, new: BenchReport, threshold_pct: float = DEFAULT_FLAG_PCT
) -> Comparison:
    """Each scenario of ``new`` (and of ``old``) with its change, judged on the ratios."""
    refs = REFERENCES["micro" if new.mode == "micro" else "scenarios"]
    threshold = threshold_pct / 100
    keys: list[tuple[str, int]] = []
    for m in [*new.measurements, *old.measurements]:
        if (m.scenario, m.workers) not in keys:
            keys.append((m.scenario, m.workers))
    changes = []
    for scenario, workers in keys:
        then, now = old.measurement(scenario, workers), new.measurement(scenario, workers)
        either = now or then
        assert either is not None  # the key came from one of them
        ratios = tuple(
            Measure(
                f"× {_reference(either, ref)}",
                _ratio(old, then, _reference(either, ref)),
                _ratio(new, now, _reference(either, ref)),
            )
            for ref in refs
        )
        raw = Measure("µs/op", then.us_per_op if then else None, now.us_per_op if now else None)
        common = tuple(r for r in ratios if r.change is not None)
        if then is None or now is None:
            status = "new" if now else "gone"
        else:
            yardsticks = {_reference(either, ref) for ref in refs}
            status = "reference" if scenario in yardsticks else "compared"
        changes.append(Change(scenario, workers, raw, ratios, common or (raw,), threshold, status))
    return Comparison(changes, threshold_pct, tuple(refs), _notes(old, new))


def _reference(m: Measurement, ref: str) -> str:
    return (m.baseline or "initializer") if ref == BASELINE else ref


def _ratio(report: BenchReport, m: Measurement | None, reference: str) -> float | None:
    """``m``'s µs/op over ``reference``'s in the same run; None for the reference itself."""
    if m is None or m.scenario == reference:
        return None
    ref = report.measurement(reference, m.workers)
    if ref is None or ref.us_per_op <= 0:
        return None
    return m.us_per_op / ref.us_per_op


def _notes(old: BenchReport, new: BenchReport) -> list[str]:
    notes = []
    then, now = old.machine, new.machine
    differ = [
        what
        for what, a, b in (
            ("machine", (then.machine, then.cpu_count), (now.machine, now.cpu_count)),
            ("system", then.platform, now.platform),
            ("Python", old.python_version, new.python_version),
            ("start method", old.start_method, new.start_method),
        )
        if a != b
    ]
    if differ:
        notes.append(
            f"the old run differs in {', '.join(differ)}: compare the ratios, not the µs/op"
        )
    if old.config.ops_per_worker != new.config.ops_per_worker:
        notes.append(
            f"the runs differ in size ({old.config.ops_per_worker:,} vs "
            f"{new.config.ops_per_worker:,} ops per worker): short runs are noisier"
        )
    for which, report in (("old", old), ("new", new)):
        verdict = make_verdict(report)
        if verdict.noisy:
            notes.append(f"the {which} run was noisy: {'; '.join(verdict.noise)}")
    return notes
