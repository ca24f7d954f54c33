"""The bench's report model, scenario selection, summaries and targets."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from proxyshare._bench import scenarios as S
from proxyshare._bench import workers as W
from proxyshare._bench.output import render
from proxyshare._bench.report import (
    SCENARIOS,
    BenchConfig,
    BenchReport,
    Capability,
    CapabilityRow,
    MachineInfo,
    Run,
    expand_scenarios,
)
from proxyshare._bench.run import _fill_ratios, _summarise, run_bench
from proxyshare._bench.targets import compute_targets
from tests.bench_reports import TYPICAL, synthetic_report


def _report(measurements: list[tuple[str, float]], workers: int = 2) -> BenchReport:
    runs = {name: [Run(us_per_op=us, expected=10, observed=10)] for name, us in measurements}
    report = BenchReport(
        proxyshare_version="0",
        python_version="3.11",
        python_implementation="CPython",
        machine=MachineInfo(platform="p", machine="m", processor="x", cpu_count=2),
        start_method="fork",
        mode="scenarios",
        config=BenchConfig(),
        started=datetime.now(timezone.utc),
    )
    report.measurements = [_summarise(name, workers, r) for name, r in runs.items()]
    _fill_ratios(report.measurements)
    return report


def test_default_scenarios_are_all_so_every_target_is_measured_in_one_run() -> None:
    """All but the asyncio client's, which run with --scenarios aio (and --workers 1,
    the one process their targets speak of); their targets appear when they ran."""
    default = expand_scenarios(None)
    assert {"initializer", "proxyshare-counter", "floor", "basemanager-floor"} <= set(default)
    opt_in = ["aio-1", "aio-64"]
    assert default == [name for name in expand_scenarios(["all"]) if name not in opt_in]
    assert expand_scenarios(["aio"]) == ["proxyshare-counter", *opt_in]


def test_scenario_selection_keeps_table_order_and_expands_aliases() -> None:
    assert expand_scenarios(["syncmanager", "initializer"]) == ["initializer", "syncmanager"]
    assert expand_scenarios(["queue"]) == [
        "queue-initializer",
        "queue-syncmanager",
        "queue-proxyshare",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"workers": [0]},
        {"workers": []},
        {"ops": 0},
        {"repeat": 0},
        {"scenarios": ["nope"]},
        {"start_method": "teleport"},
        {"unknown_option": 1},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BenchConfig.model_validate(bad)


def test_quick_config_is_small_and_explicit_ops_win() -> None:
    assert BenchConfig(quick=True).ops_per_worker < BenchConfig().ops_per_worker
    assert BenchConfig(quick=True, ops=7).ops_per_worker == 7


def test_summary_is_the_median_with_spread_and_worst_loss() -> None:
    runs = [
        Run(us_per_op=3.0, expected=100, observed=100),
        Run(us_per_op=1.0, expected=100, observed=90),
        Run(us_per_op=2.0, expected=100, observed=95),
    ]
    m = _summarise("initializer-nolock", 2, runs)
    assert (m.us_per_op, m.us_per_op_min, m.us_per_op_max) == (2.0, 1.0, 3.0)
    assert m.us_per_op_stdev == pytest.approx(1.0)
    assert m.ops_per_s == pytest.approx(500_000)
    assert (m.lost_updates, m.correct, m.racy) == (10, False, True)


def test_ratio_to_initializer_is_per_worker_count_and_queue_uses_its_own_baseline() -> None:
    report = _report(
        [
            ("initializer", 2.0),
            ("proxyshare-counter", 20.0),
            ("queue-initializer", 10.0),
            ("queue-proxyshare", 40.0),
        ]
    )
    ratios = {m.scenario: m.ratio_to_initializer for m in report.measurements}
    assert ratios["proxyshare-counter"] == pytest.approx(10.0)
    assert ratios["queue-proxyshare"] == pytest.approx(4.0)


def test_targets_compare_the_named_scenarios() -> None:
    report = _report(
        [("proxyshare-counter", 10.0), ("basemanager-floor", 20.0), ("syncmanager", 50.0)]
    )
    targets = {t.name: t for t in compute_targets(report)}
    assert targets["counter-vs-basemanager"].measured == pytest.approx(0.5)
    assert targets["counter-vs-basemanager"].met is True
    assert targets["counter-vs-syncmanager"].measured == pytest.approx(5.0)
    assert targets["counter-vs-syncmanager"].met is False
    assert targets["counter-vs-redis"].met is None
    assert "redis" in targets["counter-vs-redis"].detail


def test_targets_are_named_by_what_they_compare_not_by_tracker_numbers() -> None:
    targets = compute_targets(_report([("initializer", 1.0)]))
    descriptions = [t.description for t in targets]
    assert len(set(descriptions)) == len(descriptions)
    for description in descriptions:
        assert not re.search(r"#\d", description), description


def test_report_round_trips_through_json() -> None:
    report = _report([("initializer", 1.5), ("proxyshare-counter", 20.0)])
    fact = Capability(works=True, basis="checked", detail="free 0.2 ms after SIGKILL", seconds=2e-4)
    report.capabilities = [
        CapabilityRow(
            scenario="proxyshare-counter",
            mechanism="proxyshare (served)",
            submit_argument=fact,
            created_after_pool_start=fact,
            other_machine=fact,
            lock_release_on_holder_death=fact,
        )
    ]
    report.skipped = {"redis": "no Redis server reachable"}
    report.targets = compute_targets(report)
    assert BenchReport.model_validate_json(report.model_dump_json()) == report


def test_render_draws_every_table() -> None:
    from rich.console import Console

    report = _report([("initializer", 1.5), ("initializer-nolock", 0.5)])
    report.measurements[1].observed = 7
    report.measurements[1].lost_updates = 3
    report.measurements[1].correct = False
    report.skipped = {"redis": "no Redis server reachable"}
    report.targets = compute_targets(report)
    console = Console(file=io.StringIO(), width=160)
    for renderable in render(report):
        console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "initializer-nolock" in text and "racy" in text
    assert "skipped redis: no Redis server reachable" in text


def _printed(report: BenchReport, verbose: bool = False, width: int = 120) -> list[str]:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width)
    for renderable in render(report, verbose=verbose):
        console.print(renderable)
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


# 50, plus the TLS pair: two rows, its target, and its connection costs' note line
# (the synthetic report has the target but not the rows).
SCREEN_LINES = 54


def test_the_default_output_fits_one_screen_at_120_columns() -> None:
    lines = _printed(synthetic_report(TYPICAL, load=1.8))
    assert len(lines) <= SCREEN_LINES, "\n".join(lines)
    assert max(len(line) for line in lines) <= 120
    text = "\n".join(lines)
    for part in ("proxyshare-counter", "what the cost buys", "targets at 2 workers", "verdict:"):
        assert part in text
    assert "too noisy" in text


def test_the_details_of_what_the_cost_buys_are_verbose_only() -> None:
    report = synthetic_report(TYPICAL)
    quiet, verbose = "\n".join(_printed(report)), "\n".join(_printed(report, verbose=True))
    detail = "stdlib SyncManager · lock freed if holder dies: failed when tried"
    assert detail not in quiet
    assert detail in verbose
    assert "checked: tried by the bench in this run" in verbose


def test_no_output_carries_tracker_numbers() -> None:
    report = synthetic_report(TYPICAL)
    for verbose in (False, True):
        for line in _printed(report, verbose=verbose):
            assert not re.search(r"#\d", line), line


@pytest.mark.timeout(60)
def test_a_real_run_in_process_round_trips() -> None:
    config = BenchConfig(
        ops=50, scenarios=["initializer", "proxyshare-counter"], quick=True, probes=False
    )
    report = run_bench(config)
    assert [m.scenario for m in report.measurements] == ["initializer", "proxyshare-counter"]
    assert all(m.correct for m in report.measurements)
    assert report.finished is not None and report.finished >= report.started
    assert BenchReport.model_validate_json(report.model_dump_json()) == report


def test_worker_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, proxyshare._bench.workers\n"
        "heavy = [m for m in ('pydantic', 'rich', 'matplotlib', 'redis') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == ""


def _fail_in_setup(ops: int) -> None:
    raise RuntimeError("set-up failed on purpose")


@pytest.mark.timeout(60)
def test_a_failing_scenario_is_reported_and_the_next_one_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # fork: the pool's workers inherit the patched table of worker bodies.
    monkeypatch.setitem(W.BODIES, "fail", _fail_in_setup)
    monkeypatch.setitem(S._PREPARE, "proxyshare-dict", lambda *a: S.Prepared("fail", (), 2, None))
    config = BenchConfig(
        ops=50,
        scenarios=["proxyshare-dict", "proxyshare-counter"],
        quick=True,
        probes=False,
        start_method="fork",
    )
    report = run_bench(config)
    assert "set-up failed on purpose" in report.failed["proxyshare-dict"]
    counter = report.measurement("proxyshare-counter")
    assert counter is not None and counter.correct


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://user:s3cret@db:6380", "rediss://user:***@db:6380"),
    ],
)
def test_redis_passwords_never_reach_the_report(url: str, shown: str) -> None:
    assert S.redacted_url(url) == shown


@pytest.mark.timeout(60)
def test_unreachable_redis_with_a_password_is_reported_without_it() -> None:
    url = "redis://:s3cret@127.0.0.1:1/0"
    config = BenchConfig(ops=20, scenarios=["redis"], redis_url=url, quick=True, probes=False)
    report = run_bench(config)
    assert "s3cret" not in report.model_dump_json()
    assert "127.0.0.1:1" in report.skipped["redis"]


@pytest.mark.parametrize(
    ("mechanism", "unit", "family"),
    [
        ("multiprocessing (initializer)", "increment", "same-host"),
        ("proxyshare (shared memory)", "increment", "same-host"),
        ("proxyshare (served)", "increment", "served"),
        ("proxyshare (asyncio)", "increment", "served"),
        ("proxyshare (TLS)", "increment", "served"),
        ("proxyshare (served, durable)", "increment", "served"),
        ("proxyshare adder (shared memory)", "increment", "same-host"),
        ("stdlib SyncManager", "increment", "stdlib"),
        ("proxyshare (Redis backend)", "increment", "redis"),
        ("transport floor", "round trip", "floor"),
        ("proxyshare (served)", "item", "queue"),
        ("a way nobody has heard of", "increment", "other"),
    ],
)
def test_a_scenarios_family_follows_from_its_mechanism(
    mechanism: str, unit: str, family: str
) -> None:
    spec = S.ScenarioSpec("new-scenario", "what it does", mechanism, unit=unit)
    assert spec.family == family
    assert family in S.FAMILIES


def test_an_explicit_family_wins_and_every_scenario_has_one() -> None:
    spec = S.ScenarioSpec("x", "y", "proxyshare (served)", family="same-host")
    assert spec.family == "same-host"
    assert all(spec.family in S.FAMILIES for spec in SCENARIOS.values())
    assert SCENARIOS["basemanager-floor"].family == "floor"


def test_the_asyncio_targets_speak_of_one_process_and_its_proxies_are_not_passed() -> None:
    costs = {"initializer": 2.0, "proxyshare-counter": 120.0, "aio-1": 150.0, "aio-64": 12.0}
    report = synthetic_report(costs, workers=1)
    targets = {t.name: t for t in report.targets}
    speedup, overhead = targets["aio-64-vs-sync"], targets["aio-overhead-us"]
    assert speedup.measured == pytest.approx(10.0) and speedup.met is True
    assert overhead.measured == pytest.approx(30.0) and overhead.met is False
    assert "at 1 worker(s)" in speedup.detail
    assert report.verdict is not None
    # aio-64 is the cheapest, but an asyncio proxy is no submit() argument.
    assert report.verdict.cheapest_passable == "proxyshare-counter"
    lines = "\n".join(_printed(report))
    assert "proxyshare (served): aio-1, aio-64" in lines  # its own line of facts
    assert "aio-64-vs-sync" not in {t.name for t in synthetic_report(TYPICAL).targets}
