"""A server with a state dir: what survives a SIGKILL, a clean stop, a torn or damaged file.

Servers are real ``proxyshare serve`` processes (or embedded managers),
killed with SIGKILL; clients are real processes that count what the server
acknowledged.  The promise checked: after a restart a value holds at least
every acknowledged change and at most those plus the ones in flight, and a
state dir that does not check out is refused, with the file and offset
named, and left exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from tests.cli.serving import Served, serve
from tests.faults import workers
from tests.faults.conftest import Figures, poll_until, reap
from tests.support import free_port, run_cli, running_manager

pytestmark = [pytest.mark.timeout(120), pytest.mark.matrix]  # differs by Python: see noxfile.py

KEY = "a key for the durable tests"
CLIENTS = 3


@contextlib.contextmanager
def serving(state: Path, port: int, *extra: str) -> Iterator[Served]:
    """``proxyshare serve`` on ``port`` with ``state`` as its state dir; stopped after."""
    with serve(
        "--address", f"127.0.0.1:{port}", "--state-dir", str(state), *extra,
        env={"PROXYSHARE_AUTHKEY": KEY},
    ) as served:  # fmt: skip
        try:
            yield served
        finally:
            close_all_channels()


def connect(port: int) -> Any:
    return proxyshare.connect(f"127.0.0.1:{port}", authkey=KEY)


def sigkill(served: Served) -> None:
    os.kill(served.proc.pid, signal.SIGKILL)
    served.proc.wait(10)
    close_all_channels()  # this process's connections died with it


def serve_refused(state: Path, port: int) -> Any:
    """Run ``serve`` on a state dir it must refuse; it must exit, not serve."""
    return run_cli(
        "serve", "--address", f"127.0.0.1:{port}", "--state-dir", str(state),
        env={"PROXYSHARE_AUTHKEY": KEY}, timeout=60,
    )  # fmt: skip


def fingerprint(directory: Path) -> dict[str, tuple[str, int, int]]:
    """Every file's content hash, mode and modification time."""
    return {
        path.name: (
            hashlib.sha256(path.read_bytes()).hexdigest(),
            path.stat().st_mode,
            path.stat().st_mtime_ns,
        )
        for path in sorted(directory.iterdir())
    }


def only(directory: Path, pattern: str) -> Path:
    (path,) = directory.glob(pattern)
    return path


# -- SIGKILL under load -----------------------------------------------------------------


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_a_sigkilled_server_keeps_every_acknowledged_change(
    tmp_path: Path, fsync: str, figures: Figures
) -> None:
    state, port = tmp_path / "state", free_port()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    with serving(state, port, "--fsync", fsync) as served:
        mgr = connect(port)
        counter, tally = mgr.counter("hits"), mgr.dict("tally")
        procs = [
            ctx.Process(
                target=workers.count_acks_until_unavailable,
                args=(counter, tally, f"w{i}", results),
            )
            for i in range(CLIENTS)
        ]
        try:
            for proc in procs:
                proc.start()
            poll_until(lambda: counter.get() >= 300, timeout=60)
            sigkill(served)
            acked = [results.get(timeout=30) for _ in procs]
            for proc in procs:
                proc.join(10)
        finally:
            reap(procs)
    with serving(state, port) as again:
        restarted = time.monotonic()
        mgr = connect(port)
        value = mgr.counter("hits").get()
        tally = mgr.dict("tally").snapshot()
        elapsed = time.monotonic() - restarted
        assert "restored 2 resource(s)" in again.out()
    total = sum(counters for _, counters, _ in acked)
    assert total <= value <= total + CLIENTS  # each client had at most one call in flight
    for key, _, dict_acks in acked:
        # A worker that started late may have had no increment acknowledged yet.
        assert dict_acks <= tally.get(key, 0) <= dict_acks + 1
    figures.record(
        f"server SIGKILLed under load, --fsync {fsync}",
        f"{total} acknowledged, {value} restored ({value - total} of {CLIENTS} in flight)",
        elapsed,
    )


# -- a clean stop, every kind -------------------------------------------------------------


def _fill(mgr: Any) -> None:
    """One resource of each kind, in states a restart must keep (or, for holders, free)."""
    mgr.counter("hits", initial=5).increment(37)
    cache = mgr.dict("cache")
    cache.update({"a": 1, ("t", 2): [1, 2], "gone": 0})
    del cache["gone"]
    done = mgr.queue("done")
    done.put("last")
    done.close()
    mgr.event("go").set()
    mgr.event("idle")
    lock = mgr.lock("guard", lease=30.0)
    assert lock.acquire()  # held at the stop: comes back free
    semaphore = mgr.semaphore("slots", value=3)
    assert semaphore.acquire()
    mgr.barrier("meet", parties=3)
    mgr.counter("temporary").increment()
    mgr.delete("temporary")
    mgr.counter("fast", shared_memory=True).increment()  # shared memory: not kept
    jobs = mgr.queue("jobs", maxsize=10)
    jobs.put_many(["j1", "j2", "j3"])
    assert jobs.get() == "j1"  # the last request: j1 is still in flight at the stop


def _check_restored(mgr: Any, in_flight_came_back: bool) -> None:
    assert mgr.names() == {
        "hits": "counter", "cache": "dict", "done": "queue", "go": "event", "idle": "event",
        "guard": "lock", "slots": "semaphore", "meet": "barrier", "jobs": "queue",
    }  # fmt: skip
    resources = {r["name"]: r for r in mgr.status()["resources"]}
    assert mgr.counter("hits").get() == 42
    assert mgr.dict("cache").snapshot() == {"a": 1, ("t", 2): [1, 2]}
    jobs = mgr.queue("jobs")
    assert resources["jobs"]["maxsize"] == 10
    expected = ["j1", "j2", "j3"] if in_flight_came_back else ["j2", "j3"]
    assert jobs.get_many(10, timeout=5) == expected
    done = mgr.queue("done")
    assert done.get(timeout=5) == "last"
    with pytest.raises(proxyshare.ProxyShareError, match="closed"):
        done.get(timeout=5)
    assert mgr.event("go").is_set() and not mgr.event("idle").is_set()
    assert not resources["guard"]["locked"] and resources["guard"]["lease"] == 30.0
    assert mgr.lock("guard").acquire(timeout=5)
    assert mgr.semaphore("slots").value() == 3
    assert resources["meet"]["parties"] == 3 and not resources["meet"]["broken"]
    restored = mgr.status()["server"]["state"]["restored"]
    assert restored["resources"] == 9
    assert restored["requeued_items"] == (1 if in_flight_came_back else 0)


def test_every_kind_comes_back_after_a_clean_shutdown_of_an_embedded_manager(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with proxyshare.ShareManager(state_dir=state) as mgr:
        _fill(mgr)
    # shutdown() closed this process's connections first: j1 was done with, not in flight
    with proxyshare.ShareManager(state_dir=state, fsync="always") as again:
        _check_restored(again, in_flight_came_back=False)


def test_every_kind_comes_back_after_serve_is_stopped_with_sigterm(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    with serving(state, port) as served:
        _fill(connect(port))
        assert served.stop(signal.SIGTERM) == 0  # the client is still connected: j1 in flight
    close_all_channels()
    with serving(state, port) as again:
        _check_restored(connect(port), in_flight_came_back=True)
        assert "restored 9 resource(s)" in again.out()
        assert "1 queue item(s) in flight went back to the front" in again.out()


# -- torn and damaged files -------------------------------------------------------------------


def _increments(state: Path, port: int, n: int) -> None:
    """``n`` acknowledged increments, then a SIGKILL of the server."""
    with serving(state, port) as served:
        counter = connect(port).counter("hits")
        for _ in range(n):
            counter.increment()
        sigkill(served)


def test_a_torn_last_record_is_dropped_with_a_warning(tmp_path: Path, figures: Figures) -> None:
    state, port = tmp_path / "state", free_port()
    _increments(state, port, 50)
    log = only(state, "log.*")
    raw = bytearray(log.read_bytes())
    end = len(raw.rstrip(b"\0"))
    raw[end - 5 : end] = bytes(5)  # the last frame's last bytes never reached the file
    log.write_bytes(bytes(raw))
    with serving(state, port) as again:
        assert connect(port).counter("hits").get() == 49
        warning = again.err()
    assert "dropped a torn record at the end of" in warning and str(log) in warning
    assert "offset " in warning
    figures.record("last log record cut short", "dropped with a warning; the rest restored")


def _damage(state: Path, how: str) -> tuple[Path, str]:
    """Damage ``state`` as ``how`` says; return the file the error must name, and a fragment."""
    log = only(state, "log.*")
    snapshot = only(state, "snapshot.*")
    if how == "a flipped byte in the middle of the log":
        raw = bytearray(log.read_bytes())
        raw[200] ^= 0x40
        log.write_bytes(bytes(raw))
        return log, "at offset "
    if how == "a flipped byte in the snapshot":
        raw = bytearray(snapshot.read_bytes())
        raw[-2] ^= 0x40
        snapshot.write_bytes(bytes(raw))
        return snapshot, "checksum"
    if how == "the log is missing":
        log.unlink()
        return log, "this log is missing"
    if how == "a newer format":
        raw = bytearray(log.read_bytes())
        raw[8] += 1
        log.write_bytes(bytes(raw))
        return log, "format version 2"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "a flipped byte in the middle of the log",
        "a flipped byte in the snapshot",
        "the log is missing",
        "a newer format",
    ],
)
def test_damage_refuses_to_start_naming_the_file_and_leaves_it_untouched(
    tmp_path: Path, how: str, figures: Figures
) -> None:
    state, port = tmp_path / "state", free_port()
    _increments(state, port, 50)
    named, fragment = _damage(state, how)
    before = fingerprint(state)
    result = serve_refused(state, port)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("proxyshare serve: error: damaged state: ")
    assert str(named) in lines[0] and fragment in lines[0]
    assert "listening" not in result.stdout
    assert fingerprint(state) == before
    figures.record(how, "refused: exit 1, one line naming the file; files untouched")


def test_a_state_dir_others_can_read_is_refused_as_a_usage_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    result = serve_refused(state, free_port())
    assert result.returncode == 2
    assert f"the state dir '{state}' is accessible by other users (mode 0755)" in result.stderr
    assert f"chmod 700 {state}" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a file another user's")
def test_a_state_file_written_by_another_user_is_refused(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    _increments(state, port, 3)
    log = only(state, "log.*")
    os.chown(log, 65534, 65534)
    before = fingerprint(state)
    result = serve_refused(state, port)
    assert result.returncode == 2
    assert f"the state file '{log}' was written by another user (uid 65534)" in result.stderr
    assert fingerprint(state) == before


def test_a_new_state_dir_and_its_files_are_private(tmp_path: Path) -> None:
    state, port = tmp_path / "deep" / "state", free_port()
    _increments(state, port, 3)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()} == {0o600}


def test_a_second_server_on_a_state_dir_in_use_is_refused(tmp_path: Path) -> None:
    state, port = tmp_path / "state", free_port()
    with serving(state, port) as first:
        result = serve_refused(state, free_port())
        assert result.returncode == 1
        assert f"in use by another proxyshare server (pid {first.proc.pid})" in result.stderr
        assert connect(port).counter("still").increment() == 1


# -- the state dir under concurrent changes and compaction (in-process server) -----------------


def _normalised(resources: dict[str, Any]) -> dict[str, Any]:
    """Each resource's durable state, with queue items in flight put back in front."""
    out = {}
    for name, resource in resources.items():
        state = resource.dump_state()
        if resource.kind == "queue":
            batches = sorted(state["in_flight"], key=lambda entry: entry[1])
            items = [item for _, _, batch in batches for item in batch] + state["items"]
            state = {"items": items, "closed": state["closed"]}
        out[name] = (resource.kind, state)
    return out


@contextlib.contextmanager
def in_thread(state: Path, **options: Any) -> Iterator[tuple[Any, Any]]:
    import threading

    server = proxyshare.ShareManager(authkey=b"k", state_dir=state, **options).get_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, proxyshare.connect(server.address, authkey=b"k")
    finally:
        close_all_channels()
        server.stop()
        thread.join(10)


def _churn(mgr: Any, worker: int, seconds: float) -> None:
    import queue
    import random

    rng = random.Random(worker)
    counter, tally, jobs, go = mgr.counter("c"), mgr.dict("d"), mgr.queue("q"), mgr.event("e")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = rng.random()
        try:
            if r < 0.3:
                counter.increment()
            elif r < 0.45:
                tally.increment(f"k{worker}")
            elif r < 0.55:
                tally[f"x{rng.randrange(20)}"] = rng.random()
            elif r < 0.7:
                jobs.put((worker, r))
            elif r < 0.82:
                with contextlib.suppress(queue.Empty):
                    jobs.get_nowait()
            elif r < 0.9:
                with mgr.pipeline() as p:
                    p.counter("c").increment(2)
                    p.dict("d").increment("p")
                    p.queue("q").put_many([1, 2])
            elif r < 0.95:
                go.set() if rng.random() < 0.5 else go.clear()
            elif rng.random() < 0.5:
                mgr.counter(f"tmp{rng.randrange(3)}").increment()
            else:
                mgr.delete(f"tmp{rng.randrange(3)}")
        except proxyshare.ResourceNotFoundError:
            pass  # another worker deleted the tmp counter between open and increment


def test_a_restart_restores_exactly_the_state_after_concurrent_changes_and_compactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    import threading

    from proxyshare._server.state import journal

    monkeypatch.setattr(journal, "COMPACT_BYTES", 4096)  # compact every few dozen changes
    state = tmp_path / "state"
    with in_thread(state) as (server, mgr):
        mgr.counter("c"), mgr.dict("d"), mgr.queue("q"), mgr.event("e")
        threads = [threading.Thread(target=_churn, args=(mgr, i, 3.0)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        compactions = mgr.status()["server"]["state"]["compactions"]
        close_all_channels()
        poll_until(lambda: not server.sessions, timeout=10)
        before = _normalised(server.resources)
    assert compactions > 3
    with in_thread(state) as (server, _mgr):
        after = _normalised(server.resources)
    assert after == before
    figures.record(
        "4 threads of mixed changes, compaction every 4 KiB",
        f"{compactions} compactions; the restart restores exactly the state",
    )


def test_a_change_the_server_cannot_record_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with running_manager(state_dir=state) as mgr:  # a server process of its own
        cache = mgr.dict("cache")
        cache["kept"] = 1
        with pytest.raises(proxyshare.ProxyShareError, match="cannot be recorded"):
            cache["odd"] = workers.PicklesOnlyWhereMade()
        assert "odd" not in cache
        refused = pytest.raises(proxyshare.ProxyShareError, match="cannot be recorded")
        with refused, mgr.pipeline() as p:
            p.dict("cache")["a"] = 1
            p.dict("cache")["odd"] = workers.PicklesOnlyWhereMade()
        assert cache.snapshot() == {"kept": 1}
        assert cache.increment("n") == 1  # and it goes on serving
    with running_manager(state_dir=state) as mgr:
        assert mgr.dict("cache").snapshot() == {"kept": 1, "n": 1}


def test_a_log_that_cannot_grow_refuses_changes_and_keeps_what_it_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from proxyshare._server.state import log

    monkeypatch.setattr(log, "CHUNK", 4096)
    state = tmp_path / "state"
    acknowledged = 0
    with in_thread(state) as (_server, mgr):
        counter = mgr.counter("hits")

        def disk_full(*args: Any) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "posix_fallocate", disk_full)
        with pytest.raises(proxyshare.ProxyShareError, match="cannot be written"):
            for _ in range(10_000):
                counter.increment()
                acknowledged += 1
        with pytest.raises(proxyshare.ProxyShareError, match="refuses changes"):
            counter.increment()
        assert counter.get() == acknowledged  # reads still work, in a pipeline too
        with mgr.pipeline() as p:
            p.counter("hits").get()
        assert p.results == [acknowledged]
        assert "No space left" in mgr.status()["server"]["state"]["failed"]
    monkeypatch.undo()
    with in_thread(state) as (_server, mgr):
        assert mgr.counter("hits").get() == acknowledged


def test_blocking_calls_still_wait_on_a_server_with_a_state_dir(tmp_path: Path) -> None:
    """Changes are applied under their resource's mutex; a wait must not take that for a
    pipeline (which fails fast rather than wait while it holds mutexes)."""
    import threading

    with running_manager(state_dir=tmp_path / "state") as mgr:
        full = mgr.queue("full", maxsize=2)
        full.put_many([1, 2])
        done: list[Any] = []
        putter = threading.Thread(target=lambda: done.append(full.put_many([3, 4], timeout=30)))
        putter.start()
        poll_until(lambda: _resource(mgr, "full")["blocked_putters"] == 1, timeout=10)
        assert full.get_many(2) == [1, 2]
        putter.join(30)
        assert done == [None] and full.get_many(2, timeout=5) == [3, 4]
        empty = mgr.queue("empty")
        getter = threading.Thread(target=lambda: done.append(empty.get(timeout=30)))
        getter.start()
        poll_until(lambda: _resource(mgr, "empty")["blocked_getters"] == 1, timeout=10)
        empty.put("x")
        getter.join(30)
        assert done == [None, "x"]


def _resource(mgr: Any, name: str) -> dict[str, Any]:
    (found,) = [r for r in mgr.status()["resources"] if r["name"] == name]
    return found
