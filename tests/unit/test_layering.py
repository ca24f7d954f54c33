"""The layering holds: the import-linter contracts, and what a client really loads."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import proxyshare
from tests.support import ROOT, cli_env, heavy_modules_after

pytestmark = pytest.mark.timeout(120)


def test_the_import_linter_contracts_are_kept() -> None:
    """pyproject.toml's [tool.importlinter] contracts (also run by .ci/run)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; "
            "sys.exit(lint_imports_command())",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=cli_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_a_client_that_connects_and_unpickles_proxies_loads_no_server_and_nothing_heavy(
    manager: proxyshare.ShareManager, tmp_path: Path
) -> None:
    proxies = [
        manager.counter("c"),
        manager.lock("l"),
        manager.dict("d"),
        manager.queue("q"),
        manager.semaphore("s"),
        manager.event("e"),
        manager.barrier("b", 2),
        manager.counter("sc", shared_memory=True),
        manager.lock("sl", shared_memory=True),
    ]
    code = (
        "import pickle, sys\n"
        "import proxyshare\n"
        "client = proxyshare.connect()\n"
        "proxies = pickle.loads(sys.stdin.buffer.read())\n"
        "proxies[0].increment(); proxies[7].increment(); client.names()\n"
    )
    assert heavy_modules_after(manager, tmp_path, code, stdin=pickle.dumps(proxies)) == "[]"
    assert manager.counter("c").get() == 1
