"""``proxyshare bench --scenarios tls``: the TLS counter against plain TCP, in one run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxyshare._bench.report import BenchReport
from proxyshare._bench.targets import compute_targets
from tests.bench_reports import synthetic_report
from tests.support import run_cli

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_tls_counter_is_measured_beside_plain_tcp_with_each_connection_cost(
    tmp_path: Path, method: str
) -> None:
    path = tmp_path / "tls.json"
    result = run_cli(
        "bench",
        "--quick",
        "--scenarios",
        "tls",
        "--start-method",
        method,
        "--json",
        str(path),
        timeout=170,
    )
    assert result.returncode == 0, result.stderr
    report = BenchReport.model_validate_json(path.read_text())
    got = {m.scenario: m for m in report.measurements}
    assert set(got) == {"proxyshare-tcp", "proxyshare-tls"}, report.skipped
    for m in got.values():
        assert m.correct and m.family == "served"
        assert m.connect_us is not None and m.connect_us > 0
    target = next(t for t in report.targets if t.name == "tls-vs-tcp")
    assert target.measured is not None and "a new connection" in target.detail
    assert "a new connection: proxyshare-tcp" in result.stdout
    assert json.loads(path.read_text())["schema_version"] == 3


def test_the_tls_target_says_how_to_measure_it_when_a_side_is_missing() -> None:
    report = synthetic_report({"initializer": 1.0, "proxyshare-tls": 20.0})
    target = next(t for t in compute_targets(report) if t.name == "tls-vs-tcp")
    assert target.measured is None and "--scenarios tls" in target.detail
