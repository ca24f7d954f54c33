"""The asyncio client is on the client path: light to import, no server inside."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import proxyshare
from tests.support import cli_env, heavy_modules_after

pytestmark = pytest.mark.timeout(60)


def test_from_proxyshare_import_aio_works_and_is_lazy() -> None:
    code = (
        "import sys, proxyshare\n"
        "assert 'proxyshare.aio' not in sys.modules\n"
        "from proxyshare import aio\n"
        "assert proxyshare.aio is aio and 'connect' in aio.__all__\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_client_using_aio_loads_no_server_and_nothing_heavy(
    manager: proxyshare.ShareManager, tmp_path: Path
) -> None:
    code = (
        "import asyncio\n"
        "from proxyshare import aio\n"
        "async def main():\n"
        "    async with aio.connect() as mgr:\n"
        "        await (await mgr.counter('c')).increment()\n"
        "        async with await mgr.lock('l'):\n"
        "            pass\n"
        "asyncio.run(main())\n"
    )
    assert heavy_modules_after(manager, tmp_path, code) == "[]"
    assert manager.counter("c").get() == 1


def test_aio_all_lists_exactly_its_public_names() -> None:
    from proxyshare import aio

    public = {n for n in dir(aio) if not n.startswith("_")} - {"annotations"}
    assert public == set(aio.__all__)
    assert aio.__all__ == sorted(aio.__all__)
    for name in aio.__all__:
        assert getattr(aio, name) is not None, name
