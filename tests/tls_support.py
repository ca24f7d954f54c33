"""TLS for tests: certificates made at test time (trustme), and TLS servers in a thread.

Every key file is written 0600, as the server and client require.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

import proxyshare
from proxyshare._client import close_all_channels
from proxyshare._server import ShareServer


@dataclass(frozen=True)
class Certs:
    """A CA and what it signed, plus a second CA that signed nothing the server trusts."""

    ca: Path  # signed the certificates below
    server_cert: Path  # localhost, 127.0.0.1, ::1
    server_key: Path
    client_cert: Path  # a client certificate for mutual TLS
    client_key: Path
    localhost_cert: Path  # valid for "localhost" only: 127.0.0.1 is the wrong hostname
    localhost_key: Path
    other_ca: Path  # signed nothing here
    stranger_cert: Path  # a client certificate signed by other_ca
    stranger_key: Path


def make_certs(directory: Path) -> Certs:
    """Write a fresh CA, server and client certificates under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()

    def write(name: str, blob: trustme.Blob, private: bool = False) -> Path:
        path = directory / name
        blob.write_to_path(str(path))
        if private:
            path.chmod(0o600)
        return path

    def issue(ca_: trustme.CA, name: str, *identities: str) -> tuple[Path, Path]:
        cert = ca_.issue_cert(*identities)
        cert_path = write(f"{name}.pem", cert.cert_chain_pems[0])
        return cert_path, write(f"{name}.key", cert.private_key_pem, private=True)

    server = issue(ca, "server", "localhost", "127.0.0.1", "::1")
    client = issue(ca, "client", "client@example.org")
    localhost = issue(ca, "localhost-only", "localhost")
    stranger = issue(other, "stranger", "stranger@example.org")
    return Certs(
        ca=write("ca.pem", ca.cert_pem),
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        localhost_cert=localhost[0],
        localhost_key=localhost[1],
        other_ca=write("other-ca.pem", other.cert_pem),
        stranger_cert=stranger[0],
        stranger_key=stranger[1],
    )


@contextlib.contextmanager
def tls_server(
    certs: Certs | None,
    *,
    mutual: bool = False,
    cert: Path | None = None,
    key: Path | None = None,
    authkey: bytes | None = None,
    **caps: Any,
) -> Iterator[ShareServer]:
    """A TCP ``ShareServer`` in a thread of this process: TLS unless ``certs`` is None.

    ``mutual`` requires client certificates signed by ``certs.ca``;
    ``cert``/``key`` replace the server's certificate.  Stopped afterwards.
    """
    options: dict[str, Any] = dict(caps)
    if certs is not None:
        options["tls_cert"] = cert or certs.server_cert
        options["tls_key"] = key or certs.server_key
        if mutual:
            options["tls_client_ca"] = certs.ca
    manager = proxyshare.ShareManager(("127.0.0.1", 0), authkey=authkey or secrets.token_bytes(16))
    server = manager.get_server(**options)
    thread = threading.Thread(target=server.serve_forever, name="test-tls-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        close_all_channels()
        server.stop()
        thread.join(10)


def client_for(server: ShareServer, certs: Certs, mutual: bool = False) -> Any:
    """A client connected to ``server`` over TLS, trusting ``certs.ca``."""
    extra = {"tls_cert": certs.client_cert, "tls_key": certs.client_key} if mutual else {}
    return proxyshare.connect(
        server.address, authkey=bytes(server.authkey), tls_ca=certs.ca, **extra
    )


def raw_tls_context(certs: Certs) -> ssl.SSLContext:
    """A plain ``ssl`` client context that trusts ``certs.ca`` (for raw-socket tests)."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    return context


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to ``needed`` (at most the hard limit); restore it after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        yield
        return
    ceiling = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_descriptors() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))
