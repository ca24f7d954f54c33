"""tools/flake_hunt.py on a tiny suite of its own: what it reports, and that it cannot hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

TOOL = ROOT / "tools" / "flake_hunt.py"

SUITE = """
import os, subprocess, sys, time

def test_passes():
    pass

def test_fails():
    assert 1 == 2, "always wrong"

def test_hangs_when_asked():
    if os.environ.get("HUNT_MODE") == "hang":
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        time.sleep(300)

def test_leaves_a_process_when_asked():
    if os.environ.get("HUNT_MODE") == "leak":  # in a session of its own: out of the group
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                         start_new_session=True)
"""


def _hunt(tmp_path: Path, *args: str, mode: str = "") -> tuple[int, dict[str, Any], str]:
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "test_tiny.py").write_text(SUITE)
    out = tmp_path / "out"
    # The hunt's own pytest runs must not inherit this run's options (coverage).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["HUNT_MODE"] = mode
    result = subprocess.run(
        [sys.executable, str(TOOL), "--root", str(tmp_path / "suite"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return result.returncode, json.loads((out / "summary.json").read_text()), result.stdout


def _failed(summary: dict[str, Any]) -> dict[str, tuple[int, int, str]]:
    return {
        t["nodeid"]: (t["failures"], t["runs"], t["first_message"]) for t in summary["failed_tests"]
    }


@pytest.mark.timeout(120)
def test_every_test_that_failed_is_reported_with_its_count_and_first_message(
    tmp_path: Path,
) -> None:
    code, summary, stdout = _hunt(
        tmp_path, "test_tiny.py", "--runs", "1", "--stress-runs", "1", "--stress-procs", "1",
        "--start-methods", "spawn",
    )  # fmt: skip
    assert code == 1
    assert summary["runs"] == 2 and summary["test_executions"] == 8
    failures, runs, message = _failed(summary)["test_tiny.py::test_fails"]
    assert (failures, runs) == (2, 2)
    assert "always wrong" in message
    assert list(_failed(summary)) == ["test_tiny.py::test_fails"]
    configs = [(c["start_method"], c["stress"], c["runs"]) for c in summary["by_configuration"]]
    assert configs == [("spawn", False, 1), ("spawn", True, 1)]
    assert "test_tiny.py::test_fails  2/2" in stdout


@pytest.mark.timeout(120)
def test_a_run_that_hangs_is_killed_with_what_it_started_and_names_its_test(
    tmp_path: Path,
) -> None:
    code, summary, _ = _hunt(
        tmp_path, "test_tiny.py", "--runs", "1", "--timeout", "8", "--", "-k", "hangs", mode="hang"
    )
    assert code == 1
    failed = _failed(summary)
    assert failed["test_tiny.py::test_hangs_when_asked"][2].startswith("[run killed] timed out")
    (run,) = summary["run_details"]
    assert run["exit_code"] is None and run["problems"][0] == "timed out after 8 s"
    # The sleeper it started was in the killed process group: nothing is left over.
    assert not any("left" in problem for problem in run["problems"])


@pytest.mark.timeout(120)
def test_a_process_a_run_leaves_behind_is_reported_and_killed(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("orphans are adopted (child subreaper) on Linux only")
    code, summary, _ = _hunt(tmp_path, "test_tiny.py", "--runs", "1", "--", "-k", "leaves",
                             mode="leak")  # fmt: skip
    assert code == 1
    (run,) = summary["run_details"]
    assert run["failed"] == [] and run["exit_code"] == 0
    (problem,) = run["problems"]
    assert problem.startswith("left 1 process(es) running") and "time.sleep(300)" in problem
    pid = int(problem.split("pid ")[1].split(":")[0])
    assert not Path(f"/proc/{pid}").exists()  # killed and reaped by the hunt
