"""``proxyshare serve`` as users run it: a subprocess, real signals, real sockets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from tests.cli.serving import increment_from_env, serve
from tests.support import free_port, increment_many, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)

KEY = "a-key-chosen-by-the-user-7d1c0b"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (unix socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ps-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _close_channels() -> Iterator[None]:
    yield
    close_all_channels()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _address(kind: str, short_dir: Path) -> str:
    return "127.0.0.1:0" if kind == "tcp" else f"unix:{short_dir / 'run' / 'server.sock'}"


# -- starting and listening -------------------------------------------------------


def test_serve_prints_one_line_with_address_and_key_file_path_never_the_key() -> None:
    with serve("--address", "127.0.0.1:0") as server:
        assert server.address.startswith("127.0.0.1:") and not server.address.endswith(":0")
        assert server.key_file is not None
        assert _mode(server.key_file) == 0o600
        assert _mode(server.key_file.parent) == 0o700
        key = server.key_file.read_text()
        assert len(key) >= 32
        assert server.stop() == 0
    assert server.out().splitlines() == [server.line]
    assert key not in server.out() and key not in server.err()


def test_generated_key_file_is_removed_when_the_server_exits() -> None:
    with serve("--address", "127.0.0.1:0") as server:
        assert server.key_file is not None and server.key_file.exists()
        assert server.stop() == 0
    assert not server.key_file.exists()
    assert not server.key_file.parent.exists()


def test_serve_with_an_explicit_key_names_its_source_not_the_key() -> None:
    with serve("--address", "127.0.0.1:0", env={"PROXYSHARE_AUTHKEY": KEY}) as server:
        assert "authkey from PROXYSHARE_AUTHKEY" in server.line
        assert server.key_file is None
        assert server.stop() == 0
    assert KEY not in server.out() + server.err()


def test_serve_on_a_unix_socket_creates_its_directory_with_mode_0700(short_dir: Path) -> None:
    socket_path = short_dir / "new" / "server.sock"
    with serve("--address", f"unix:{socket_path}") as server:
        assert server.address == f"unix:{socket_path}"
        assert stat.S_ISSOCK(socket_path.stat().st_mode)
        assert _mode(socket_path.parent) == 0o700
        assert server.stop() == 0
    assert not socket_path.exists()


def test_python_dash_m_and_address_from_environment(short_dir: Path) -> None:
    socket_path = short_dir / "server.sock"
    os.chmod(short_dir, 0o700)
    with serve(env={"PROXYSHARE_ADDRESS": f"unix:{socket_path}"}) as server:
        assert server.address == f"unix:{socket_path}"
        assert server.stop() == 0


# -- clients ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_pool_workers_in_another_process_use_the_generated_key_file(
    kind: str, short_dir: Path, mp_context: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve("--address", _address(kind, short_dir)) as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        client = proxyshare.connect()  # no arguments: PROXYSHARE_ADDRESS + _AUTHKEY_FILE
        hits = client.counter("hits")
        with ProcessPoolExecutor(2, mp_context=mp_context) as pool:
            by_proxy = [pool.submit(increment_many, hits, 250) for _ in range(2)]
            by_env = [pool.submit(increment_from_env, "hits", 250, server.env()) for _ in range(2)]
            for future in by_proxy + by_env:
                future.result(timeout=60)
        assert hits.get() == 1000
        assert server.stop() == 0


@pytest.mark.parametrize("variable", ["PROXYSHARE_AUTHKEY", "PROXYSHARE_AUTHKEY_FILE"])
def test_connect_without_arguments_reads_the_environment(
    variable: str, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = short_dir / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    value = KEY if variable == "PROXYSHARE_AUTHKEY" else str(key_file)
    with serve("--address", "127.0.0.1:0", env={variable: value}) as server:
        monkeypatch.setenv("PROXYSHARE_ADDRESS", server.address)
        monkeypatch.setenv(variable, value)
        assert proxyshare.connect().counter("c").increment() == 1
        assert proxyshare.connect(server.address, authkey=KEY.encode()).counter("c").get() == 1
        assert server.stop() == 0


def test_wrong_key_raises_authentication_error_saying_it_was_rejected() -> None:
    with serve("--address", "127.0.0.1:0", env={"PROXYSHARE_AUTHKEY": KEY}) as server:
        with pytest.raises(proxyshare.AuthenticationError, match="rejected the authkey") as info:
            proxyshare.connect(server.address, authkey=b"not the key")
        assert KEY not in str(info.value)
        # The server keeps serving the right key.
        assert proxyshare.connect(server.address, authkey=KEY.encode()).counter("c").get() == 0
        assert server.stop() == 0


@pytest.mark.parametrize("address", ["tcp", "unix"])
def test_nothing_listening_raises_server_unavailable_within_seconds(
    address: str, short_dir: Path
) -> None:
    target = f"127.0.0.1:{free_port()}" if address == "tcp" else f"unix:{short_dir / 'none'}"
    started = time.monotonic()
    with pytest.raises(proxyshare.ServerUnavailableError, match="no proxyshare server"):
        proxyshare.connect(target, authkey=b"k")
    assert time.monotonic() - started < 5


# -- stopping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_signal_exits_0_and_removes_the_socket_file(sig: int, kind: str, short_dir: Path) -> None:
    with serve("--address", _address(kind, short_dir)) as server:
        assert server.stop(sig) == 0
    assert "Traceback" not in server.err()
    assert not (short_dir / "run" / "server.sock").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_with_clients_connected_exits_0_and_clients_see_server_unavailable(
    sig: int, short_dir: Path
) -> None:
    socket_path = short_dir / "run" / "server.sock"
    with serve("--address", f"unix:{socket_path}") as server:
        assert server.key_file is not None
        client = proxyshare.connect(server.address, authkey=server.key_file.read_bytes())
        guard = client.lock("guard")
        assert guard.acquire()
        errors: list[BaseException] = []
        waiting = threading.Event()

        def waiter() -> None:
            other = proxyshare.connect(server.address, authkey=server.key_file.read_bytes())
            lock = other.lock("guard")
            waiting.set()
            try:
                errors.append(lock.acquire(timeout=60))  # type: ignore[arg-type]
            except BaseException as exc:  # what the test expects
                errors.append(exc)

        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        try:
            waiting.wait(30)
            wait_until(lambda: client.status()["resources"][0]["waiters"], timeout=30)
            assert server.stop(sig) == 0
            thread.join(10)
            assert not thread.is_alive()
        finally:
            close_all_channels()
    assert not socket_path.exists()
    assert len(errors) == 1 and isinstance(errors[0], proxyshare.ServerUnavailableError)
    with pytest.raises(proxyshare.ServerUnavailableError):
        guard.locked()


def test_a_stopping_server_grants_nothing_when_a_holder_disconnects(short_dir: Path) -> None:
    """Regression: a lock freed during shutdown went to a waiter, whose acquire() said True."""
    os.chmod(short_dir, 0o700)
    address, key = f"unix:{short_dir / 's'}", b"k"
    server = proxyshare.ShareManager(address, authkey=key).get_server()
    threading.Thread(target=server.accepter, daemon=True).start()
    try:
        holder = proxyshare.connect(address, authkey=key)
        assert holder.lock("guard").acquire()
        results: list[bool] = []

        def waiter() -> None:
            results.append(
                proxyshare.connect(address, authkey=key).lock("guard").acquire(timeout=2)
            )

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: holder.status()["resources"][0]["waiters"], timeout=30)
        server.stop()  # stopping: from now on nothing is released or granted
        holder.server_ref.channel().close()  # the holder goes away while the server stops
        thread.join(30)
        assert results == [False]
    finally:
        close_all_channels()
        server.close()


# -- refusals -----------------------------------------------------------------------


def test_port_in_use_exits_1_with_one_line_and_no_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--address", f"127.0.0.1:{port}", timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "already in use" in result.stderr and f"127.0.0.1:{port}" in result.stderr


def test_a_second_server_on_a_live_unix_socket_exits_1(short_dir: Path) -> None:
    address = _address("unix", short_dir)
    with serve("--address", address) as server:
        result = run_cli("serve", "--address", address)
        assert result.returncode == 1
        assert "already in use" in result.stderr and "Traceback" not in result.stderr
        assert server.proc.poll() is None  # the first one is untouched
        assert server.stop() == 0


def test_a_stale_socket_file_from_a_killed_server_is_replaced(short_dir: Path) -> None:
    socket_path = short_dir / "server.sock"
    os.chmod(short_dir, 0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_path))
    stale.close()  # the file stays, nobody listens: what SIGKILL leaves behind
    with serve("--address", f"unix:{socket_path}") as server:
        assert server.stop() == 0
    assert not socket_path.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
@pytest.mark.parametrize("how", ["--authkey-file", "PROXYSHARE_AUTHKEY_FILE"])
def test_key_file_readable_by_others_is_refused(mode: int, how: str, short_dir: Path) -> None:
    key_file = short_dir / "key"
    key_file.write_text(KEY)
    key_file.chmod(mode)
    if how == "--authkey-file":
        result = run_cli("serve", "--address", "127.0.0.1:0", "--authkey-file", str(key_file))
    else:
        result = run_cli("serve", "--address", "127.0.0.1:0", env={how: str(key_file)})
    assert result.returncode == 2
    assert f"chmod 600 {key_file}" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_missing_key_file_is_refused_with_its_path(short_dir: Path) -> None:
    missing = short_dir / "no-such-key"
    result = run_cli("serve", "--authkey-file", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr and "cannot read" in result.stderr


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0"])
def test_non_loopback_address_without_a_key_is_refused(address: str) -> None:
    result = run_cli("serve", "--address", address)
    assert result.returncode == 2
    assert "refusing to listen" in result.stderr and "--authkey-file" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


def test_non_loopback_address_with_an_explicit_key_is_served() -> None:
    with serve("--address", "0.0.0.0:0", env={"PROXYSHARE_AUTHKEY": KEY}) as server:
        assert server.address.startswith("0.0.0.0:")
        assert server.stop() == 0


def test_unix_socket_in_a_directory_others_can_enter_is_refused(short_dir: Path) -> None:
    shared = short_dir / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    result = run_cli("serve", "--address", f"unix:{shared / 'server.sock'}")
    assert result.returncode == 2
    assert f"chmod 700 {shared}" in result.stderr
    assert not (shared / "server.sock").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "127.0.0.1:99999"], "between 0 and 65535"),
        (["--address", "127.0.0.1:http"], "invalid address"),
        (["--address", "unix:"], "invalid address"),
        (["--log-level", "chatty"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = run_cli("serve", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# -- secrecy ------------------------------------------------------------------------


def test_the_key_appears_in_no_output_even_at_debug_level(short_dir: Path) -> None:
    env = {"PROXYSHARE_AUTHKEY": KEY}
    with serve("--address", "127.0.0.1:0", "--log-level", "debug", env=env) as server:
        client = proxyshare.connect(server.address, authkey=KEY.encode())
        client.counter("c").increment()
        client.lock("l").acquire()
        with pytest.raises(proxyshare.AuthenticationError) as rejected:
            proxyshare.connect(server.address, authkey=b"wrong")
        with pytest.raises(proxyshare.NotOwnerError) as not_owner:
            client.lock("other").release()
        outputs = [
            run_cli("status", "--address", server.address, env=env),
            run_cli("status", "--json", "--address", server.address, env=env),
        ]
        assert all(result.returncode == 0 for result in outputs)
        close_all_channels()
        assert server.stop() == 0
    texts = [server.out(), server.err(), str(rejected.value), str(not_owner.value)]
    texts += [result.stdout + result.stderr for result in outputs]
    assert "DEBUG" in server.err()  # the log was on, and still no key
    for text in texts:
        assert KEY not in text
