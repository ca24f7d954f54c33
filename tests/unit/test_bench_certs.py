"""The bench's throwaway certificates: both ways of making them give a chain TLS accepts."""

from __future__ import annotations

import shutil
import socket
import stat
import threading
from pathlib import Path

import pytest

from proxyshare._bench.certs import CertificatesUnavailable, make_certificates
from proxyshare._tls import TLSFiles, client_context, server_context

pytestmark = pytest.mark.timeout(60)


def _available(way: str) -> bool:
    if way == "openssl":
        return shutil.which("openssl") is not None
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("way", ["cryptography", "openssl"])
def test_certificates_made_at_run_time_pass_a_verified_tls_handshake(
    tmp_path: Path, way: str
) -> None:
    if not _available(way):
        pytest.skip(f"{way} is not available here")
    made = make_certificates(tmp_path / "certs", prefer=way)
    assert made.made_with == way
    assert stat.S_IMODE(made.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o700
    a, b = socket.socketpair()
    client = client_context(TLSFiles(ca=str(made.ca))).wrap_socket(
        a, server_hostname="127.0.0.1", do_handshake_on_connect=False
    )
    server = server_context(made.cert, made.key).wrap_socket(
        b, server_side=True, do_handshake_on_connect=False
    )
    try:
        handshake = threading.Thread(target=server.do_handshake)
        handshake.start()
        client.do_handshake()  # verifies the chain and the name 127.0.0.1
        handshake.join(10)
        client.sendall(b"ping")
        assert server.recv(4) == b"ping"
    finally:
        client.close()
        server.close()


def test_without_any_way_to_make_certificates_the_reason_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CertificatesUnavailable, match="openssl"):
        make_certificates(tmp_path / "certs", prefer="openssl")
