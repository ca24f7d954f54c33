"""State shared by the worker processes of a real web server (``examples/webapp.py``).

A real uvicorn with 2 workers (server started by ``proxyshare serve``) and a
real gunicorn with 2 uvicorn workers (server started in its master by
``examples/gunicorn_conf.py``) take hundreds of concurrent requests from
httpx, one connection each so the kernel spreads them over the workers.  The
global rate limit holds exactly, every request is counted once, and the
lock-protected section hands out order numbers with no gap and no duplicate.
Every process started here is stopped in a ``finally`` (its process group).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.serving import serve
from tests.support import ROOT, cli_env, free_port

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("uvicorn", "httpx")),
        reason="needs uvicorn and httpx (the test extra)",
    ),
]

WORKERS = 2
REQUESTS = 300
LIMIT = 120
ORDERS = 100
START_TIMEOUT = 90.0


@contextlib.contextmanager
def web_server(command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """Start a web server in a process group of its own; kill the whole group after."""
    proc = subprocess.Popen(
        command,
        env=cli_env(env),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the master stops its workers (and server)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any worker left behind
        if proc.stdout is not None:
            proc.stdout.close()


def _output(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None or proc.stdout is None:
        return ""
    return proc.stdout.read()


async def _hammer(port: int, proc: subprocess.Popen[str]) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    # Requests queue for one of the 64 connections as long as they must (pool=None):
    # what is checked is correctness, and a busy machine is slow.
    timeout = httpx.Timeout(120, pool=None)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=timeout
    ) as client:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # every worker has run its lifespan startup (and counted itself)
            try:
                if (await client.get("/stats")).json()["workers"] == WORKERS:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, f"the web server exited:\n{_output(proc)}"
            assert time.monotonic() < deadline, "the web workers did not start in time"
            await asyncio.sleep(0.1)
        gets = [client.get("/") for _ in range(REQUESTS)]
        posts = [client.post("/orders") for _ in range(ORDERS)]
        replies = await asyncio.gather(*gets, *posts)
        stats = (await client.get("/stats")).json()
    return {
        "statuses": Counter(r.status_code for r in replies[:REQUESTS]),
        "orders": sorted(r.json()["order"] for r in replies[REQUESTS:]),
        "workers_seen": {r.json()["worker"] for r in replies},
        "stats": stats,
    }


def _check(result: dict[str, Any]) -> None:
    statuses, stats = result["statuses"], result["stats"]
    assert statuses == {200: LIMIT, 429: REQUESTS - LIMIT}  # the limit holds exactly
    assert result["orders"] == list(range(1, ORDERS + 1))  # no gap, no duplicate
    assert stats["last_order"] == ORDERS
    assert stats["requests"] == {  # every request counted once, whichever worker
        "GET / 200": LIMIT,
        "GET / 429": REQUESTS - LIMIT,
        "POST /orders 200": ORDERS,
    }
    assert sum(stats["served_by"].values()) == REQUESTS + ORDERS
    assert len(result["workers_seen"]) == WORKERS  # both workers took part
    assert {int(pid) for pid in stats["served_by"]} == result["workers_seen"]


APP_ENV = {"EXAMPLE_RATE_LIMIT": str(LIMIT), "EXAMPLE_RATE_WINDOW": "1e9"}


def test_uvicorn_workers_share_the_limit_the_counts_and_the_lock(tmp_path: Path) -> None:
    with serve("--address", f"unix:{tmp_path / 'ps.sock'}") as server:
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "examples.webapp:app"]
        command += ["--workers", str(WORKERS), "--port", str(port), "--log-level", "warning"]
        with web_server(command, {**server.env(), **APP_ENV}) as proc:
            result = asyncio.run(_hammer(port, proc))
    _check(result)


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("gunicorn", "uvicorn_worker")),
    reason="needs gunicorn and uvicorn-worker (the test extra)",
)
def test_gunicorn_workers_share_state_with_the_server_its_master_started() -> None:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "examples.webapp:app"]
    command += ["-c", "examples/gunicorn_conf.py", "-k", "uvicorn_worker.UvicornWorker"]
    command += ["-w", str(WORKERS), "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    with web_server(command, APP_ENV) as proc:  # no PROXYSHARE_ADDRESS: the master serves
        result = asyncio.run(_hammer(port, proc))
    _check(result)
