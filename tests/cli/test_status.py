"""``proxyshare status``: what a server holds, as a table and as a stable JSON report."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare._cli.status_report import StatusReport, render_status
from proxyshare._client import close_all_channels
from tests.cli.serving import Served, hold_lock, serve, wait_for_lock
from tests.support import free_port, kill_hard, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[Served]:
    """One TCP server with a generated key for the whole module."""
    with serve("--address", "127.0.0.1:0") as served:
        yield served


@pytest.fixture
def client(server: Served) -> Iterator[Any]:
    assert server.key_file is not None
    mgr = proxyshare.connect(server.address, authkey=server.key_file.read_bytes())
    try:
        yield mgr
    finally:
        for name in mgr.names():
            mgr.delete(name)
        close_all_channels()


@pytest.fixture
def lock_holder_and_waiter(server: Served, client: Any) -> Iterator[tuple[int, int]]:
    """Two other processes: one holds lock "guard", one waits for it.  Yields their pids."""
    assert server.key_file is not None
    ctx = multiprocessing.get_context("spawn")
    held, waiting, release = ctx.Event(), ctx.Event(), ctx.Event()
    args = (server.address, str(server.key_file), "guard")
    holder = ctx.Process(target=hold_lock, args=(*args, held, release))
    waiter = ctx.Process(target=wait_for_lock, args=(*args, waiting))
    try:
        holder.start()
        assert held.wait(60)
        waiter.start()
        assert waiting.wait(60)
        wait_until(lambda: _resource(client.status(), "guard")["waiters"], timeout=30)
        assert holder.pid is not None and waiter.pid is not None
        yield holder.pid, waiter.pid
    finally:
        release.set()
        for process in (holder, waiter):
            process.join(10)
            if process.is_alive():
                kill_hard(process)


def _resource(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in raw["resources"] if r["name"] == name)


def _status(server: Served, *extra: str) -> Any:
    return run_cli("status", *extra, env=server.env())


def _report(server: Served) -> StatusReport:
    result = _status(server, "--json")
    assert result.returncode == 0, result.stderr
    return StatusReport.model_validate_json(result.stdout)


def _fill(client: Any) -> None:
    client.counter("hits", initial=41).increment()
    client.dict("cache").update({"a": 1, "b": 2})
    client.queue("jobs").put("job-1")
    client.semaphore("slots", value=3)
    client.event("ready").set()
    client.barrier("start", parties=2)


# -- JSON -----------------------------------------------------------------------------


def test_status_json_shows_every_resource_with_its_value_or_size(
    server: Served, client: Any
) -> None:
    _fill(client)
    report = _report(server)
    by_name = {r.name: r for r in report.resources}
    assert {name: r.kind for name, r in by_name.items()} == {
        "hits": "counter",
        "cache": "dict",
        "jobs": "queue",
        "slots": "semaphore",
        "ready": "event",
        "start": "barrier",
    }
    assert by_name["hits"].value == 42
    assert by_name["cache"].size == 2
    assert by_name["jobs"].size == 1
    assert by_name["slots"].value == 3
    assert (by_name["ready"].model_extra or {}).get("set") is True
    assert (by_name["start"].model_extra or {})["parties"] == 2


def test_status_json_shows_the_pid_of_a_lock_holder_and_of_its_waiter(
    server: Served, lock_holder_and_waiter: tuple[int, int]
) -> None:
    holder_pid, waiter_pid = lock_holder_and_waiter
    report = _report(server)
    guard = next(r for r in report.resources if r.name == "guard")
    assert guard.kind == "lock" and guard.locked is True
    assert [h.pid for h in guard.holders] == [holder_pid]
    assert [w.pid for w in guard.waiters] == [waiter_pid]
    holder = guard.holders[0]
    assert (
        holder.host
        and holder.since is not None
        and holder.since <= report.server.started + (report.server.uptime + 1)
    )
    assert {holder_pid, waiter_pid} <= {c.pid for c in report.clients}


def test_status_json_reports_operations_uptime_and_server_identity(
    server: Served, client: Any
) -> None:
    before = _report(server).server.operations
    for _ in range(10):
        client.counter("ops").increment()
    report = _report(server)
    assert report.server.operations >= before + 10
    assert report.server.uptime > 0
    assert report.server.pid == server.proc.pid
    assert report.address == server.address
    assert report.schema_version == 1


def test_status_does_not_list_its_own_connection(server: Served, client: Any) -> None:
    me = os.getpid()
    wait_until(lambda: {c["pid"] for c in client.status()["clients"]} == {me}, timeout=30)
    assert [c.pid for c in _report(server).clients] == [me]


def test_status_json_has_the_documented_top_level_shape(server: Served) -> None:
    data = json.loads(_status(server, "--json").stdout)
    assert set(data) == {"schema_version", "address", "server", "clients", "resources"}
    assert {"pid", "host", "started", "uptime", "operations"} <= set(data["server"])


def test_report_schema_documents_every_common_field() -> None:
    schema = StatusReport.model_json_schema()
    defs = schema["$defs"]
    for model in ("ServerStatus", "ClientStatus", "ResourceStatus", "Holder"):
        assert defs[model]["description"]
        for name, field in defs[model]["properties"].items():
            assert field.get("description"), f"{model}.{name} has no description"


@pytest.mark.parametrize(
    "raw",
    [
        {  # kinds added later, with their own fields
            "server": {"pid": 1, "host": "h", "started": 0.0, "uptime": 1.0, "operations": 3},
            "clients": [],
            "resources": [
                {"name": "fast", "kind": "shm_counter", "value": 7, "path": "/dev/shm/x"},
                {"name": "g", "kind": "shm_lock", "locked": True, "holders": [{"pid": 9}]},
            ],
        },
        {  # a Redis backend: no clients list, backend-specific server fields
            "server": {"backend": "redis", "redis_version": "7.2", "uptime": 5},
            "resources": [{"name": "hits", "kind": "counter", "value": 1, "ttl": None}],
        },
        {},  # nothing at all
    ],
    ids=["shm-kinds", "redis-backend", "empty"],
)
def test_report_accepts_other_kinds_and_backends_and_keeps_their_fields(
    raw: dict[str, Any],
) -> None:
    report = StatusReport.from_status(raw, address="somewhere")
    dumped = json.loads(report.model_dump_json())
    for given, kept in zip(raw.get("resources", []), dumped["resources"], strict=True):
        for key, value in given.items():
            if key != "holders":
                assert kept[key] == value
    for key, value in raw.get("server", {}).items():
        assert dumped["server"][key] == value
    assert StatusReport.model_validate_json(report.model_dump_json()) == report
    render_status(report)  # the table copes too


# -- the table ---------------------------------------------------------------------------


def test_status_table_shows_resources_holders_waiters_and_clients(
    server: Served, client: Any, lock_holder_and_waiter: tuple[int, int]
) -> None:
    _fill(client)
    result = _status(server)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("hits", "counter", "42", "cache", "2 item(s)", "guard", "lock", "locked"):
        assert text in out
    for pid in lock_holder_and_waiter:
        assert str(pid) in out
    assert "holder" in out and "waiter" in out
    assert "operations served" in out and "Clients" in out


# -- errors ------------------------------------------------------------------------------


def test_status_with_a_wrong_key_exits_1_saying_the_key_was_rejected(server: Served) -> None:
    result = run_cli(
        "status", env={"PROXYSHARE_ADDRESS": server.address, "PROXYSHARE_AUTHKEY": "x"}
    )
    assert result.returncode == 1
    assert "rejected the authkey" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_status_with_nothing_listening_exits_1_within_seconds() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("status", "--address", address, env={"PROXYSHARE_AUTHKEY": "k"}, timeout=30)
    assert result.returncode == 1
    assert "no proxyshare server is listening" in result.stderr and address in result.stderr
    assert "Traceback" not in result.stderr


def test_status_without_a_key_is_a_usage_error() -> None:
    result = run_cli("status", "--address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert "no authkey" in result.stderr and "PROXYSHARE_AUTHKEY" in result.stderr


def test_status_takes_the_same_key_file_option_as_serve(server: Served) -> None:
    assert server.key_file is not None
    result = run_cli("status", "--address", server.address, "--authkey-file", str(server.key_file))
    assert result.returncode == 0, result.stderr
    assert server.key_file.read_text() not in result.stdout + result.stderr


@pytest.mark.redis
def test_status_reads_the_redis_backend(redis_server: Any) -> None:
    from proxyshare._backends.redis import RedisManager

    client = RedisManager(redis_server.url)  # the prefix `status` reads by default
    try:
        client.counter("status-cli-hits").increment(7)
        lock = client.lock("status-cli-guard")
        assert lock.acquire()
        try:
            result = run_cli("status", "--json", "--address", redis_server.url)
            assert result.returncode == 0, result.stderr
            report = StatusReport.model_validate_json(result.stdout)
            by_name = {r.name: r for r in report.resources}
            assert by_name["status-cli-hits"].value == 7
            assert [h.pid for h in by_name["status-cli-guard"].holders] == [os.getpid()]
            table = run_cli("status", "--address", redis_server.url)
            assert table.returncode == 0, table.stderr
            assert "status-cli-guard" in table.stdout
        finally:
            lock.release()
    finally:
        client.delete("status-cli-hits")
        client.delete("status-cli-guard")
