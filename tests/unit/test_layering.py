"""The layering holds: the import-linter contracts, and what a client really loads."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import proxyshare
from proxyshare._keys import write_key_file
from tests.support import ROOT, cli_env

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
        "loaded = [m for m in sys.modules if m.split('.')[0] in\n"
        "          ('pydantic', 'rich', 'matplotlib', 'redis')\n"
        "          or m.split('.')[:2] in (['proxyshare', '_server'], ['proxyshare', '_cli'],\n"
        "                                  ['proxyshare', '_bench'])]\n"
        "print(sorted(loaded))\n"
    )
    ref = manager.server_ref
    key_file = write_key_file(tmp_path / "key", ref.authkey)
    env = cli_env(
        {"PROXYSHARE_ADDRESS": f"unix:{ref.address}", "PROXYSHARE_AUTHKEY_FILE": str(key_file)}
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(proxies),
        capture_output=True,
        timeout=60,
        env=env,
        cwd=os.path.dirname(ROOT),
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "[]"
    assert manager.counter("c").get() == 1
