"""``proxyshare bench`` end to end, as a user runs it (in a subprocess).

One quick run is shared by most tests (module fixture); timings are never
asserted, only what the report says about correctness and what it contains.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxyshare._bench.report import SCENARIOS, BenchReport
from tests.bench_reports import TYPICAL, synthetic_report
from tests.support import run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
# Scenarios that need something this package does not bring along.
EXTERNAL = {
    "redis",
    "proxyshare-redis",
    "proxyshare-shm",
    "proxyshare-shm-lock",
    "proxyshare-adder",
    "proxyshare-tls",
}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench")
    result = run_cli(
        "bench",
        "--quick",
        "--json",
        str(out / "report.json"),
        "--plot",
        str(out / "plot.png"),
        "--redis",
        UNREACHABLE_REDIS,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr
    text = (out / "report.json").read_text()
    return {
        "result": result,
        "report": BenchReport.model_validate_json(text),
        "json": json.loads(text),
        "plot": out / "plot.png",
    }


def test_quick_bench_prints_the_results_table(quick_run: dict[str, Any]) -> None:
    stdout = quick_run["result"].stdout
    assert "proxyshare-counter" in stdout
    assert "what the cost buys" in stdout
    assert "targets" in stdout
    assert "verdict: " in stdout


def test_the_verdict_is_printed_and_kept_in_the_json_report(quick_run: dict[str, Any]) -> None:
    report: BenchReport = quick_run["report"]
    assert report.schema_version == 3
    assert report.verdict is not None
    assert report.verdict.sentences[0].startswith("On this machine, at 2 workers, a served counter")
    assert report.verdict.cheapest_passable is not None
    stdout = " ".join(quick_run["result"].stdout.split())  # undo the line wrapping
    for sentence in report.verdict.sentences:
        assert " ".join(sentence.split()) in stdout


def test_the_details_of_each_fact_wait_for_verbose_and_json(quick_run: dict[str, Any]) -> None:
    assert "the worker used it" not in quick_run["result"].stdout
    details = [row["submit_argument"]["detail"] for row in quick_run["json"]["capabilities"]]
    assert any("the worker used it" in detail for detail in details)


def test_report_has_every_default_scenario_measured_or_skipped_with_a_reason(
    quick_run: dict[str, Any],
) -> None:
    report: BenchReport = quick_run["report"]
    measured = {m.scenario for m in report.measurements}
    for name, spec in SCENARIOS.items():
        if not spec.default:
            assert name not in measured
        elif name in EXTERNAL:
            assert name in measured or report.skipped.get(name), name
        else:
            assert name in measured, report.skipped.get(name) or report.failed.get(name)
    assert report.failed == {}


def test_locked_scenarios_lose_no_updates(quick_run: dict[str, Any]) -> None:
    report: BenchReport = quick_run["report"]
    for m in report.measurements:
        if not m.racy:
            assert m.correct and m.lost_updates == 0, m.scenario
            assert m.observed == m.expected == m.workers * m.ops_per_worker


def test_racy_scenarios_are_flagged_with_their_lost_count(quick_run: dict[str, Any]) -> None:
    report: BenchReport = quick_run["report"]
    racy = {m.scenario: m for m in report.measurements if m.racy}
    assert set(racy) == {"initializer-nolock", "syncmanager-nolock"}
    for m in racy.values():
        assert m.lost_updates == m.expected - m.observed >= 0
        assert m.correct == (m.lost_updates == 0)


def test_unreachable_redis_is_skipped_with_a_reason(quick_run: dict[str, Any]) -> None:
    report: BenchReport = quick_run["report"]
    reason = report.skipped["redis"]
    assert "127.0.0.1:1" in reason and "\n" not in reason
    assert "proxyshare-redis" in report.skipped
    assert "skipped redis:" in quick_run["result"].stdout


def test_plot_is_a_png(quick_run: dict[str, Any]) -> None:
    assert quick_run["plot"].read_bytes()[:8] == PNG_SIGNATURE


def test_capabilities_come_from_checks_the_bench_ran(quick_run: dict[str, Any]) -> None:
    rows = {row.scenario: row for row in quick_run["report"].capabilities}
    value = rows["initializer"].submit_argument
    assert (value.works, value.basis) == (False, "checked")
    assert "inheritance" in value.detail  # the stdlib's own error message
    served = rows["proxyshare-counter"]
    for fact in (served.submit_argument, served.created_after_pool_start, served.other_machine):
        assert (fact.works, fact.basis) == (True, "checked")
    assert (
        served.lock_release_on_holder_death.works,
        served.lock_release_on_holder_death.basis,
    ) == (
        True,
        "checked",
    )
    stdlib_lock = rows["syncmanager"].lock_release_on_holder_death
    assert (stdlib_lock.works, stdlib_lock.basis) == (False, "checked")
    assert "floor" not in rows


def test_targets_are_in_the_report(quick_run: dict[str, Any]) -> None:
    targets = {t["name"]: t for t in quick_run["json"]["targets"]}
    assert targets["counter-vs-syncmanager"]["measured"] is not None
    # Every served-vs-stdlib target is measured by the default run (met or not is
    # the machine's business: speed is reported, not asserted).
    for name in ("counter-vs-basemanager", "counter-vs-basemanager-0.7", "lock-vs-basemanager"):
        assert targets[name]["measured"] is not None, name
    assert targets["lock-round-trips"]["measured"] <= 4.0  # counted, not timed


@pytest.mark.parametrize(
    "options",
    [
        ["--workers", "0"],
        ["--workers", "two"],
        ["--ops", "-5"],
        ["--repeat", "1,2"],
        ["--scenarios", "no-such-scenario"],
        ["--start-method", "teleport"],
        ["--no-such-option"],
    ],
    ids=lambda options: " ".join(options),
)
def test_a_bad_option_exits_with_code_2(options: list[str]) -> None:
    result = run_cli("bench", *options, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "error" in result.stderr


def test_plot_without_matplotlib_fails_at_once_with_an_install_hint(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from proxyshare._cli import main\n"
        f"sys.exit(main(['bench', '--quick', '--plot', {str(tmp_path / 'p.png')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "proxyshare[plot]" in result.stderr
    assert "proxyshare-counter" not in result.stdout  # nothing ran


@pytest.mark.timeout(120)
def test_without_redis_py_the_bench_skips_redis_and_succeeds(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    code = (
        "import sys; sys.modules['redis'] = None\n"  # as on a fresh install
        "from proxyshare._cli import main\n"
        f"sys.exit(main(['bench', '--quick', '--json', {str(path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=110
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = BenchReport.model_validate_json(path.read_text())
    assert "redis-py is not installed" in report.skipped["redis"]
    assert not report.failed


def test_micro_mode_reports_primitives_against_the_floor(tmp_path: Path) -> None:
    path = tmp_path / "micro.json"
    result = run_cli(
        "bench", "--micro", "--quick", "--redis", UNREACHABLE_REDIS, "--json", str(path)
    )
    assert result.returncode == 0, result.stderr
    report = BenchReport.model_validate_json(path.read_text())
    names = {m.scenario: m for m in report.measurements}
    for name in (
        "floor",
        "counter.get()",
        "counter.increment()",
        "lock acquire+release",
        "dict set",
        "dict get",
    ):
        assert names[name].us_per_op > 0
        assert names[name].ratio_to_floor is not None
    assert names["floor"].ratio_to_floor == 1.0


def test_clients_and_a_spawn_pool(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    result = run_cli(
        "bench",
        "--quick",
        "--start-method",
        "spawn",
        "--scenarios",
        "initializer,proxyshare-counter,basemanager-floor",
        "--clients",
        "1,3",
        "--json",
        str(path),
    )
    assert result.returncode == 0, result.stderr
    report = BenchReport.model_validate_json(path.read_text())
    assert report.start_method == "spawn"
    got = {(m.scenario, m.workers): m for m in report.measurements}
    assert set(got) == {
        ("initializer", 2),
        ("proxyshare-counter", 2),
        ("basemanager-floor", 2),
        ("proxyshare-clients", 1),
        ("proxyshare-clients", 3),
    }
    assert all(m.correct for m in got.values())
    targets = {t.name: t for t in report.targets}
    assert targets["counter-vs-basemanager"].measured is not None


# -- --compare and --fail-over ------------------------------------------------------


def _planted_old_report(path: Path) -> Path:
    """A saved report in which the served counter was impossibly cheap: any run regresses."""
    old = synthetic_report(
        {"initializer": 1.0, "proxyshare-counter": 0.01, "basemanager-floor": 20.0}
    )
    path.write_text(old.model_dump_json(), encoding="utf-8")
    return path


@pytest.mark.timeout(120)
def test_compare_with_a_planted_regression_fails_over_the_threshold(tmp_path: Path) -> None:
    old = _planted_old_report(tmp_path / "old.json")
    result = run_cli(
        "bench",
        "--quick",
        "--scenarios",
        "initializer,proxyshare-counter,basemanager-floor",
        "--redis",
        UNREACHABLE_REDIS,
        "--compare",
        str(old),
        "--fail-over",
        "50",
        timeout=110,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr
    assert f"compared with {old}" in result.stdout
    assert "1 regression(s) beyond 50 %: proxyshare-counter × 2" in result.stdout


class _FakeRun:
    """Stands in for run_bench: returns a chosen report at once, and counts its calls."""

    def __init__(self, report: BenchReport) -> None:
        self.report = report
        self.calls = 0

    def __call__(self, config: Any, progress: Any = None) -> BenchReport:
        self.calls += 1
        return self.report


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> _FakeRun:
    from proxyshare._bench import run

    fake = _FakeRun(synthetic_report(TYPICAL))
    monkeypatch.setattr(run, "run_bench", fake)
    return fake


def _main(*args: str) -> int:
    from proxyshare._cli import main

    return main(["bench", *args])


def test_compare_without_fail_over_flags_but_exits_0(
    tmp_path: Path, fake_run: _FakeRun, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _planted_old_report(tmp_path / "old.json")
    assert _main("--compare", str(old)) == 0
    out = capsys.readouterr().out
    assert "1 regression(s) beyond 30 %: proxyshare-counter × 2" in out
    assert "worse" in out


def test_fail_over_with_no_regression_exits_0(
    tmp_path: Path, fake_run: _FakeRun, capsys: pytest.CaptureFixture[str]
) -> None:
    same = tmp_path / "same.json"
    same.write_text(fake_run.report.model_dump_json(), encoding="utf-8")
    assert _main("--compare", str(same), "--fail-over", "5") == 0
    assert "no regression beyond 5 %" in capsys.readouterr().out


def test_fail_over_with_a_regression_exits_1(tmp_path: Path, fake_run: _FakeRun) -> None:
    old = _planted_old_report(tmp_path / "old.json")
    assert _main("--compare", str(old), "--fail-over", "50") == 1


@pytest.mark.parametrize(
    ("setup", "said"),
    [
        ("future", "schema version 99, written by a newer proxyshare"),
        ("missing", "cannot read --compare"),
        ("garbage", "is not JSON"),
        ("micro", "is a micro report; this run measures scenarios"),
    ],
)
def test_an_unusable_old_report_is_refused_before_the_run(
    tmp_path: Path,
    fake_run: _FakeRun,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    said: str,
) -> None:
    path = tmp_path / "old.json"
    data = json.loads(synthetic_report(TYPICAL).model_dump_json())
    if setup == "future":
        data["schema_version"] = 99
    elif setup == "micro":
        data["mode"] = "micro"
    if setup == "garbage":
        path.write_text("{{{", encoding="utf-8")
    elif setup != "missing":
        path.write_text(json.dumps(data), encoding="utf-8")
    assert _main("--compare", str(path)) == 2
    assert said in capsys.readouterr().err
    assert fake_run.calls == 0


def test_fail_over_needs_compare(fake_run: _FakeRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main("--fail-over", "10") == 2
    assert "--fail-over needs --compare" in capsys.readouterr().err
    assert fake_run.calls == 0


@pytest.mark.parametrize("bad", ["-1", "ten", "nan"])
def test_fail_over_takes_a_percentage(bad: str) -> None:
    result = run_cli("bench", "--compare", "x.json", "--fail-over", bad, timeout=30)
    assert result.returncode == 2
    assert "expected a percentage" in result.stderr


def test_verbose_adds_the_details(fake_run: _FakeRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main() == 0
    quiet = capsys.readouterr().out
    assert _main("--verbose") == 0
    verbose = capsys.readouterr().out
    detail = "stdlib SyncManager · lock freed if holder dies"
    assert detail not in quiet and detail in verbose
