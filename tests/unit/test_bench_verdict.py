"""The verdict: plain sentences drawn from a report's measurements and probes."""

from __future__ import annotations

import pytest

from proxyshare._bench.report import BenchReport
from proxyshare._bench.verdict import make_verdict
from tests.bench_reports import TYPICAL, synthetic_report

pytestmark = pytest.mark.timeout(30)


def _text(report: BenchReport) -> str:
    return " ".join(make_verdict(report).sentences)


@pytest.mark.parametrize(
    ("initializer", "counter", "said"),
    [
        (2.1, 24.6, "costs 11.7× the initializer way (24.6 vs 2.1 µs/op)"),
        (1.0, 250.0, "costs 250× the initializer way (250 vs 1.0 µs/op)"),
        (4.0, 2.0, "costs 0.5× the initializer way (2.0 vs 4.0 µs/op)"),
    ],
)
def test_the_served_counters_cost_comes_from_the_measurements(
    initializer: float, counter: float, said: str
) -> None:
    report = synthetic_report({"initializer": initializer, "proxyshare-counter": counter})
    assert said in _text(report)


def test_what_the_served_counter_buys_comes_from_the_probes() -> None:
    text = _text(synthetic_report(TYPICAL))
    assert (
        "it buys passing as an argument, objects made after the pool started, other machines, "
        "and locks freed on holder death (checked in this run)" in text
    )


def test_without_probes_the_verdict_says_what_it_could_not_check() -> None:
    report = synthetic_report(TYPICAL, probed=False)
    text = _text(report)
    assert "what that buys was not checked in this run" in text
    assert "not checked in this run" in make_verdict(report).sentences[1]
    assert make_verdict(report).cheapest_passable is None


def test_the_cheapest_way_that_passes_as_an_argument_is_named() -> None:
    # The initializer is cheaper still, but fails as a submit() argument.
    verdict = make_verdict(synthetic_report(TYPICAL))
    assert verdict.cheapest_passable == "proxyshare-shm"
    cheapest = verdict.sentences[1]
    assert "The cheapest way that still passes as a submit() argument is proxyshare-shm" in cheapest
    assert "1.4× the initializer (3.0 µs/op), same host only" in cheapest
    assert "across machines, proxyshare-pipeline: 2.1× the initializer (4.4 µs/op)" in cheapest


def test_racy_and_per_item_scenarios_are_never_the_cheapest_way() -> None:
    costs = {"initializer": 2.0, "syncmanager-nolock": 0.1, "queue-proxyshare": 0.2, "redis": 9.0}
    verdict = make_verdict(synthetic_report(costs, lost={"syncmanager-nolock": 5}))
    # redis-py's client does not pickle: the URL is passed, not the object.
    assert verdict.cheapest_passable is None
    assert "No way measured in this run passes as a submit() argument." in verdict.sentences


def test_the_stdlib_manager_is_compared_with_both() -> None:
    text = _text(synthetic_report(TYPICAL))
    assert "The stdlib Manager() way costs 106× the initializer (222 µs/op)" in text
    assert "9.0× the served counter" in text
    assert "its lock stayed taken after its holder was killed" in text


def test_a_wrong_total_is_said_plainly() -> None:
    text = _text(synthetic_report(TYPICAL, lost={"proxyshare-lock": 3}))
    assert "Wrong totals: proxyshare-lock lost updates although locked" in text


def test_a_wide_spread_between_repeats_makes_the_run_noisy() -> None:
    costs = {"initializer": [2.0, 2.1, 2.0], "proxyshare-counter": [20.0, 31.0, 22.0]}
    verdict = make_verdict(synthetic_report(costs))
    assert verdict.noisy
    assert "This machine was too noisy to trust these numbers" in verdict.sentences[-1]
    assert (
        "the spread between repeats reached 50 % (proxyshare-counter at 2 workers"
        in (verdict.sentences[-1])
    )


def test_a_high_load_average_makes_the_run_noisy() -> None:
    verdict = make_verdict(synthetic_report(TYPICAL, load=1.7, cpus=2))
    assert verdict.noisy
    assert "the load average was 1.70 on 2 CPUs as the run started" in verdict.sentences[-1]
    assert "--repeat 3" in verdict.sentences[-1]


def test_a_quiet_machine_with_steady_repeats_is_trusted() -> None:
    costs = {"initializer": [2.0, 2.1, 2.05], "proxyshare-counter": [20.0, 21.0, 22.0]}
    verdict = make_verdict(synthetic_report(costs, load=0.2, cpus=2))
    assert not verdict.noisy and verdict.noise == []
    assert verdict.sentences[-1] == (
        "The repeats agreed within 10 % and the machine was quiet (load 0.20 on 2 CPUs)."
    )


def test_a_single_run_says_the_spread_is_unknown() -> None:
    verdict = make_verdict(synthetic_report(TYPICAL, load=0.2))
    assert not verdict.noisy
    assert "ran once: --repeat 3 shows how much the numbers move" in verdict.sentences[-1]


def test_the_verdict_speaks_of_the_target_worker_count() -> None:
    report = synthetic_report(
        {"initializer": 2.0, "proxyshare-counter": 30.0},
        sweep={1: {"initializer": 1.0, "proxyshare-counter": 10.0}},
    )
    verdict = make_verdict(report)
    assert verdict.workers == 2
    assert "at 2 workers, a served counter costs 15.0×" in verdict.sentences[0]


def test_the_verdict_is_stored_in_the_json_report() -> None:
    report = synthetic_report(TYPICAL)
    again = BenchReport.model_validate_json(report.model_dump_json())
    assert again.verdict == make_verdict(report)
    assert again.schema_version == 3


def test_a_report_with_nothing_comparable_still_gets_a_verdict() -> None:
    verdict = make_verdict(synthetic_report({"floor": 10.0}, probed=False))
    assert verdict.sentences[-1]  # the noise sentence is always there
    assert all(s.endswith(".") for s in verdict.sentences)
