"""Settings of ``proxyshare serve`` and ``proxyshare status`` (CLI and server only).

Each setting comes from the first of: a command-line flag, an environment
variable, a default.  The authkey is looked up in this order::

    --authkey-file PATH          a key file (mode 0600 or stricter)
    PROXYSHARE_AUTHKEY           the key itself
    PROXYSHARE_AUTHKEY_FILE      a key file
    (serve only) generated       a random key written to a new 0600 file

Validation happens here, once, with messages that say what is wrong and what
to do; ``_cli`` turns :class:`ConfigError` into a usage error (exit code 2).
The secure defaults live here too: loopback address, no non-loopback server
without a key chosen by the user, private directories for unix sockets and
generated keys.

This module imports pydantic; ``import proxyshare`` must never import it.
"""

from __future__ import annotations

import errno
import getpass
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretBytes, ValidationError, field_validator

from proxyshare._address import format_address, is_loopback, is_redis_url, parse_address
from proxyshare._errors import ProxyShareError
from proxyshare._keys import generate_authkey, read_key_file, write_key_file

__all__ = [
    "DEFAULT_ADDRESS",
    "ENV_ADDRESS",
    "ENV_AUTHKEY",
    "ENV_AUTHKEY_FILE",
    "ENV_LOG_LEVEL",
    "ClientSettings",
    "ConfigError",
    "GeneratedKey",
    "ServeSettings",
    "generate_key_file",
    "load_client_settings",
    "load_serve_settings",
    "prepare_unix_socket",
    "remove_generated_key",
]

logger = logging.getLogger("proxyshare.config")

DEFAULT_ADDRESS = "127.0.0.1:50000"
ENV_ADDRESS = "PROXYSHARE_ADDRESS"
ENV_AUTHKEY = "PROXYSHARE_AUTHKEY"
ENV_AUTHKEY_FILE = "PROXYSHARE_AUTHKEY_FILE"
ENV_LOG_LEVEL = "PROXYSHARE_LOG_LEVEL"
_GROUP_OTHER = stat.S_IRWXG | stat.S_IRWXO

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
KeySource = Literal["--authkey-file", "PROXYSHARE_AUTHKEY", "PROXYSHARE_AUTHKEY_FILE", "generated"]


class ConfigError(ProxyShareError):
    """A setting is missing or invalid; the message names it and says what to do."""


class ClientSettings(BaseModel):
    """Where the server is and the key to get in (``status`` and other clients).

    ``address`` is in ``multiprocessing.connection`` form: ``(host, port)`` or
    a unix socket path; a ``redis://`` URL is kept as given.  ``authkey`` is
    ``None`` only for a Redis URL (Redis has its own authentication).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: tuple[str, int] | str = Field(description="server address, parsed")
    address_source: str = Field(description="where the address came from (flag, env, default)")
    authkey: SecretBytes | None = Field(default=None, description="the key; never shown")
    key_source: KeySource | None = Field(default=None, description="where the key came from")
    authkey_file: Path | None = Field(default=None, description="key file, if the key has one")

    @field_validator("address", mode="before")
    @classmethod
    def _parse_address(cls, value: Any) -> Any:
        if is_redis_url(value):
            return value
        return parse_address(value)  # ValueError names the accepted forms

    @property
    def is_redis(self) -> bool:
        return is_redis_url(self.address)

    @property
    def display_address(self) -> str:
        """The address as users type it."""
        if is_redis_url(self.address):
            from proxyshare._backends.redis.url import redacted_url

            return redacted_url(self.address)
        return format_address(self.address)

    def key_bytes(self) -> bytes:
        if self.authkey is None:
            raise ConfigError("no authkey is configured")
        return self.authkey.get_secret_value()


class ServeSettings(ClientSettings):
    """Everything ``proxyshare serve`` needs; ``authkey`` is None until generated."""

    log_level: LogLevel = Field(default="WARNING", description="level of the stderr log")


_Settings = TypeVar("_Settings", bound=ClientSettings)


class GeneratedKey(BaseModel):
    """A key made by ``serve`` when the user gave none, and the file that holds it."""

    model_config = ConfigDict(frozen=True)

    authkey: SecretBytes
    path: Path = Field(description="the key file (mode 0600)")
    directory: Path = Field(description="the private directory (mode 0700) holding it")


# -- loading -------------------------------------------------------------------


def load_client_settings(
    address: str | None = None,
    authkey_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Settings for a command that connects to a server; raises ConfigError."""
    env = os.environ if environ is None else environ
    fields = _common_fields(address, authkey_file, env)
    settings = _build(ClientSettings, fields)
    if settings.authkey is None and not settings.is_redis:
        raise ConfigError(
            "no authkey: pass --authkey-file PATH or set PROXYSHARE_AUTHKEY or "
            "PROXYSHARE_AUTHKEY_FILE (`proxyshare serve` printed the path of its key file)"
        )
    if isinstance(settings.address, tuple) and settings.address[1] == 0:
        raise ConfigError(
            f"invalid address {settings.display_address!r} (from {settings.address_source}): "
            "port 0 only makes sense for `serve`; give the port the server listens on"
        )
    return settings


def load_serve_settings(
    address: str | None = None,
    authkey_file: str | None = None,
    log_level: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """Settings for ``proxyshare serve``; raises ConfigError.

    Without any key this returns ``authkey=None``: the caller generates one
    with :func:`generate_key_file` (kept out of here: it writes files).
    """
    env = os.environ if environ is None else environ
    fields = _common_fields(address, authkey_file, env)
    level = log_level or env.get(ENV_LOG_LEVEL) or "WARNING"
    fields["log_level"] = level.upper()
    settings = _build(ServeSettings, fields)
    if settings.is_redis:
        raise ConfigError(
            f"cannot serve on {settings.display_address!r}: a redis:// URL names a Redis "
            "server; `proxyshare serve` needs HOST:PORT or unix:/path"
        )
    if settings.authkey is None and not is_loopback(settings.address):
        raise ConfigError(
            f"refusing to listen on {settings.display_address}, which other machines can reach, "
            "with a generated key: choose the key yourself (--authkey-file PATH, "
            "PROXYSHARE_AUTHKEY or PROXYSHARE_AUTHKEY_FILE) and share it with the clients, "
            f"or listen on a loopback address such as {DEFAULT_ADDRESS}"
        )
    return settings


def _common_fields(
    address: str | None, authkey_file: str | None, env: Mapping[str, str]
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if address:
        fields["address"], fields["address_source"] = address, "--address"
    elif env.get(ENV_ADDRESS):
        fields["address"], fields["address_source"] = env[ENV_ADDRESS], ENV_ADDRESS
    else:
        fields["address"], fields["address_source"] = DEFAULT_ADDRESS, "the default"
    if authkey_file:
        fields.update(_key_from_file(authkey_file, "--authkey-file"))
    elif env.get(ENV_AUTHKEY):
        fields["authkey"] = env[ENV_AUTHKEY].encode()
        fields["key_source"] = "PROXYSHARE_AUTHKEY"
    elif env.get(ENV_AUTHKEY_FILE):
        fields.update(_key_from_file(env[ENV_AUTHKEY_FILE], "PROXYSHARE_AUTHKEY_FILE"))
    return fields


def _key_from_file(path: str, source: KeySource) -> dict[str, Any]:
    try:
        key = read_key_file(path)
    except ProxyShareError as exc:
        raise ConfigError(f"{exc} (given by {source})") from None
    return {"authkey": key, "key_source": source, "authkey_file": Path(path)}


def _build(model: type[_Settings], fields: dict[str, Any]) -> _Settings:
    """Validate ``fields``; turn a ValidationError into one readable line."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            if field == "address":
                message = f"{message} (from {fields.get('address_source')})"
            elif field == "log_level":
                message = (
                    f"invalid log level {fields.get('log_level')!r}: "
                    "use DEBUG, INFO, WARNING, ERROR or CRITICAL"
                )
            problems.append(message)
        raise ConfigError("; ".join(problems)) from None


# -- files the server creates -----------------------------------------------------


def generate_key_file() -> GeneratedKey:
    """A random key in ``<tmp>/proxyshare-XXXX/authkey``: directory 0700, file 0600."""
    directory = Path(tempfile.mkdtemp(prefix="proxyshare-"))  # mkdtemp makes it 0700
    key = generate_authkey()
    path = write_key_file(directory / "authkey", key)
    return GeneratedKey(authkey=SecretBytes(key), path=path, directory=directory)


def remove_generated_key(generated: GeneratedKey) -> None:
    """Delete a generated key file and its directory (the key dies with the server)."""
    try:
        generated.path.unlink(missing_ok=True)
        generated.directory.rmdir()
    except OSError as exc:
        logger.warning("could not remove the key file directory %s: %s", generated.directory, exc)


def prepare_unix_socket(path: str) -> bool:
    """Make ``path`` ready for a listening unix socket; True if a stale socket was removed.

    The socket's directory must be private (0700, ours): anyone who can reach
    the socket can try keys, and a shared directory lets others replace it.
    A missing directory is created with mode 0700; an existing one that the
    group or others can access is refused.  A socket file left behind by a
    killed server (nothing accepts on it) is removed.
    """
    socket_path = Path(path)
    directory = socket_path.parent
    try:
        info = directory.stat()
    except FileNotFoundError:
        try:
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise ConfigError(
                f"cannot create the socket directory {str(directory)!r}: {exc.strerror}"
            ) from None
        return False
    except OSError as exc:
        raise ConfigError(
            f"cannot use the socket directory {str(directory)!r}: {exc.strerror}"
        ) from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"cannot put a unix socket under {str(directory)!r}: not a directory")
    if info.st_uid != os.getuid() or info.st_mode & _GROUP_OTHER:
        mine = info.st_uid == os.getuid()
        shared = info.st_mode & (stat.S_ISVTX | stat.S_IWOTH)  # like /tmp: never chmod it
        private = directory / f"proxyshare-{_user()}" / socket_path.name
        fix = f"use unix:{private} (a new directory is created with mode 0700)"
        if mine and not shared:
            fix = f"run `chmod 700 {directory}`, or {fix}"
        raise ConfigError(
            f"the unix socket directory {str(directory)!r} is accessible by other users "
            f"(mode {stat.S_IMODE(info.st_mode):04o}"
            f"{'' if mine else ', owned by another user'}): {fix}"
        )
    return _remove_stale_socket(socket_path)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the uid will do
        return str(os.getuid())


def _remove_stale_socket(path: Path) -> bool:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ConfigError(f"cannot use the socket path {str(path)!r}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ConfigError(
            f"{str(path)!r} exists and is not a unix socket: remove it or choose another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno != errno.ECONNREFUSED:
            raise ConfigError(f"cannot use the socket path {str(path)!r}: {exc.strerror}") from None
        path.unlink()  # nobody accepts on it: left behind by a killed server
        return True
    finally:
        probe.close()
    return False  # a live server: binding fails with "address in use", reported by serve
