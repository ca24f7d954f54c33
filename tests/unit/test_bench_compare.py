"""``--compare``: reading saved reports of any schema version, and judging changes."""

from __future__ import annotations

import json

import pytest

from proxyshare._bench.compare import Change, compare_reports, load_report
from proxyshare._bench.report import SCHEMA_VERSION, BenchReport
from tests.bench_reports import TYPICAL, synthetic_report

pytestmark = pytest.mark.timeout(30)


def _scaled(factor: float, only: set[str] | None = None) -> dict[str, float]:
    return {k: v * factor if only is None or k in only else v for k, v in TYPICAL.items()}


def _change(old: BenchReport, new: BenchReport, scenario: str, pct: float = 30) -> Change:
    found = [c for c in compare_reports(old, new, pct).changes if c.scenario == scenario]
    assert len(found) == 1
    return found[0]


# -- reading reports ----------------------------------------------------------------


def test_a_report_round_trips_through_load_report() -> None:
    report = synthetic_report(TYPICAL)
    again = load_report(report.model_dump_json(), "r.json")
    assert again == report
    assert again.schema_version == SCHEMA_VERSION


def test_a_report_without_schema_version_is_read_as_version_1() -> None:
    data = json.loads(synthetic_report(TYPICAL).model_dump_json())
    # What a report written before the field existed looks like.
    for key in ("schema_version", "verdict"):
        del data[key]
    for m in data["measurements"]:
        del m["family"]
    old = load_report(json.dumps(data), "v1.json")
    assert old.schema_version == 1
    assert old.verdict is None
    counter = old.measurement("proxyshare-counter")
    assert counter is not None and counter.family is None


def test_a_report_from_a_newer_schema_is_refused_clearly() -> None:
    data = json.loads(synthetic_report(TYPICAL).model_dump_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError) as info:
        load_report(json.dumps(data), "future.json")
    message = str(info.value)
    assert f"future.json is a bench report of schema version {SCHEMA_VERSION + 1}" in message
    assert "newer proxyshare" in message and f"versions 1 to {SCHEMA_VERSION}" in message


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("not json at all", "is not JSON"),
        ("[1, 2, 3]", "is not a proxyshare bench report"),
        ('{"status": "ok"}', "is not a proxyshare bench report"),
        ('{"schema_version": "two", "measurements": [], "machine": {}}', "invalid schema_version"),
    ],
)
def test_what_is_not_a_report_is_refused_with_the_reason(text: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        load_report(text, "x.json")


def test_a_damaged_report_names_the_field() -> None:
    data = json.loads(synthetic_report(TYPICAL).model_dump_json())
    data["measurements"][0]["us_per_op"] = "fast"
    with pytest.raises(ValueError, match=r"measurements\.0\.us_per_op"):
        load_report(json.dumps(data), "x.json")


# -- judging changes ------------------------------------------------------------------


def test_a_planted_regression_is_flagged_against_both_references() -> None:
    old = synthetic_report(TYPICAL)
    new = synthetic_report(_scaled(2.0, only={"proxyshare-counter"}))
    comparison = compare_reports(old, new, 50)
    assert [(c.scenario, c.workers) for c in comparison.regressions] == [("proxyshare-counter", 2)]
    counter = comparison.regressions[0]
    assert [r.label for r in counter.ratios] == ["× initializer", "× basemanager-floor"]
    assert [r.change for r in counter.ratios] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert counter.raw.change == pytest.approx(1.0)


def test_a_regression_under_the_threshold_is_not_flagged() -> None:
    old = synthetic_report(TYPICAL)
    new = synthetic_report(_scaled(1.2, only={"proxyshare-counter"}))
    assert compare_reports(old, new, 30).regressions == []
    assert [c.scenario for c in compare_reports(old, new, 10).regressions] == ["proxyshare-counter"]


def test_a_uniformly_slower_machine_is_no_regression() -> None:
    old = synthetic_report(TYPICAL)
    new = synthetic_report(_scaled(3.0))
    comparison = compare_reports(old, new, 10)
    assert comparison.regressions == []
    counter = _change(old, new, "proxyshare-counter", 10)
    assert counter.raw.change == pytest.approx(2.0)  # shown beside the ratios, not judged


def test_a_reference_that_moved_alone_does_not_flag_the_others() -> None:
    old = synthetic_report(TYPICAL)
    new = synthetic_report(_scaled(0.5, only={"initializer"}))
    comparison = compare_reports(old, new, 30)
    assert comparison.regressions == []
    counter = _change(old, new, "proxyshare-counter")
    assert counter.mixed  # × initializer +100 %, × basemanager-floor unchanged


def test_the_references_themselves_are_shown_not_judged() -> None:
    old = synthetic_report(TYPICAL)
    new = synthetic_report(_scaled(4.0, only={"basemanager-floor"}))
    floor = _change(old, new, "basemanager-floor")
    assert floor.status == "reference" and not floor.regressed
    assert floor.ratios[0].change == pytest.approx(3.0)


def test_a_speed_up_is_an_improvement() -> None:
    old = synthetic_report(TYPICAL)
    new = synthetic_report(_scaled(0.5, only={"proxyshare-lock"}))
    lock = _change(old, new, "proxyshare-lock")
    assert lock.improved and not lock.regressed


def test_without_a_common_reference_the_raw_cost_is_judged() -> None:
    old = synthetic_report({"proxyshare-counter": 10.0})
    new = synthetic_report({"proxyshare-counter": 20.0})
    counter = _change(old, new, "proxyshare-counter")
    assert counter.judged == (counter.raw,)
    assert counter.regressed


def test_scenarios_in_one_run_only_are_listed_not_judged() -> None:
    old = synthetic_report({"initializer": 2.0, "redis": 60.0})
    new = synthetic_report({"initializer": 2.0, "proxyshare-counter": 20.0})
    statuses = {c.scenario: c.status for c in compare_reports(old, new).changes}
    assert statuses == {"initializer": "reference", "proxyshare-counter": "new", "redis": "gone"}
    assert compare_reports(old, new).regressions == []


def test_a_run_on_another_machine_or_a_noisy_one_is_noted() -> None:
    old = synthetic_report(TYPICAL, cpus=8)
    new = synthetic_report(TYPICAL, load=3.0)
    notes = compare_reports(old, new).notes
    assert any("differs in machine" in note for note in notes)
    assert any(note.startswith("the new run was noisy") for note in notes)
