"""Failures surface as the sync client's errors, within seconds, never as a hang.

The handshake is checked against the real thing: the stdlib's
``multiprocessing.connection`` listener of every Python on this machine
(3.10 and 3.11 speak HMAC-MD5, 3.12+ a ``{sha256}``-prefixed challenge).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import proxyshare
from proxyshare import aio
from proxyshare.aio import _connection, _served
from proxyshare.aio._handshake import answer_challenge, deliver_challenge
from tests.aio.helpers import run
from tests.support import free_port, kill_hard, stop_hard

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tcp_manager() -> Iterator[proxyshare.ShareManager]:
    mgr = proxyshare.ShareManager(address=("127.0.0.1", free_port()), authkey=b"the key")
    mgr.start()
    try:
        yield mgr
    finally:
        if mgr._process.is_alive():
            mgr.shutdown()
        else:
            kill_hard(mgr._process)


def test_a_wrong_key_is_an_authentication_error(tcp_manager: proxyshare.ShareManager) -> None:
    async def main() -> None:
        with pytest.raises(proxyshare.AuthenticationError, match="rejected the authkey"):
            await aio.connect(tcp_manager.address, authkey=b"not the key")

    run(main())


def test_no_server_is_server_unavailable_at_once() -> None:
    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(proxyshare.ServerUnavailableError, match="no proxyshare server"):
            await aio.connect(("127.0.0.1", free_port()), authkey=b"k")
        with pytest.raises(proxyshare.ServerUnavailableError, match="no proxyshare server"):
            await aio.connect("unix:/nonexistent/socket", authkey=b"k")
        return time.monotonic() - started

    assert run(main()) < 5


def test_a_peer_that_is_not_a_proxyshare_server_is_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def talk_nonsense() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"\x00\x00\x00\x05hello")
                conn.recv(100)

        thread = threading.Thread(target=talk_nonsense, daemon=True)
        thread.start()

        async def main() -> None:
            with pytest.raises(proxyshare.AuthenticationError, match="handshake"):
                await aio.connect(("127.0.0.1", port), authkey=b"k")

        run(main())
        thread.join(10)


def test_a_silent_peer_is_server_unavailable_after_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_connection, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts (in the kernel), never says a word

        async def main() -> float:
            started = time.monotonic()
            with pytest.raises(proxyshare.ServerUnavailableError, match="handshake within"):
                await aio.connect(listener.getsockname(), authkey=b"k")
            return time.monotonic() - started

        assert run(main()) < 5


def _server_pid(mgr: proxyshare.ShareManager) -> int:
    pid = mgr._process.pid
    assert pid is not None
    return pid


@pytest.mark.parametrize("waiting", ["lock.acquire", "queue.get", "event.wait", "increments"])
def test_server_death_is_server_unavailable_within_seconds(
    tcp_manager: proxyshare.ShareManager, waiting: str
) -> None:
    async def main() -> float:
        async with aio.connect(tcp_manager.address, authkey=b"the key") as mgr:
            lock = await mgr.lock("guard")
            q = await mgr.queue("jobs")
            ev = await mgr.event("go")
            hits = await mgr.counter("hits")

            async def hammer() -> None:
                while True:
                    await hits.increment()

            calls = {
                "lock.acquire": lock.acquire,
                "queue.get": q.get,
                "event.wait": ev.wait,
                "increments": hammer,
            }
            if waiting == "lock.acquire":
                await lock.acquire()
            tasks = [asyncio.create_task(calls[waiting]()) for _ in range(5)]
            await asyncio.sleep(0.2)  # under way (or waiting on the server)
            started = time.monotonic()
            os.kill(_server_pid(tcp_manager), signal.SIGKILL)
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            elapsed = time.monotonic() - started
            assert all(isinstance(o, proxyshare.ServerUnavailableError) for o in outcomes), outcomes
            with pytest.raises(proxyshare.ServerUnavailableError):
                await hits.increment()  # and later calls too, at once
            return elapsed

    assert run(main()) < 5


def test_a_stopped_server_is_server_unavailable_after_the_call_deadline(
    tcp_manager: proxyshare.ShareManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_connection, "CALL_TIMEOUT", 1.0)
    monkeypatch.setattr(_served, "CALL_TIMEOUT", 1.0)
    pid = _server_pid(tcp_manager)

    async def main() -> float:
        async with aio.connect(tcp_manager.address, authkey=b"the key") as mgr:
            hits = await mgr.counter("hits")
            await hits.increment()
            try:
                stop_hard(pid)  # every thread stopped, not just signalled
                started = time.monotonic()
                with pytest.raises(proxyshare.ServerUnavailableError, match="did not answer"):
                    await hits.increment()
                return time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)

    assert 0.9 < run(main()) < 5


def test_a_lost_connection_heals_on_the_next_call(tcp_manager: proxyshare.ShareManager) -> None:
    async def main() -> int:
        async with aio.connect(tcp_manager.address, authkey=b"the key") as mgr:
            hits = await mgr.counter("hits")
            await hits.increment()
            transport: Any = mgr.transport
            for conn in list(transport._all):
                conn.close()  # as if the network dropped it
            await asyncio.sleep(0.05)
            return await hits.increment()

    assert run(main()) == 2


# -- the handshake against the stdlib's, in every Python here ------------------------

_LISTENER = """
import sys
from multiprocessing.connection import Listener
with Listener(("127.0.0.1", 0), authkey=sys.argv[1].encode()) as listener:
    print(listener.address[1], flush=True)
    for _ in range(2):
        try:
            conn = listener.accept()  # deliver_challenge, then answer_challenge
        except Exception as exc:
            print("refused", type(exc).__name__, flush=True)
            continue
        conn.send_bytes(b"welcome " + conn.recv_bytes())
        conn.close()
"""


def _pythons() -> list[str]:
    """This Python, and every other 3.10+ installed beside it (pyenv, or on PATH)."""
    found = {os.path.realpath(sys.executable)}
    root = Path.home() / ".pyenv" / "versions"
    for version in ("3.10", "3.11", "3.12", "3.13", "3.14"):
        found.update(os.path.realpath(p / "bin" / "python") for p in root.glob(f"{version}.*"))
        binary = shutil.which(f"python{version}")
        if binary and "shims" not in binary:  # a pyenv shim may not run this version
            found.add(os.path.realpath(binary))
    return sorted(p for p in found if os.access(p, os.X_OK))


async def _speak_to(port: int, key: bytes) -> bytes:
    """Both challenges with a stdlib listener, then one message through it."""
    loop = asyncio.get_running_loop()
    conn = _connection.Connection(loop, ("127.0.0.1", port))
    await loop.create_connection(lambda: conn, "127.0.0.1", port)
    try:

        async def recv() -> bytes:
            return await conn.recv(10)

        await answer_challenge(recv, conn.send, key)
        await deliver_challenge(recv, conn.send, key)
        conn.send(b"hello")
        return await recv()
    finally:
        conn.close()


@pytest.mark.parametrize("python", _pythons(), ids=os.path.basename)
def test_the_handshake_speaks_the_stdlib_scheme_of_every_python(python: str) -> None:
    key = secrets.token_hex(8).encode()
    proc = subprocess.Popen(
        [python, "-c", _LISTENER, key.decode()],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        assert run(_speak_to(port, key)) == b"welcome hello"

        async def wrong_key() -> None:
            with pytest.raises(proxyshare.AuthenticationError, match="rejected the authkey"):
                await aio.connect(("127.0.0.1", port), authkey=b"wrong")

        run(wrong_key())
        assert proc.stdout.readline().startswith("refused AuthenticationError")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
