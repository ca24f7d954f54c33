"""``proxyshare._cli.config``: precedence, validation messages, secure defaults."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from proxyshare._cli.config import (
    DEFAULT_ADDRESS,
    ConfigError,
    generate_key_file,
    load_client_settings,
    load_serve_settings,
    prepare_unix_socket,
    remove_generated_key,
)

KEY = "k3y-for-tests"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text("from-file\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    path = tmp_path / "private"
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


# -- precedence ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env", "expected", "source"),
    [
        (None, {}, ("127.0.0.1", 50000), "the default"),
        (None, {"PROXYSHARE_ADDRESS": "127.0.0.1:6000"}, ("127.0.0.1", 6000), "PROXYSHARE_ADDRESS"),
        (
            "127.0.0.1:7000",
            {"PROXYSHARE_ADDRESS": "127.0.0.1:6000"},
            ("127.0.0.1", 7000),
            "--address",
        ),
        ("unix:/run/ps/s.sock", {}, "/run/ps/s.sock", "--address"),
        ("localhost:1", {}, ("localhost", 1), "--address"),
    ],
)
def test_address_comes_from_the_flag_then_the_environment_then_the_default(
    flag: str | None, env: dict[str, str], expected: object, source: str
) -> None:
    settings = load_serve_settings(address=flag, environ=env)
    assert settings.address == expected
    assert settings.address_source == source


def test_default_address_is_loopback() -> None:
    assert DEFAULT_ADDRESS.startswith("127.0.0.1:")


@pytest.mark.parametrize(
    ("use_flag", "env_names", "expected", "source"),
    [
        (True, ["PROXYSHARE_AUTHKEY", "PROXYSHARE_AUTHKEY_FILE"], b"from-file", "--authkey-file"),
        (
            False,
            ["PROXYSHARE_AUTHKEY", "PROXYSHARE_AUTHKEY_FILE"],
            KEY.encode(),
            "PROXYSHARE_AUTHKEY",
        ),
        (False, ["PROXYSHARE_AUTHKEY_FILE"], b"from-file", "PROXYSHARE_AUTHKEY_FILE"),
    ],
)
def test_key_comes_from_the_file_flag_then_the_variable_then_the_file_variable(
    key_file: Path, use_flag: bool, env_names: list[str], expected: bytes, source: str
) -> None:
    values = {"PROXYSHARE_AUTHKEY": KEY, "PROXYSHARE_AUTHKEY_FILE": str(key_file)}
    env = {name: values[name] for name in env_names}
    flag = str(key_file) if use_flag else None
    for load in (load_serve_settings, load_client_settings):
        settings = load(authkey_file=flag, environ=env)
        assert settings.key_bytes() == expected
        assert settings.key_source == source


def test_serve_without_any_key_leaves_it_to_be_generated() -> None:
    settings = load_serve_settings(environ={})
    assert settings.authkey is None and settings.key_source is None


def test_the_key_is_hidden_in_reprs_and_dumps() -> None:
    settings = load_serve_settings(environ={"PROXYSHARE_AUTHKEY": KEY})
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert KEY not in text


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, "WARNING"),
        ("debug", {}, "DEBUG"),
        (None, {"PROXYSHARE_LOG_LEVEL": "info"}, "INFO"),
    ],
)
def test_log_level(flag: str | None, env: dict[str, str], expected: str) -> None:
    assert load_serve_settings(log_level=flag, environ=env).log_level == expected


# -- validation messages -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:65536", "between 0 and 65535"),
        ("127.0.0.1:-1", "invalid address"),
        ("127.0.0.1:port", "invalid address"),
        ("just-a-host", "invalid address"),
        ("unix:", "invalid address"),
    ],
)
def test_bad_addresses_are_refused_naming_the_forms_and_the_source(
    address: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_serve_settings(address=address, environ={})
    assert "(from --address)" in str(info.value)
    with pytest.raises(ConfigError, match="PROXYSHARE_ADDRESS"):
        load_serve_settings(environ={"PROXYSHARE_ADDRESS": address})


def test_bad_log_level_lists_the_levels() -> None:
    with pytest.raises(ConfigError, match="DEBUG, INFO, WARNING, ERROR or CRITICAL"):
        load_serve_settings(environ={"PROXYSHARE_LOG_LEVEL": "loud"})


def test_client_refuses_port_0() -> None:
    with pytest.raises(ConfigError, match="port 0 only makes sense for `serve`"):
        load_client_settings(address="127.0.0.1:0", environ={"PROXYSHARE_AUTHKEY": KEY})


def test_client_without_a_key_is_told_where_to_put_one() -> None:
    with pytest.raises(ConfigError, match="--authkey-file PATH or set PROXYSHARE_AUTHKEY"):
        load_client_settings(environ={})


def test_redis_url_needs_no_authkey_and_hides_its_password() -> None:
    settings = load_client_settings(address="redis://user:secret@db:6379/0", environ={})
    assert settings.is_redis and settings.authkey is None
    assert settings.display_address == "redis://user:***@db:6379/0"
    with pytest.raises(ConfigError, match="needs HOST:PORT or unix:/path"):
        load_serve_settings(address="redis://db:6379", environ={"PROXYSHARE_AUTHKEY": KEY})


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o666])
def test_key_file_open_to_group_or_others_is_refused_with_the_chmod_to_run(
    key_file: Path, mode: int
) -> None:
    key_file.chmod(mode)
    with pytest.raises(ConfigError, match=f"run `chmod 600 {key_file}`") as info:
        load_serve_settings(authkey_file=str(key_file), environ={})
    assert "--authkey-file" in str(info.value) and "from-file" not in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_key_files_are_accepted(key_file: Path, mode: int) -> None:
    key_file.chmod(mode)
    assert load_serve_settings(authkey_file=str(key_file), environ={}).key_bytes() == b"from-file"


def test_unreadable_key_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match="cannot read the authkey file") as info:
        load_client_settings(environ={"PROXYSHARE_AUTHKEY_FILE": str(missing)})
    assert str(missing) in str(info.value) and "PROXYSHARE_AUTHKEY_FILE" in str(info.value)


def test_empty_key_file_is_refused(key_file: Path) -> None:
    key_file.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_serve_settings(authkey_file=str(key_file), environ={})


# -- secure defaults ----------------------------------------------------------------------


@pytest.mark.parametrize("address", ["0.0.0.0:5000", "[::]:5000", "8.8.8.8:5000"])
def test_non_loopback_serve_without_a_chosen_key_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match=r"refusing to listen on .* with a generated key"):
        load_serve_settings(address=address, environ={})


@pytest.mark.parametrize("address", ["127.0.0.1:5000", "localhost:5000", "[::1]:5000", "unix:/x/s"])
def test_loopback_serve_may_generate_its_key(address: str) -> None:
    assert load_serve_settings(address=address, environ={}).authkey is None


def test_non_loopback_serve_with_a_chosen_key_is_allowed() -> None:
    settings = load_serve_settings(address="0.0.0.0:5000", environ={"PROXYSHARE_AUTHKEY": KEY})
    assert settings.address == ("0.0.0.0", 5000)


def test_generated_key_file_is_0600_in_a_fresh_0700_directory() -> None:
    first, second = generate_key_file(), generate_key_file()
    try:
        assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(first.directory.stat().st_mode) == 0o700
        assert first.path.read_bytes() == first.authkey.get_secret_value()
        assert first.directory != second.directory
        assert first.authkey != second.authkey
        assert first.authkey.get_secret_value().decode() not in repr(first)
    finally:
        remove_generated_key(first)
        remove_generated_key(second)
    assert not first.directory.exists()


def test_missing_socket_directory_is_created_0700(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.sock"
    assert prepare_unix_socket(str(path)) is False
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o705])
def test_socket_directory_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ConfigError, match=f"run `chmod 700 {shared}`"):
        prepare_unix_socket(str(shared / "s.sock"))


@pytest.mark.parametrize("mode", [0o1777, 0o777])
def test_socket_in_a_shared_directory_like_tmp_suggests_a_private_subdirectory(
    tmp_path: Path, mode: int
) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(mode)
    with pytest.raises(ConfigError) as info:
        prepare_unix_socket(str(shared / "s.sock"))
    message = str(info.value)
    assert "chmod" not in message
    assert f"use unix:{shared}/proxyshare-" in message and "/s.sock" in message


def test_a_regular_file_at_the_socket_path_is_refused(private_dir: Path) -> None:
    (private_dir / "s.sock").write_text("not a socket")
    with pytest.raises(ConfigError, match="is not a unix socket"):
        prepare_unix_socket(str(private_dir / "s.sock"))


def test_a_stale_socket_is_removed_and_a_live_one_kept(private_dir: Path) -> None:
    path = str(private_dir / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    assert prepare_unix_socket(path) is True and not os.path.exists(path)
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(path)
        live.listen()
        assert prepare_unix_socket(path) is False and os.path.exists(path)


def test_import_proxyshare_does_not_import_pydantic() -> None:
    code = "import sys, proxyshare; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize(
    "url",
    ["redis://:hunter2@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0?password=hunter2"],
)
def test_a_redis_password_never_shows_in_the_displayed_address(url: str) -> None:
    from proxyshare._cli.config import load_client_settings

    shown = load_client_settings(url, None, environ={}).display_address
    assert "hunter2" not in shown and "***" in shown


# -- the state dir -------------------------------------------------------------------------


def test_the_state_dir_and_fsync_come_from_flags_else_the_environment(tmp_path: Path) -> None:
    env = {"PROXYSHARE_STATE_DIR": str(tmp_path / "env"), "PROXYSHARE_FSYNC": "no"}
    settings = load_serve_settings(environ=env)
    assert settings.state_dir == tmp_path / "env" and settings.fsync == "no"
    flagged = load_serve_settings(environ=env, state_dir=str(tmp_path / "flag"), fsync="always")
    assert flagged.server_options() == {"state_dir": tmp_path / "flag", "fsync": "always"}
    assert load_serve_settings(environ={}).server_options() == {}
    assert load_serve_settings(environ={}, state_dir="d").fsync == "everysec"


def test_fsync_without_a_state_dir_is_refused() -> None:
    with pytest.raises(ConfigError, match="--fsync always needs a state dir: add --state-dir"):
        load_serve_settings(environ={}, fsync="always")


def test_an_unknown_fsync_policy_is_refused_naming_the_choices() -> None:
    env = {"PROXYSHARE_STATE_DIR": "d", "PROXYSHARE_FSYNC": "sometimes"}
    with pytest.raises(ConfigError, match="invalid fsync policy 'sometimes': use always"):
        load_serve_settings(environ=env)
