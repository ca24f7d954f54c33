"""Running ``proxyshare serve`` as a real subprocess, always stopped afterwards.

Also holds the worker functions the CLI tests send to pools (module level, so
spawn and forkserver workers can import them).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tests.support import ROOT, cli_env

LISTENING = re.compile(r"listening on (?P<address>\S+) \((?P<key>.*)\)$")
START_TIMEOUT = 30.0  # generous: the machine is shared and slow imports happen


class Served:
    """A running ``proxyshare serve`` and what it printed."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._drain, args=(proc.stdout, self.stdout, True)),
            threading.Thread(target=self._drain, args=(proc.stderr, self.stderr, False)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        self.line = ""
        self.address = ""
        self.key_file: Path | None = None

    def _drain(self, stream: IO[str], sink: list[str], announce: bool) -> None:
        for line in stream:
            sink.append(line)
            if announce:
                self._lines.put(line)
        if announce:
            self._lines.put(None)

    def wait_listening(self, timeout: float = START_TIMEOUT) -> None:
        """Block until the "listening" line arrives; fail (with stderr) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"serve did not start within {timeout}s") from None
            if line is None:
                self.proc.wait(10)
                raise AssertionError(f"serve exited with {self.proc.returncode}: {self.err()}")
            match = LISTENING.search(line.strip())
            if match:
                self.line = line.strip()
                self.address = match["address"]
                key = match["key"]
                if key.startswith("authkey file: "):
                    self.key_file = Path(key.removeprefix("authkey file: "))
                return

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig``; return the exit code (SIGKILL and fail if it does not exit)."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"serve ignored signal {sig} for {timeout}s") from None
        self.join_output()
        return code

    def join_output(self) -> None:
        for reader in self._readers:
            reader.join(10)

    def out(self) -> str:
        return "".join(self.stdout)

    def err(self) -> str:
        if self.proc.poll() is not None:
            self.join_output()
        return "".join(self.stderr)

    def env(self) -> dict[str, str]:
        """Environment variables a client needs to reach this server."""
        env = {"PROXYSHARE_ADDRESS": self.address}
        if self.key_file is not None:
            env["PROXYSHARE_AUTHKEY_FILE"] = str(self.key_file)
        return env


@contextmanager
def serve(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Iterator[Served]:
    """Start ``proxyshare serve ARGS``; stop it at the end if still running.

    SIGTERM first, so the server removes its socket and generated key file as a
    user's would; SIGKILL (and removing what it leaves) only if that fails.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxyshare", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(env),
        cwd=ROOT,
    )
    served = Served(proc)
    try:
        if wait:
            served.wait_listening()
        yield served
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                if served.key_file is not None:
                    shutil.rmtree(served.key_file.parent, ignore_errors=True)
        served.join_output()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# -- worker functions -------------------------------------------------------------


def increment_from_env(name: str, n: int, env: dict[str, str]) -> int:
    """Connect with no arguments (PROXYSHARE_* variables) and increment ``n`` times.

    ``env`` is applied first: a forkserver started by an earlier test holds
    that test's environment, and its children inherit it, not ours.
    """
    import proxyshare

    os.environ.update(env)
    client = proxyshare.connect()
    counter = client.counter(name)
    for _ in range(n):
        counter.increment()
    return counter.get()


def hold_lock(address: str, key_file: str, name: str, ready: Any, release: Any) -> None:
    """Hold lock ``name`` until ``release`` is set (or the process is killed)."""
    import proxyshare
    from proxyshare._keys import read_key_file

    client = proxyshare.connect(address, authkey=read_key_file(key_file))
    lock = client.lock(name)
    lock.acquire()
    ready.set()
    release.wait(60)
    lock.release()


def wait_for_lock(address: str, key_file: str, name: str, ready: Any) -> None:
    """Block in ``acquire()`` on lock ``name`` (a waiter for status to show)."""
    import proxyshare
    from proxyshare._keys import read_key_file

    client = proxyshare.connect(address, authkey=read_key_file(key_file))
    lock = client.lock(name)
    ready.set()
    lock.acquire(timeout=60)
