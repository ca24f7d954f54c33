"""Security defaults: private socket directory, private key files, keys never shown."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import secrets
import socket
import stat
import traceback
from pathlib import Path

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from proxyshare._keys import read_key_file, write_key_file
from tests.faults import workers
from tests.faults.conftest import serve_in_thread
from tests.support import START_METHODS

pytestmark = pytest.mark.matrix


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", START_METHODS)
def test_embedded_default_address_is_a_unix_socket_in_a_0700_directory(method: str) -> None:
    mgr = proxyshare.ShareManager(ctx=multiprocessing.get_context(method))
    mgr.start()
    try:
        address = mgr.address
        assert isinstance(address, str), f"default address is not a unix socket: {address!r}"
        assert stat.S_ISSOCK(os.stat(address).st_mode)
        directory = os.stat(os.path.dirname(address))
        assert stat.S_IMODE(directory.st_mode) == 0o700
        assert directory.st_uid == os.getuid()
        assert len(bytes(mgr._authkey)) >= 32  # the random process key, not a fixed default
    finally:
        close_all_channels()
        mgr.shutdown()


def test_key_files_are_written_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_key_file(tmp_path / "key", b"k" * 32)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path) == b"k" * 32


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_files_readable_by_others_are_refused_without_showing_the_key(
    tmp_path: Path, mode: int
) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"the-secret-in-the-file")
    path.chmod(mode)
    with pytest.raises(proxyshare.ProxyShareError, match="chmod 600") as info:
        read_key_file(path)
    assert "the-secret-in-the-file" not in str(info.value)


def _key_forms(key: bytes) -> list[str]:
    return [key.decode("latin-1"), key.hex(), repr(key), str(list(key))[1:40]]


def _exercise(server: object, client: proxyshare.ShareManager, key: bytes) -> list[str]:
    """Success, failures, a wrong key, garbage: everything that could log or show a key."""
    shown: list[str] = []
    counter, d, lock = client.counter("c"), client.dict("d"), client.lock("l")
    counter.increment()
    d["k"] = "v"
    assert lock.acquire()
    shown += [repr(client), repr(counter), repr(d), repr(lock), repr(client.server_ref)]
    shown += [str(client.status()), str(client.names())]
    failures = [
        lambda: d["missing"],
        lambda: counter.increment("x"),
        lambda: client.lock("c"),
        lambda: client.semaphore("s").release(),
        lambda: d.__setitem__("x", workers.ExplodesWhenUnpickled("ValueError")),
        lambda: d.__setitem__("x", workers.RefusesToPickle()),
        lambda: proxyshare.connect(server.address, authkey=b"a wrong key"),  # type: ignore[attr-defined]
        lambda: proxyshare.connect("127.0.0.1:1", authkey=key),
    ]
    for failure in failures:
        try:
            failure()
        except Exception as exc:
            shown.append("".join(traceback.format_exception(exc)))
            shown.append(repr(exc))
        else:
            raise AssertionError("expected a failure")
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(server.address)  # type: ignore[attr-defined]
        raw.sendall(b"garbage" * 100)
    lock.release()
    return shown


@pytest.mark.timeout(60)
def test_the_authkey_never_appears_in_logs_status_exceptions_or_reprs(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    key = b"K3Y-" + secrets.token_hex(24).encode()
    mp_logger = multiprocessing.get_logger()  # does not propagate: listen to it directly
    mp_logger.addHandler(caplog.handler)
    old_level = mp_logger.level
    mp_logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG), serve_in_thread(authkey=key) as (server, client):
            shown = _exercise(server, client, key)
    finally:
        mp_logger.removeHandler(caplog.handler)
        mp_logger.setLevel(old_level)
    out, err = capfd.readouterr()
    logs = "\n".join(
        caplog.handler.format(r) + str(r.args) + str(r.__dict__) for r in caplog.records
    )
    assert any(r.name == "proxyshare.server" for r in caplog.records)  # it did log
    everything = "\n".join([logs, out, err, *shown])
    for form in _key_forms(key):
        assert form not in everything
    assert pickle.dumps(key) not in everything.encode("latin-1")
