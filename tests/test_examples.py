"""Every script in ``examples/`` runs, exits 0 and prints the result it promises.

Each example is run as a user would run it (``python examples/NN_name.py``)
with a small count in ``PROXYSHARE_EXAMPLE_N`` so the whole folder takes
seconds.  The folder is globbed, so a new example is run as soon as it is
added; examples listed in ``RESULT_LINES`` must also print their result line.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, cli_env

EXAMPLES = sorted((ROOT / "examples").glob("[0-9]*.py"))
N = 300  # increments per worker: enough to exercise every path, small enough for CI
TIMEOUT = 150  # seconds per example (a Dask cluster start is the slowest part)


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


# The line each example prints last, as a regex over the count N.
LOCKED_AND_RACY = rf"result: with lock {2 * N}/{2 * N} correct; without lock lost \d+"
RESULT_LINES: dict[str, str] = {
    "01_thread_counter.py": rf"result: with lock {2 * N}/{2 * N} correct",
    "02_value_fails_silently.py": (
        r"result: stdlib failed silently=True, proxyshare raised UnshareableArgumentError at submit"
    ),
    "03_initializer_sharing.py": LOCKED_AND_RACY,
    "04_stdlib_manager.py": LOCKED_AND_RACY,
    "05_proxyshare_counter.py": (
        rf"result: counter {2 * N}/{2 * N}, lock\+dict {2 * N}/{2 * N} correct"
    ),
    "06_remote_server.py": rf"result: remote counter {4 * N}/{4 * N} in \d+ ms, correct",
    "07_dask_and_loky.py": (
        rf"result: 2 executors, counter {4 * N}/{4 * N} correct"
        if _installed("loky", "distributed")
        else r"result: [01] executors, counter (\d+)/\1 correct"
    ),
    "08_compare.py": (
        r"result: 7 measurements, missing none, locked scenarios losing updates: none"
    ),
    "09_queue_progress.py": r"OK: \d+ tasks on \d+ workers, \d+ progress messages",
    "10_semaphore_limit.py": r"OK: at most \d+ inside at once \(limit \d+\), \d+ free",
    "11_web_workers.py": (
        rf"result: 2 workers, {N // 3}/{N} allowed \(limit {N // 3}\), "
        rf"orders 1..{N // 3} unique, counts exact"
        if _installed("uvicorn", "httpx")
        else r"result: skipped, needs uvicorn and httpx .*"
    ),
}


def test_examples_folder_holds_the_narrative() -> None:
    names = {path.name for path in EXAMPLES}
    assert set(RESULT_LINES) <= names


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs_and_prints_its_result(example: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(example)],
        cwd=ROOT,
        env=cli_env({"PROXYSHARE_EXAMPLE_N": str(N)}),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    output = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, output
    lines = proc.stdout.strip().splitlines()
    assert lines, output
    expected = RESULT_LINES.get(example.name)
    if expected is not None:
        assert re.fullmatch(expected, lines[-1]), output
