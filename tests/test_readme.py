"""The README's promises that can be checked: set-up commands, quick start, names.

The two set-up commands must be the ones CI runs, the quick start must run
as printed, and every public name must be documented.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import proxyshare

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAIN_JOB = "pip install -e . && proxyshare bench"
RUN_TESTS = "pip install -e '.[test]' && python -m pytest"


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _setup_commands() -> list[str]:
    """The commands in the code blocks above the first section heading."""
    top = README.split("\n## ", 1)[0]
    return [line for block in _code_blocks(top, "bash") for line in block.splitlines() if line]


def _quick_start() -> str:
    section = README.split("<!-- quick-start", 1)[1]
    return _code_blocks(section, "python")[0]


def test_readme_starts_with_exactly_the_two_setup_commands() -> None:
    assert _setup_commands() == [MAIN_JOB, RUN_TESTS]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in ci_lines if line and not line.startswith("#")]
    assert RUN_TESTS in commands


def test_main_job_command_exists() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^proxyshare = "proxyshare\._cli:main"$', pyproject, flags=re.MULTILINE)
    from proxyshare._cli import build_parser

    assert build_parser().parse_args(["bench"]).command == "bench"


def test_quick_start_is_short() -> None:
    code_lines = [line for line in _quick_start().splitlines() if line.strip()]
    assert len(code_lines) <= 12


@pytest.mark.timeout(120)
def test_quick_start_runs_and_prints_the_total(tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(_quick_start(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYSHARE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "40000", proc.stdout


@pytest.mark.parametrize("name", sorted(proxyshare.__all__))
def test_every_public_name_is_in_the_readme(name: str) -> None:
    assert re.search(rf"`{re.escape(name)}[`(.]", README), f"{name} is not documented"


@pytest.mark.parametrize(
    "variable",
    [
        "PROXYSHARE_ADDRESS",
        "PROXYSHARE_AUTHKEY",
        "PROXYSHARE_AUTHKEY_FILE",
        "PROXYSHARE_SHM_DIR",
        "PROXYSHARE_SPIN_US",
    ],
)
def test_configuration_variables_are_documented(variable: str) -> None:
    assert f"`{variable}`" in README


def test_readme_has_the_bench_table_marker() -> None:
    assert "<!-- bench-table -->" in README


def test_the_bench_picture_is_in_the_readme_at_its_width() -> None:
    assert "](docs/bench.png)" in README
    png = (ROOT / "docs" / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(png[16:20], "big")  # the IHDR chunk's first field
    assert width == 800
