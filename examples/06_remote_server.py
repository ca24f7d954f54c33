"""Step 6: one server, separate programs -- ``proxyshare serve`` and ``status``.

The server need not live inside your program.  This script plays three roles:

1. it writes a random authkey to a key file (mode 0600) and starts
   ``python -m proxyshare serve --address 127.0.0.1:PORT --authkey-file FILE``
   in a subprocess, as you would start ``redis-server``;
2. it starts two *client programs* (this file again, with ``client``) that
   find the server through ``PROXYSHARE_ADDRESS`` / ``PROXYSHARE_AUTHKEY_FILE``
   and each run their own process pool on the one shared counter;
3. it holds a lock and runs ``python -m proxyshare status`` to show what the
   server holds and who holds the lock, then stops the server with SIGTERM.

Run:  python examples/06_remote_server.py
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import proxyshare

N = int(os.environ.get("PROXYSHARE_EXAMPLE_N", "10000"))
WORKERS = 2  # per client
CLIENTS = 2


def add(counter: proxyshare.Counter, n: int) -> int:
    for _ in range(n):
        counter.increment()
    return n


def client_main(name: str) -> None:
    """A client program: address and key come from the environment."""
    mgr = proxyshare.connect()  # reads PROXYSHARE_ADDRESS and PROXYSHARE_AUTHKEY_FILE
    hits = mgr.counter("hits")
    with proxyshare.ProcessPoolExecutor(WORKERS) as pool:
        added = sum(f.result() for f in [pool.submit(add, hits, N) for _ in range(WORKERS)])
    print(f"  client {name} (pid {os.getpid()}): its pool of {WORKERS} added {added:,}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_key_file(path: Path) -> None:
    """A random key in a file only its owner can read (the server refuses wider modes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")  # one trailing newline is ignored


def wait_for_server(server: subprocess.Popen[str], address: str, key: bytes) -> None:
    """Poll until the server accepts a connection (or fail if it exited)."""
    deadline = time.monotonic() + 20
    while True:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            proxyshare.connect(address, authkey=key)
            return
        except proxyshare.ServerUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp, "authkey")
        write_key_file(key_file)
        key = key_file.read_bytes().rstrip(b"\n")
        server_cmd = [
            sys.executable,
            "-m",
            "proxyshare",
            "serve",
            "--address",
            address,
            "--authkey-file",
            str(key_file),
        ]
        print("$ python -m proxyshare serve --address", address, "--authkey-file KEYFILE")
        server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, text=True)
        try:
            wait_for_server(server, address, key)
            start = time.perf_counter()
            env = {
                **os.environ,
                "PROXYSHARE_ADDRESS": address,
                "PROXYSHARE_AUTHKEY_FILE": str(key_file),
            }
            clients = [
                subprocess.Popen([sys.executable, __file__, "client", str(i)], env=env)
                for i in range(1, CLIENTS + 1)
            ]
            codes = [c.wait(timeout=600) for c in clients]
            elapsed = (time.perf_counter() - start) * 1000
            if any(codes):
                print(f"a client failed: exit codes {codes}")
                return 1

            mgr = proxyshare.connect(address, authkey=key)
            total = mgr.counter("hits").get()
            guard = mgr.lock("guard")
            with guard:  # so that status shows a lock holder (this process)
                print(
                    f"$ python -m proxyshare status   (this process, pid {os.getpid()}, "
                    "holds 'guard')"
                )
                status = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "proxyshare",
                        "status",
                        "--address",
                        address,
                        "--authkey-file",
                        str(key_file),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            print(status.stdout.rstrip())
            if status.returncode != 0:
                print(f"status failed ({status.returncode}): {status.stderr.strip()}")
                return 1
        finally:
            server.send_signal(signal.SIGTERM)  # a clean stop: exit code 0
            try:
                out, _ = server.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                out, _ = server.communicate()
        said = out.strip().splitlines()[0] if out.strip() else "(nothing)"
        print(f"server said: {said}")
        print(f"server exit code after SIGTERM: {server.returncode}")

    expected = CLIENTS * WORKERS * N
    ok = total == expected and server.returncode == 0
    print(
        f"result: remote counter {total}/{expected} in {elapsed:.0f} ms, "
        f"{'correct' if ok else 'WRONG'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client_main(sys.argv[2])
    else:
        raise SystemExit(main())
