"""``_cli.config`` for TLS and the connection caps: precedence and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxyshare._address import TlsAddress
from proxyshare._cli.config import ConfigError, load_client_settings, load_serve_settings
from tests.tls_support import Certs, make_certs

KEY = {"PROXYSHARE_AUTHKEY": "k3y"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_a_tls_address_stays_tls_and_takes_its_files_from_flags_then_the_environment(
    tmp_path: Path,
) -> None:
    env = {**KEY, "PROXYSHARE_TLS_CA": "env-ca.pem", "PROXYSHARE_TLS_CERT": "env-cert.pem"}
    settings = load_client_settings("tls://h:1", environ=env, tls_ca=str(tmp_path / "ca.pem"))
    assert isinstance(settings.address, TlsAddress) and settings.is_tls
    assert settings.display_address == "tls://h:1"
    assert settings.tls_ca == tmp_path / "ca.pem"  # the flag wins
    assert settings.tls_cert == Path("env-cert.pem") and settings.tls_key is None


def test_a_plain_address_ignores_the_tls_environment_and_refuses_tls_flags() -> None:
    env = {**KEY, "PROXYSHARE_TLS_CA": "ca.pem"}
    settings = load_client_settings("h:1", environ=env)
    assert not settings.is_tls and settings.tls_ca is None
    with pytest.raises(ConfigError, match="--tls-ca given, but the address 'h:1'"):
        load_client_settings("h:1", environ=KEY, tls_ca="ca.pem")


def test_a_client_key_without_its_certificate_is_refused() -> None:
    with pytest.raises(ConfigError, match="without its certificate"):
        load_client_settings("tls://h:1", environ=KEY, tls_key="k.pem")


def test_serve_reads_its_own_variables_not_the_clients(certs: Certs) -> None:
    clients = {
        **KEY,
        "PROXYSHARE_TLS_CERT": str(certs.client_cert),
        "PROXYSHARE_TLS_KEY": str(certs.client_key),
    }
    assert not load_serve_settings(environ=clients).serves_tls
    env = {
        **KEY,
        "PROXYSHARE_TLS_SERVER_CERT": str(certs.server_cert),
        "PROXYSHARE_TLS_SERVER_KEY": str(certs.server_key),
        "PROXYSHARE_TLS_CLIENT_CA": str(certs.ca),
    }
    settings = load_serve_settings(environ=env)
    assert settings.serves_tls and settings.tls_client_ca == certs.ca


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        ({}, {}, (None, None)),
        ({"PROXYSHARE_MAX_CONNECTIONS": "500"}, {}, (500, None)),
        ({"PROXYSHARE_MAX_HANDSHAKES": "8"}, {"max_handshakes": 16}, (None, 16)),
    ],
)
def test_caps_come_from_flags_then_the_environment(
    env: dict[str, str], flags: dict[str, int], expected: tuple[int | None, int | None]
) -> None:
    settings = load_serve_settings(environ={**KEY, **env}, **flags)
    assert (settings.max_connections, settings.max_handshakes) == expected


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"PROXYSHARE_MAX_CONNECTIONS": "lots"}, {}, "PROXYSHARE_MAX_CONNECTIONS 'lots'"),
        ({}, {"max_handshakes": 0}, "--max-handshakes 0"),
    ],
)
def test_a_cap_that_is_not_a_positive_number_names_where_it_came_from(
    env: dict[str, str], flags: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_serve_settings(environ={**KEY, **env}, **flags)
