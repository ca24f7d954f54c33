"""Two uvicorn workers share one rate limit, exact counters and a lock (``webapp.py``).

Starts a proxyshare server, then ``uvicorn examples.webapp:app --workers 2``
with the server's address and key in its environment, then sends a burst of
concurrent requests with httpx: exactly the limit gets through whichever
worker serves them, every request is counted once, and the lock hands out
order numbers with no gap and no duplicate.  Stops everything it started.

Needs uvicorn and httpx (``pip install 'proxyshare[test]'``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import proxyshare

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "600"))
WORKERS = 2
ROOT = Path(__file__).resolve().parent.parent  # so that examples.webapp imports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def burst(
    base: str, web: subprocess.Popen[bytes], requests: int, orders: int
) -> tuple[Counter[int], list[int], dict]:
    import httpx

    # A new connection per request, so the kernel spreads them over the workers.
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        deadline = time.monotonic() + 60
        while True:  # until every worker has started (each counts itself in)
            try:
                if (await client.get("/stats")).json()["workers"] == WORKERS:
                    break
            except httpx.TransportError:
                pass
            if web.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {web.returncode} (see above)")
            if time.monotonic() > deadline:
                raise RuntimeError("the web workers did not start within 60 s")
            await asyncio.sleep(0.1)
        gets = [client.get("/") for _ in range(requests)]
        posts = [client.post("/orders") for _ in range(orders)]
        replies = await asyncio.gather(*gets, *posts)
        statuses = Counter(r.status_code for r in replies[:requests])
        numbers = sorted(r.json()["order"] for r in replies[requests:])
        stats = (await client.get("/stats")).json()
    return statuses, numbers, stats


def main() -> None:
    if not all(importlib.util.find_spec(m) for m in ("uvicorn", "httpx")):
        print("result: skipped, needs uvicorn and httpx (pip install 'proxyshare[test]')")
        return
    requests, limit, orders = N, N // 3, N // 3
    key = secrets.token_hex(16)
    with proxyshare.ShareManager(authkey=key.encode()) as mgr:
        port = free_port()
        env = {
            **os.environ,
            "PROXYSHARE_ADDRESS": f"unix:{mgr.server_ref.address}",
            "PROXYSHARE_AUTHKEY": key,
            "EXAMPLE_RATE_LIMIT": str(limit),
            "EXAMPLE_RATE_WINDOW": "1e9",  # one window for the whole run: the limit is exact
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "uvicorn", "examples.webapp:app"]
        command += ["--workers", str(WORKERS), "--port", str(port), "--log-level", "warning"]
        web = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            statuses, numbers, stats = asyncio.run(burst(base, web, requests, orders))
        finally:
            os.killpg(web.pid, signal.SIGTERM)  # uvicorn and its workers
            try:
                web.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(web.pid, signal.SIGKILL)
                web.wait(10)
    counted = stats["requests"]
    exact = (
        counted.get("GET / 200", 0) == statuses[200] == limit
        and counted.get("GET / 429", 0) == statuses[429] == requests - limit
        and counted.get("POST /orders 200", 0) == orders
    )
    print(f"served by {len(stats['served_by'])} worker processes: {stats['served_by']}")
    print(
        f"result: {WORKERS} workers, {statuses[200]}/{requests} allowed (limit {limit}), "
        f"orders 1..{orders} {'unique' if numbers == list(range(1, orders + 1)) else 'WRONG'}, "
        f"counts {'exact' if exact else 'WRONG'}"
    )


if __name__ == "__main__":
    main()
