"""Fixtures: every server a test starts is stopped, whatever happens."""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from tests.support import START_METHODS, free_port, kill_hard, running_manager, wait_until

START_METHOD_ENV = "PROXYSHARE_TEST_START_METHOD"


def pytest_configure(config: pytest.Config) -> None:
    """``PROXYSHARE_TEST_START_METHOD=spawn|forkserver|fork`` sets the default start
    method for the whole run, as Python 3.14 (forkserver) and macOS (spawn) do, so
    code that makes a pool with no ``mp_context`` is tested under each."""
    method = os.environ.get(START_METHOD_ENV)
    if method:
        if method not in START_METHODS:
            raise pytest.UsageError(f"{START_METHOD_ENV}={method!r}: use one of {START_METHODS}")
        multiprocessing.set_start_method(method, force=True)


@pytest.fixture
def manager() -> Iterator[proxyshare.ShareManager]:
    """An embedded server in its own process, shut down after the test."""
    with running_manager() as mgr:
        yield mgr


@pytest.fixture
def custom_key_manager() -> Iterator[proxyshare.ShareManager]:
    """A server with an explicit (non-default) authkey."""
    with running_manager(authkey=b"a custom key, not the process default") as mgr:
        yield mgr


@pytest.fixture(params=START_METHODS)
def mp_context(request: pytest.FixtureRequest) -> multiprocessing.context.BaseContext:
    """Each start method in turn."""
    return multiprocessing.get_context(request.param)


# -- Redis: a real redis-server on a free loopback port ---------------------------------

REDIS_INSTALL_HINT = "redis-server not installed: apt-get install redis-server"


class RedisServerProcess:
    """A ``redis-server`` child process; ``kill()`` then ``start()`` reuses the port."""

    def __init__(self, binary: str, port: int, workdir: str, *extra: str) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, deadline: float = 20.0) -> None:
        # --save '' and --appendonly no by default: nothing touches the disk
        # unless a test asks for persistence through ``extra``.
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self.workdir, *self.extra]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_until(self._answers_ping, timeout=deadline, interval=0.05)

    def _answers_ping(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            output = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # +PONG, or -NOAUTH when the server needs a password: either way it is up
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            kill_hard(self.proc)
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None


def _redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("PROXYSHARE_REQUIRE_REDIS") == "1":
            pytest.fail(f"PROXYSHARE_REQUIRE_REDIS=1 but {REDIS_INSTALL_HINT}")
        pytest.skip(REDIS_INSTALL_HINT)
    if importlib.util.find_spec("redis") is None:
        if os.environ.get("PROXYSHARE_REQUIRE_REDIS") == "1":
            pytest.fail("PROXYSHARE_REQUIRE_REDIS=1 but redis-py is missing: pip install redis")
        pytest.skip("redis-py not installed: pip install 'proxyshare[redis]'")
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServerProcess]:
    """One redis-server for the whole session (tests use unique key prefixes)."""
    server = RedisServerProcess(_redis_binary(), free_port(), str(tmp_path_factory.mktemp("redis")))
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_factory(tmp_path: Any) -> Iterator[Callable[..., RedisServerProcess]]:
    """Start private redis-servers (e.g. to kill and restart one); all stopped after."""
    binary = _redis_binary()
    started: list[RedisServerProcess] = []

    def start(*extra: str) -> RedisServerProcess:
        workdir = tmp_path / f"redis{len(started)}"
        workdir.mkdir()
        server = RedisServerProcess(binary, free_port(), str(workdir), *extra)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill()


@pytest.fixture(params=["manager", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The resource API on each backend: a ShareManager, or a RedisManager with its
    own key prefix (flushed afterwards)."""
    if request.param == "manager":
        with running_manager() as mgr:
            yield mgr
        return
    from proxyshare._backends.redis import RedisManager
    from tests.integration.redis_workers import flush_prefix

    server: RedisServerProcess = request.getfixturevalue("redis_server")
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    try:
        yield RedisManager(server.url, prefix=prefix)
    finally:
        flush_prefix(server.url, prefix)
