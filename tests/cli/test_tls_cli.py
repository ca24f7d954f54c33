"""``proxyshare serve`` and ``status`` over TLS, as users run them (real subprocesses)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from tests.cli.serving import serve
from tests.support import increment_many, run_cli
from tests.tls_support import Certs, make_certs

pytestmark = pytest.mark.timeout(120)

KEY = "a-key-chosen-by-the-user-for-tls"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def _close_channels() -> Iterator[None]:
    yield
    close_all_channels()


def _tls_args(certs: Certs) -> list[str]:
    return ["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)]


def test_serve_with_a_certificate_listens_on_tls_and_status_reads_it(certs: Certs) -> None:
    with serve(
        "--address", "127.0.0.1:0", *_tls_args(certs), env={"PROXYSHARE_AUTHKEY": KEY}
    ) as server:
        assert server.address.startswith("tls://127.0.0.1:")
        assert "warning" not in server.err()
        client = proxyshare.connect(server.address, authkey=KEY.encode(), tls_ca=certs.ca)
        client.counter("hits").increment()
        with ProcessPoolExecutor(2) as pool:  # workers reach it over TLS too
            assert pool.submit(increment_many, client.counter("hits"), 10).result(60) == 10
        env = {"PROXYSHARE_AUTHKEY": KEY, "PROXYSHARE_ADDRESS": server.address}
        result = run_cli("status", "--json", "--tls-ca", str(certs.ca), env=env)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["address"] == server.address
        assert any(r["name"] == "hits" and r["value"] == 11 for r in report["resources"])
        env["PROXYSHARE_TLS_CA"] = str(certs.ca)  # the environment does as well as the flag
        assert run_cli("status", env=env).returncode == 0
        assert server.stop() == 0


def test_serve_reads_its_certificate_from_the_environment(certs: Certs) -> None:
    env = {
        "PROXYSHARE_AUTHKEY": KEY,
        "PROXYSHARE_TLS_SERVER_CERT": str(certs.server_cert),
        "PROXYSHARE_TLS_SERVER_KEY": str(certs.server_key),
    }
    with serve("--address", "127.0.0.1:0", env=env) as server:
        assert server.address.startswith("tls://")


def test_status_without_the_ca_says_to_pass_it_and_exits_1(certs: Certs) -> None:
    with serve(
        "--address", "127.0.0.1:0", *_tls_args(certs), env={"PROXYSHARE_AUTHKEY": KEY}
    ) as server:
        result = run_cli("status", "--address", server.address, env={"PROXYSHARE_AUTHKEY": KEY})
        assert result.returncode == 1
        assert "certificate verify failed" in result.stderr and "--tls-ca" in result.stderr
        plain = server.address.removeprefix("tls://")
        result = run_cli("status", "--address", plain, env={"PROXYSHARE_AUTHKEY": KEY})
        assert result.returncode == 1
        assert f"connect to tls://{plain}" in result.stderr
        assert "Traceback" not in result.stderr


def test_mutual_tls_needs_the_client_certificate_from_status_too(certs: Certs) -> None:
    args = [*_tls_args(certs), "--tls-client-ca", str(certs.ca)]
    with serve("--address", "127.0.0.1:0", *args, env={"PROXYSHARE_AUTHKEY": KEY}) as server:
        env = {"PROXYSHARE_AUTHKEY": KEY, "PROXYSHARE_ADDRESS": server.address}
        result = run_cli("status", "--tls-ca", str(certs.ca), env=env)
        assert result.returncode == 1 and "requires a client certificate" in result.stderr
        with_cert = ["--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]
        result = run_cli("status", "--tls-ca", str(certs.ca), *with_cert, env=env)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("address", "warned"),
    [("0.0.0.0:0", True), ("127.0.0.1:0", False)],
)
def test_a_non_loopback_address_without_tls_gets_a_one_line_warning(
    certs: Certs, address: str, warned: bool
) -> None:
    with serve("--address", address, env={"PROXYSHARE_AUTHKEY": KEY}) as server:
        assert server.stop() == 0
        warnings = [line for line in server.err().splitlines() if "warning" in line]
        assert len(warnings) == (1 if warned else 0)
        if warned:
            assert "without TLS" in warnings[0] and "--tls-cert" in warnings[0]
    if warned:  # with TLS the same address is served without a warning
        with serve("--address", address, *_tls_args(certs), env={"PROXYSHARE_AUTHKEY": KEY}) as tls:
            assert tls.stop() == 0
            assert "warning" not in tls.err()


def test_a_tls_key_readable_by_others_is_a_usage_error(certs: Certs, tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(certs.server_key.read_bytes())
    key.chmod(0o644)
    args = ["--tls-cert", str(certs.server_cert), "--tls-key", str(key)]
    result = run_cli("serve", "--address", "127.0.0.1:0", *args, env={"PROXYSHARE_AUTHKEY": KEY})
    assert result.returncode == 2
    assert f"chmod 600 {key}" in result.stderr and "Traceback" not in result.stderr
    assert "BEGIN" not in result.stderr  # the key's content is never shown


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-key", "k.pem"], "need --tls-cert"),
        (["--tls-client-ca", "ca.pem"], "need --tls-cert"),
        (["--address", "tls://127.0.0.1:0"], "needs a certificate"),
        (["--tls-cert", "nowhere.pem"], "cannot read"),
        (["--max-connections", "0"], "positive whole number"),
        (["--max-handshakes", "x"], "invalid int value"),
    ],
)
def test_bad_tls_and_limit_options_are_usage_errors(args: list[str], message: str) -> None:
    result = run_cli("serve", *args, env={"PROXYSHARE_AUTHKEY": KEY})
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_tls_on_a_unix_socket_is_a_usage_error(certs: Certs, tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--address",
        f"unix:{tmp_path}/s.sock",
        *_tls_args(certs),
        env={"PROXYSHARE_AUTHKEY": KEY},
    )
    assert result.returncode == 2 and "TLS is for TCP addresses" in result.stderr


def test_status_tls_flags_for_a_plain_address_are_a_usage_error(certs: Certs) -> None:
    result = run_cli(
        "status",
        "--address",
        "127.0.0.1:1",
        "--tls-ca",
        str(certs.ca),
        env={"PROXYSHARE_AUTHKEY": KEY},
    )
    assert result.returncode == 2 and "use --address tls://HOST:PORT" in result.stderr
