"""Queues deliver at least once: a consumer killed while it works gives its items back.

An item handed to a consumer stays in flight until the consumer's next
request (or a clean close) acknowledges it; a consumer SIGKILLed before
that gives it back, at the front, in order.  Clean endings (a pool worker
exiting, a thread ending) acknowledge, so they cause no redelivery.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import multiprocessing
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from tests.faults import workers
from tests.faults.conftest import Figures, poll_until
from tests.support import START_METHODS, cli_env, free_port, kill_hard

pytestmark = [pytest.mark.timeout(90), pytest.mark.matrix]  # differs by Python: see noxfile.py


def _queue_status(mgr: proxyshare.ShareManager, name: str) -> dict[str, Any]:
    (found,) = [r for r in mgr.status()["resources"] if r["name"] == name]
    return found


def _start_consumer(ctx: Any, q: Any, how: str, default_sigterm: bool = False) -> tuple[Any, Any]:
    taken = ctx.Queue()
    proc = ctx.Process(
        target=workers.take_and_hold, args=(q, how, taken, default_sigterm), daemon=True
    )
    proc.start()
    return proc, taken


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("how", ["get", "get_many"])
def test_items_of_a_consumer_killed_while_working_go_back_to_the_front(
    manager: proxyshare.ShareManager, method: str, how: str, figures: Figures
) -> None:
    ctx = multiprocessing.get_context(method)
    q = manager.queue("work")
    q.put_many(["a", "b", "c", "d"])
    proc, taken = _start_consumer(ctx, q, how)
    try:
        got = taken.get(timeout=60)  # the consumer has the reply: it is "working"
        assert got == ("a" if how == "get" else ["a", "b"])
        assert _queue_status(manager, "work")["in_flight"] == (1 if how == "get" else 2)
    finally:
        kill_hard(proc)
    seconds = poll_until(lambda: _queue_status(manager, "work")["in_flight"] == 0, timeout=10)
    assert q.get_many(10, timeout=5) == ["a", "b", "c", "d"]
    figures.record(
        f"consumer SIGKILLed holding a {how}() ({method})", "its items back at the front", seconds
    )


def test_an_item_is_delivered_once_more_per_consumer_death_and_no_more(
    manager: proxyshare.ShareManager,
) -> None:
    ctx = multiprocessing.get_context("fork")
    q = manager.queue("work")
    q.put_many(["only", "next"])
    deliveries = 0
    for _ in range(3):
        proc, taken = _start_consumer(ctx, q, "get")
        try:
            assert taken.get(timeout=30) == "only"
            deliveries += 1
        finally:
            kill_hard(proc)
        poll_until(lambda: _queue_status(manager, "work")["in_flight"] == 0, timeout=10)
    assert q.get(timeout=5) == "only"  # the 4th delivery, to a consumer that lives
    assert q.get(timeout=5) == "next"  # its next request acknowledged "only"
    assert deliveries == 3 and _queue_status(manager, "work")["size"] == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pool_worker_that_exits_cleanly_acknowledges_its_last_item(
    manager: proxyshare.ShareManager, method: str
) -> None:
    q = manager.queue("work")
    q.put_many(["a", "b"])
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method)) as pool:
        assert pool.submit(workers.take_one, q).result(timeout=60) == "a"
    # The worker process has exited; its BYE acknowledged "a": nothing comes back.
    poll_until(lambda: _queue_status(manager, "work")["in_flight"] == 0, timeout=10)
    assert q.get_many(10, timeout=5) == ["b"]


def test_a_thread_that_ends_acknowledges_its_last_item(
    manager: proxyshare.ShareManager,
) -> None:
    q = manager.queue("work")
    q.put_many(["a", "b"])
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    thread.start()
    thread.join(30)
    gc.collect()  # the thread's connection is closed when it is collected
    poll_until(lambda: _queue_status(manager, "work")["in_flight"] == 0, timeout=10)
    assert got == ["a"] and q.get_many(10, timeout=5) == ["b"]


def test_an_item_in_flight_when_the_server_is_killed_comes_back_after_a_restart(
    tmp_path: Path, figures: Figures
) -> None:
    ctx = multiprocessing.get_context("fork")
    address, key = ("127.0.0.1", free_port()), b"delivery"
    state = tmp_path / "state"
    mgr = proxyshare.ShareManager(address=address, authkey=key, state_dir=state)
    mgr.start()
    proc = None
    try:
        q = mgr.queue("work")
        q.put_many(["a", "b"])
        proc, taken = _start_consumer(ctx, q, "get")
        assert taken.get(timeout=30) == "a"
        kill_hard(mgr._process.pid)  # the server dies while "a" is being worked on
    finally:
        if proc is not None:
            kill_hard(proc)
        close_all_channels()
        kill_hard(mgr._process)
    again = proxyshare.ShareManager(address=address, authkey=key, state_dir=state)
    again.start()
    try:
        assert again.queue("work").get_many(10, timeout=5) == ["a", "b"]
        restored = again.status()["server"]["state"]["restored"]
        assert restored["requeued_items"] == 1
    finally:
        close_all_channels()
        again.shutdown()
    figures.record("server SIGKILLed while a consumer held an item", "the item back after restart")


def test_a_consumer_ended_by_sigterm_gives_back_its_item(
    manager: proxyshare.ShareManager,
) -> None:
    """SIGTERM's default action ends the process with no cleanup: no BYE, as SIGKILL."""
    ctx = multiprocessing.get_context("fork")
    q = manager.queue("work")
    q.put("a")
    proc, taken = _start_consumer(ctx, q, "get", default_sigterm=True)
    try:
        assert taken.get(timeout=30) == "a"
        proc.terminate()  # SIGTERM
        proc.join(10)
        assert proc.exitcode == -signal.SIGTERM
    finally:
        kill_hard(proc)
    deadline = time.monotonic() + 10
    assert q.get(timeout=max(0.1, deadline - time.monotonic())) == "a"


EXIT_SCRIPT = """
import sys
import proxyshare

mgr = proxyshare.ShareManager(state_dir=sys.argv[1])
mgr.start()
jobs = mgr.queue("jobs")
if len(sys.argv) > 2:
    jobs.put_many(sys.argv[2:])
print(jobs.get(timeout=10))
# No shutdown(), no `with`: the interpreter's exit stops the server.
"""


def test_a_program_that_exits_without_shutdown_acknowledges_its_last_item(
    tmp_path: Path,
) -> None:
    script = tmp_path / "consume_one.py"
    script.write_text(EXIT_SCRIPT)
    state = str(tmp_path / "state")
    env = cli_env()
    got = []
    for run in range(3):
        extra = ["a", "b", "c"] if run == 0 else []
        proc = subprocess.run(
            [sys.executable, str(script), state, *extra],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        got.append(proc.stdout.strip())
    assert got == ["a", "b", "c"]  # each run's item was done with, never delivered again
