"""Measure a state dir after many increments: its size, and how long a restart takes.

    python tools/durable_restart.py [--increments 1000000] [--clients 2] [--fsync everysec]

Starts ``proxyshare serve --state-dir`` on a fresh directory, has CLIENTS
processes make INCREMENTS counter increments in all, then

1. SIGKILLs the server and restarts it (recovery: the snapshot, then the log tail),
2. stops it with SIGTERM and restarts it (a clean stop),

and prints, at each point, the state dir's files (apparent size and blocks
on disk) and the time from starting ``serve`` to its "listening" line, next
to the server's own account of the restore (``status``).  Run it from a
checkout; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "durable-restart-measurement"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(state: Path, port: int, fsync: str) -> tuple[subprocess.Popen[str], float]:
    """``serve`` on ``state``; returns the process and the seconds until it listened."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXYSHARE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PROXYSHARE_AUTHKEY"] = KEY
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxyshare", "serve", "--address", f"127.0.0.1:{port}",
         "--state-dir", str(state), "--fsync", fsync],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            return proc, time.perf_counter() - began
    raise SystemExit(f"serve exited with {proc.wait()}")


def files(state: Path) -> str:
    rows = []
    for path in sorted(state.iterdir()):
        info = path.stat()
        rows.append(f"{path.name} {info.st_size:,} B ({info.st_blocks * 512:,} B on disk)")
    total = sum(p.stat().st_size for p in state.iterdir())
    disk = sum(p.stat().st_blocks * 512 for p in state.iterdir())
    return f"{total:,} B apparent, {disk:,} B on disk: " + "; ".join(rows)


def increment(port: int, n: int) -> None:
    import proxyshare

    counter = proxyshare.connect(f"127.0.0.1:{port}", authkey=KEY).counter("hits")
    for _ in range(n):
        counter.increment()


def restored(port: int) -> dict[str, Any]:
    import proxyshare
    from proxyshare._client import close_all_channels

    mgr = proxyshare.connect(f"127.0.0.1:{port}", authkey=KEY)
    status = mgr.status()
    value = mgr.counter("hits").get()
    close_all_channels()
    return {"value": value, **status["server"]["state"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--increments", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--fsync", default="everysec", choices=["always", "everysec", "no"])
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="proxyshare-measure-")) / "state"
    port = free_port()
    server, seconds = start(state, port, args.fsync)
    print(f"fresh start: {seconds * 1e3:.0f} ms to listening")
    each = args.increments // args.clients
    began = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=increment, args=(port, each)) for _ in range(args.clients)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - began
    total = each * args.clients
    print(
        f"{total:,} increments by {args.clients} clients in {elapsed:.1f} s "
        f"({elapsed / total * 1e6 * args.clients:.1f} µs per increment per client)"
    )
    before = restored(port)
    print(f"before the kill: {before['compactions']} compactions, generation "
          f"{before['generation']}, log {before['log_bytes']:,} B in use")  # fmt: skip
    print(f"state dir: {files(state)}")

    server.send_signal(signal.SIGKILL)
    server.wait()
    server, seconds = start(state, port, args.fsync)
    after = restored(port)
    report = after["restored"]
    print(
        f"after SIGKILL: {seconds * 1e3:.0f} ms from start to listening; the server restored "
        f"{report['records']:,} log records in {report['seconds'] * 1e3:.0f} ms; "
        f"value {after['value']:,} (expected {total:,})"
    )
    print(f"state dir: {files(state)}")

    server.send_signal(signal.SIGTERM)
    server.wait()
    server, seconds = start(state, port, args.fsync)
    again = restored(port)
    report = again["restored"]
    print(
        f"after SIGTERM: {seconds * 1e3:.0f} ms from start to listening; the server restored "
        f"{report['records']:,} log records in {report['seconds'] * 1e3:.0f} ms; "
        f"value {again['value']:,}"
    )
    print(f"state dir: {files(state)}")
    server.send_signal(signal.SIGTERM)
    server.wait()


if __name__ == "__main__":
    main()
