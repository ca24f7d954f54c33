"""Parsing and formatting of server addresses.

A proxyshare address is one of ``"host:port"``, ``("host", port)``,
``"tls://host:port"``, ``"unix:/path/to/socket"`` or a plain filesystem path
(what the stdlib's ``BaseManager`` hands out for its default unix socket).
Internally an address is what ``multiprocessing.connection`` expects: a
``(host, port)`` tuple for TCP or a ``str`` path for a unix socket.  A TLS
address is a :class:`TlsAddress`: still a ``(host, port)`` tuple, so every
TCP code path takes it, but its type says "wrap the connection in TLS".

A Redis URL (:data:`REDIS_SCHEMES`) is not an address of a proxyshare
server: ``connect()`` and the CLI hand it to the Redis backend as given
(``proxyshare._backends.redis.url`` parses and redacts it).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple, TypeGuard

from proxyshare._errors import ProxyShareError

__all__ = [
    "REDIS_SCHEMES",
    "Address",
    "TlsAddress",
    "check_tls_files",
    "format_address",
    "is_loopback",
    "is_redis_url",
    "parse_address",
]


class TlsAddress(NamedTuple):
    """``tls://host:port``: a TCP address whose connections are wrapped in TLS.

    It compares equal to the plain ``(host, port)`` tuple (it is one), so
    code that must tell them apart checks the type.
    """

    host: str
    port: int


Address = tuple[str, int] | str

#: The URL schemes that name a Redis server rather than a proxyshare server.
REDIS_SCHEMES = ("redis://", "rediss://", "unix+redis://")


def is_redis_url(address: object) -> TypeGuard[str]:
    """Whether ``address`` is a Redis URL (``redis://``, ``rediss://``, ``unix+redis://``)."""
    return isinstance(address, str) and address.startswith(REDIS_SCHEMES)


def parse_address(address: object) -> Address:
    """Return the ``multiprocessing.connection`` form of ``address``.

    Raises ``ValueError`` naming the accepted forms when ``address`` fits none.
    """
    if isinstance(address, TlsAddress):
        return TlsAddress(address.host, _check_port(address.port, address))
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
        if isinstance(host, str) and isinstance(port, int) and not isinstance(port, bool):
            return (host, _check_port(port, address))
    if isinstance(address, str):
        text = address.strip()
        if text.startswith("unix:"):
            path = text[len("unix:") :]
            if path:
                return path
        elif text.startswith("tls://"):
            host, _, port_text = text[len("tls://") :].rpartition(":")
            host = host.strip("[]")
            if host and port_text.isdigit():
                return TlsAddress(host, _check_port(int(port_text), address))
        elif text.startswith("/"):
            return text
        elif ":" in text:
            host, _, port_text = text.rpartition(":")
            host = host.strip("[]") or "127.0.0.1"
            if port_text.isdigit():
                return (host, _check_port(int(port_text), address))
    raise ValueError(
        f"invalid address {address!r}: use 'host:port' (e.g. '127.0.0.1:50000'), "
        "('host', port), 'tls://host:port' or 'unix:/path/to/socket'"
    )


def _check_port(port: int, original: object) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid port in address {original!r}: must be between 0 and 65535")
    return port


def format_address(address: Address) -> str:
    """The form users type: ``host:port``, ``tls://host:port`` or ``unix:/path``."""
    if isinstance(address, tuple):
        host, port = address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"tls://{where}" if isinstance(address, TlsAddress) else where
    return f"unix:{address}"


def is_loopback(address: Address) -> bool:
    """True for unix sockets and TCP addresses that only this machine can reach."""
    if isinstance(address, str):
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(info[4][0]).is_loopback
                for info in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def check_tls_files(address: Address | None, *files: object) -> None:
    """TLS files (``tls_ca``, ``tls_cert``, ``tls_key``, in order) make sense for a
    ``tls://`` address only; the environment's are ignored for others."""
    if isinstance(address, TlsAddress):
        return
    names = ("tls_ca", "tls_cert", "tls_key")
    given = [name for name, v in zip(names, files, strict=True) if v is not None]
    if given:
        where = "no address" if address is None else format_address(address)
        raise ProxyShareError(
            f"{', '.join(given)} given for {where}, which is not a tls:// address: "
            "use tls://host:port (a server started with --tls-cert)"
        )
