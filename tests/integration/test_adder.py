"""``mgr.adder(name)`` across processes: start methods, threads, kills, forks, churn, reset."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import stat
from collections.abc import Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare._backends.shm import adder_layout as A
from proxyshare._client import close_all_channels
from tests.integration.adder_workers import (
    add_and_report_pid,
    add_from_short_lived_processes,
    add_in_threads,
    add_then_wait,
    add_until_killed,
)
from tests.support import call_method, kill_hard, running_manager, wait_until

pytestmark = pytest.mark.skipif(not A.available(), reason="needs Linux OFD locks")

FORK = multiprocessing.get_context("fork")


@pytest.fixture
def own_manager() -> Iterator[proxyshare.ShareManager]:
    """A manager the test may shut down itself (shutdown twice is harmless)."""
    with running_manager() as mgr:
        yield mgr


def described(mgr: proxyshare.ShareManager, name: str) -> dict[str, Any]:
    (found,) = [r for r in mgr.status()["resources"] if r["name"] == name]
    return found


# -- exact totals, as a plain submit() argument --------------------------------------------


@pytest.mark.timeout(120)
def test_adds_are_exact_across_pool_workers_that_started_before_the_adder(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        pool.submit(os.getpid).result(timeout=60)  # the workers run before the adder exists
        adder = manager.adder("items")
        futures = [pool.submit(add_in_threads, adder, 5_000) for _ in range(4)]
        assert sum(f.result(timeout=60) for f in futures) == 20_000
    assert adder.get() == 20_000


@pytest.mark.timeout(120)
def test_adds_are_exact_with_several_threads_per_process(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    adder = manager.adder("items")
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(add_in_threads, adder, 2_000, 4) for _ in range(2)]
        add_in_threads(adder, 2_000, 2)  # and this process's threads meanwhile
        for f in futures:
            f.result(timeout=60)
    assert adder.get() == 2 * 4 * 2_000 + 2 * 2_000


@pytest.mark.timeout(60)
def test_the_checking_pool_passes_an_adder(manager: proxyshare.ShareManager) -> None:
    adder = manager.adder("items")
    with proxyshare.ProcessPoolExecutor(1) as pool:
        pool.submit(add_and_report_pid, adder, 3).result(timeout=60)
    assert adder.value == 3


@pytest.mark.timeout(120)
def test_reset_while_workers_add_loses_no_add(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    adder = manager.adder("items")
    taken, resets = 0, 0
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(add_in_threads, adder, 20_000, 2) for _ in range(2)]
        while cf.wait(futures, timeout=0.002).not_done:
            taken += adder.reset()
            resets += 1
        added = sum(f.result(timeout=60) for f in futures)
    assert added == 80_000
    assert resets > 0
    assert taken + adder.get() == added  # each add once: in what a reset returned, or after


# -- death --------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_counts_of_a_process_killed_with_sigkill_stay_and_its_slot_is_reused(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    adder = manager.adder("items")
    ready = mp_context.Event()
    proc = mp_context.Process(target=add_then_wait, args=(adder, 1_234, ready))  # type: ignore[attr-defined]
    proc.start()
    try:
        assert ready.wait(30)
        assert described(manager, "items")["slots_in_use"] == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
    finally:
        kill_hard(proc)
    assert adder.get() == 1_234
    # The kernel frees it as the process exits (a forkserver child is joined through a
    # pipe that may close a moment earlier).
    wait_until(lambda: described(manager, "items")["slots_in_use"] == 0, timeout=10)
    adder.add(1)  # this process takes the dead one's slot, its counts with it
    assert described(manager, "items")["slots"] == 1
    assert adder.get() == 1_235


@pytest.mark.timeout(60)
def test_a_process_killed_in_the_middle_of_adding_leaves_a_total_that_holds(
    manager: proxyshare.ShareManager,
) -> None:
    adder = manager.adder("items")
    started = FORK.Event()
    proc = FORK.Process(target=add_until_killed, args=(adder, started))
    proc.start()
    try:
        assert started.wait(30)
        wait_until(lambda: adder.get() > 10_000, timeout=30)
    finally:
        kill_hard(proc)
    total = adder.get()
    assert total > 10_000
    assert adder.get() == total  # nobody adds any more: nothing lingers or drifts
    assert adder.reset() == total
    assert adder.get() == 0


# -- fork -----------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_forked_child_never_shares_its_parents_slot(manager: proxyshare.ShareManager) -> None:
    adder = manager.adder("items")
    adder.add(1)  # this thread owns a slot before the fork
    added, leave = FORK.Event(), FORK.Event()
    child = FORK.Process(target=add_then_wait, args=(adder, 20_000, added, leave))
    child.start()
    try:
        add_in_threads(adder, 20_000)  # the same thread that forked, at the same time
        assert added.wait(30)
        assert described(manager, "items")["slots_in_use"] == 2
        leave.set()
        child.join(30)
        assert child.exitcode == 0
    finally:
        kill_hard(child)
    assert adder.get() == 40_001


# -- churn: bounded ----------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_thousand_short_lived_processes_leave_the_file_bounded(
    manager: proxyshare.ShareManager,
) -> None:
    adder = manager.adder("churn")
    batch = 25
    # Forked from a small pool worker: forking the test process costs twice as much.
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        added = pool.submit(add_from_short_lived_processes, adder, batch, 40).result(timeout=280)
    assert adder.get() == added == 1_000 * 1_001 // 2
    churn = described(manager, "churn")
    assert churn["slots_in_use"] == 0
    assert churn["slots"] <= batch + 1  # slots are reused, not one per process
    pages = 1 + -(-churn["slots"] * A.SLOT // 4096)
    assert os.stat(adder.path).st_blocks * 512 <= pages * 4096  # the rest stays sparse


@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pool_workers_replaced_after_each_task_reuse_slots(
    manager: proxyshare.ShareManager, method: str
) -> None:
    adder = manager.adder("items")
    context = multiprocessing.get_context(method)
    with cf.ProcessPoolExecutor(2, mp_context=context, max_tasks_per_child=1) as pool:
        futures = [pool.submit(add_and_report_pid, adder, 1) for _ in range(8)]
        pids = {f.result(timeout=120) for f in futures}
    assert len(pids) == 8
    assert adder.get() == 8
    assert described(manager, "items")["slots"] <= 4


# -- the same contract as other resources --------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("adder", "counter"), ("counter", "adder"), ("adder", "shm_counter"), ("dict", "adder")],
)
def test_a_name_is_an_adder_or_something_else(
    manager: proxyshare.ShareManager, first: str, second: str
) -> None:
    def open_(kind: str) -> object:
        if kind == "shm_counter":
            return manager.counter("x", shared_memory=True)
        return getattr(manager, kind)("x")

    open_(first)
    with pytest.raises(proxyshare.ResourceKindError, match=f"already an? {first}"):
        open_(second)
    assert manager.names() == {"x": first}


def test_the_same_name_reaches_the_same_adder(manager: proxyshare.ShareManager) -> None:
    first, again = manager.adder("items"), manager.adder("items")
    assert first == again
    first.add(2)
    assert again.get() == 2


def test_status_shows_the_adder_its_value_and_slots(manager: proxyshare.ShareManager) -> None:
    adder = manager.adder("items")
    adder.add(41)
    add_in_threads(adder, 1)  # a thread that ended: its slot is free, its count kept
    items = described(manager, "items")
    assert items["kind"] == "adder"
    assert items["value"] == 42
    assert items["slots_in_use"] == 1
    assert items["max_slots"] == A.CAPACITY
    assert manager.names() == {"items": "adder"}


def test_the_status_command_renders_an_adder(manager: proxyshare.ShareManager) -> None:
    from rich.console import Console

    from proxyshare._cli.status_report import StatusReport, render_status

    manager.adder("items").add(7)
    console = Console(record=True, width=200)
    console.print(render_status(StatusReport.from_status(manager.status(), address="here")))
    text = console.export_text()
    assert "items" in text and "adder" in text and "slots_in_use=1" in text


def test_delete_removes_the_file_and_the_adder_stops_working(
    manager: proxyshare.ShareManager,
) -> None:
    adder = manager.adder("items")
    adder.add(5)
    path = adder.path
    assert manager.delete("items")
    assert not os.path.exists(path)
    for use in (adder.add, adder.get, adder.reset):
        with pytest.raises(proxyshare.ResourceNotFoundError, match=r"mgr\.adder\('items'\)"):
            use()
    fresh = manager.adder("items")
    assert fresh.get() == 0


@pytest.mark.timeout(60)
def test_a_worker_holding_a_slot_sees_the_delete(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    adder = manager.adder("items")
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        pool.submit(add_and_report_pid, adder, 1).result(timeout=60)  # the worker owns a slot
        manager.delete("items")
        error = pool.submit(add_and_report_pid, adder, 1).exception(timeout=60)
    assert isinstance(error, proxyshare.ResourceNotFoundError)


def test_shutdown_removes_the_file_and_its_directory(
    own_manager: proxyshare.ShareManager,
) -> None:
    adder = own_manager.adder("items")
    adder.add()
    directory = os.path.dirname(adder.path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(adder.path).st_mode) == 0o600
    close_all_channels()
    own_manager.shutdown()
    wait_until(lambda: not os.path.exists(directory), timeout=10)
    with pytest.raises(proxyshare.ResourceNotFoundError, match="deleted or its server stopped"):
        adder.add()


def test_opened_from_another_host_it_raises_a_clear_error(
    manager: proxyshare.ShareManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxyshare._backends.shm import client

    monkeypatch.setattr(client, "HOST", "not-the-servers-host")
    with pytest.raises(proxyshare.ProxyShareError, match="works on one host only") as info:
        manager.adder("items")
    assert "mgr.counter(name)" in str(info.value)


@pytest.mark.timeout(60)
def test_unpickled_where_the_file_is_gone_it_raises_at_first_use(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    adder = manager.adder("items")
    manager.delete("items")
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        error = pool.submit(call_method, adder, "add").exception(timeout=60)
    assert isinstance(error, proxyshare.ProxyShareError)
