"""Authkeys: reading them from the environment and key files, making new ones.

A key file holds the key's bytes; one trailing newline is ignored (so
``echo secret > key`` works).  A key file that the group or others can read
is refused: the key lets its holder run code in the server (pickle).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from proxyshare._errors import ProxyShareError

__all__ = [
    "ADDRESS_ENV",
    "address_or_env",
    "generate_authkey",
    "read_authkey_env",
    "read_key_file",
    "require_authkey",
    "write_key_file",
]


def generate_authkey() -> bytes:
    """A random key, printable so it can travel through environment variables."""
    return secrets.token_hex(32).encode("ascii")


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The key stored in ``path``; refuses files readable by group or others."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ProxyShareError(
            f"cannot read the authkey file {str(path)!r}: {exc.strerror}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ProxyShareError(
            f"the authkey file {str(path)!r} is readable by other users "
            f"(mode {stat.S_IMODE(mode):04o}): run `chmod 600 {path}`"
        )
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise ProxyShareError(f"the authkey file {str(path)!r} is empty")
    return data


def write_key_file(path: str | os.PathLike[str], key: bytes) -> Path:
    """Write ``key`` to a new file created with mode 0600 (never wider, even briefly)."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key)
    finally:
        os.close(fd)
    return path


def read_authkey_env() -> bytes | None:
    """``PROXYSHARE_AUTHKEY``, else the file named by ``PROXYSHARE_AUTHKEY_FILE``."""
    key = os.environ.get("PROXYSHARE_AUTHKEY")
    if key:
        return key.encode()
    key_file = os.environ.get("PROXYSHARE_AUTHKEY_FILE")
    if key_file:
        return read_key_file(key_file)
    return None


def require_authkey(authkey: bytes | str | None) -> bytes:
    """``authkey`` as bytes, else the environment's key (``read_authkey_env``).

    The one refusal when there is none, for every ``connect()``.
    """
    if authkey is None:
        authkey = read_authkey_env()
        if authkey is None:
            raise ProxyShareError(
                "no authkey given: pass authkey=... or set PROXYSHARE_AUTHKEY or "
                "PROXYSHARE_AUTHKEY_FILE"
            )
    if isinstance(authkey, str):  # a key pasted from a file or variable
        authkey = authkey.encode()
    if not isinstance(authkey, (bytes, bytearray)):
        raise TypeError(f"authkey must be bytes (or str), not {type(authkey).__name__}")
    return bytes(authkey)


ADDRESS_ENV = "PROXYSHARE_ADDRESS"


def address_or_env(address: object) -> object:
    """``address``, else ``$PROXYSHARE_ADDRESS`` (read here, beside the key it goes with).

    The one refusal when there is neither, for every ``connect()``.
    """
    if address is None:
        address = os.environ.get(ADDRESS_ENV)
        if not address:
            raise ProxyShareError(
                "no address given: pass one to connect() or set PROXYSHARE_ADDRESS "
                "(e.g. 127.0.0.1:50000 or unix:/path/to/socket)"
            )
    return address
