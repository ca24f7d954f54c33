"""The same-host fast path: ``shared_memory=True`` counters and locks."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from tests.integration.shm_workers import (
    guarded_read_modify_write,
    hold_lock_and_fork,
    increment_in_threads,
    lock_state_in_child,
)
from tests.support import call_method, hold_lock_forever, kill_hard, running_manager, wait_until

pytestmark = pytest.mark.matrix

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


@pytest.fixture
def own_manager() -> Iterator[proxyshare.ShareManager]:
    """A manager the test may shut down itself (shutdown twice is harmless)."""
    with running_manager() as mgr:
        yield mgr


# -- exact totals ----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_counter_totals_are_exact_across_pool_workers(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    counter = manager.counter("hits", shared_memory=True)
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(increment_in_threads, counter, 5_000, 1) for _ in range(2)]
        assert sum(f.result(timeout=60) for f in futures) == 10_000
    assert counter.get() == 10_000


@pytest.mark.timeout(120)
def test_counter_totals_are_exact_with_several_threads_per_process(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    counter = manager.counter("hits", shared_memory=True)
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(increment_in_threads, counter, 1_000, 4) for _ in range(2)]
        for f in futures:
            f.result(timeout=60)
    increment_in_threads(counter, 1_000, 2)  # and this process's threads too
    assert counter.get() == 2 * 4 * 1_000 + 2 * 1_000


@pytest.mark.timeout(120)
def test_lock_guards_a_read_modify_write_across_processes_and_threads(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    lock = manager.lock("guard", shared_memory=True)
    counter = manager.counter("total", shared_memory=True)
    with cf.ProcessPoolExecutor(2, mp_context=mp_context) as pool:
        futures = [pool.submit(guarded_read_modify_write, lock, counter, 300, 2) for _ in range(2)]
        for f in futures:
            f.result(timeout=60)
    assert counter.get() == 2 * 2 * 300
    assert not lock.locked()


# -- threads of one process ----------------------------------------------------------


def test_two_threads_of_one_process_exclude_each_other(manager: proxyshare.ShareManager) -> None:
    lock = manager.lock("guard", shared_memory=True)
    seen: dict[str, object] = {}

    def other_thread() -> None:
        seen["nonblocking"] = lock.acquire(blocking=False)
        seen["timeout"] = lock.acquire(timeout=0.05)
        seen["locked"] = lock.locked()
        try:
            lock.release()
        except proxyshare.NotOwnerError as exc:
            seen["release"] = exc

    assert lock.acquire()
    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(30)
    lock.release()
    assert seen["nonblocking"] is False
    assert seen["timeout"] is False
    assert seen["locked"] is True
    assert isinstance(seen["release"], proxyshare.NotOwnerError)


def test_read_modify_write_by_threads_of_one_process_loses_nothing(
    manager: proxyshare.ShareManager,
) -> None:
    lock = manager.lock("guard", shared_memory=True)
    counter = manager.counter("total", shared_memory=True)
    guarded_read_modify_write(lock, counter, 500, threads=4)
    assert counter.get() == 2_000


def test_a_waiting_thread_gets_the_lock_when_it_is_released(
    manager: proxyshare.ShareManager,
) -> None:
    lock = manager.lock("guard", shared_memory=True)
    got: list[bool] = []
    lock.acquire()
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(timeout=30)))
    waiter.start()
    try:
        time.sleep(0.05)  # let it start polling (correctness does not depend on it)
        assert not got
    finally:
        lock.release()
    waiter.join(30)
    assert got == [True]


# -- death -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_lock_is_free_at_once_when_its_holder_is_killed(
    manager: proxyshare.ShareManager,
    mp_context: multiprocessing.context.BaseContext,
    record_property: pytest.RecordProperty,
) -> None:
    lock = manager.lock("guard", shared_memory=True)
    ready = mp_context.Event()
    holder = mp_context.Process(target=hold_lock_forever, args=(lock, ready))
    holder.start()
    try:
        assert ready.wait(30)
        assert lock.locked()
        assert lock.owner()["pid"] == holder.pid  # type: ignore[index]
        assert not lock.acquire(blocking=False)
        killed = time.perf_counter()
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        assert lock.acquire(timeout=1.0)
        freed_after = time.perf_counter() - killed
        record_property("lock_free_after_kill_s", freed_after)
        assert lock.owner()["pid"] == os.getpid()  # type: ignore[index]
        lock.release()
    finally:
        kill_hard(holder)


@pytest.mark.timeout(60)
def test_a_forked_child_does_not_keep_its_parents_lock_alive(
    manager: proxyshare.ShareManager,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    lock = manager.lock("guard", shared_memory=True)
    ready, child_pid = ctx.Event(), ctx.Value("i", 0)
    holder = ctx.Process(target=hold_lock_and_fork, args=(lock, ready, child_pid))
    holder.start()
    try:
        assert ready.wait(30)
        assert lock.locked()
        kill_hard(holder)  # its forked child lives on, with copies of its descriptors
        assert lock.acquire(timeout=5)
        lock.release()
    finally:
        kill_hard(holder)
        if child_pid.value:
            kill_hard(child_pid.value)  # not our child: init reaps it


def test_another_process_neither_holds_nor_releases_our_lock(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    lock = manager.lock("guard", shared_memory=True)
    with lock, cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        locked, acquired, release = pool.submit(lock_state_in_child, lock).result(timeout=60)
    assert (locked, acquired, release) == (True, False, "NotOwnerError")
    assert not lock.locked()


# -- files ----------------------------------------------------------------------------------


def test_files_are_0600_in_a_fresh_0700_directory(manager: proxyshare.ShareManager) -> None:
    counter = manager.counter("hits", shared_memory=True)
    lock = manager.lock("guard", shared_memory=True)
    directory = os.path.dirname(counter.path)  # type: ignore[attr-defined]
    assert os.path.dirname(lock.path) == directory  # type: ignore[attr-defined]
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert os.stat(directory).st_uid == os.getuid()
    for path in (counter.path, lock.path):  # type: ignore[attr-defined]
        mode = os.lstat(path).st_mode
        assert stat.S_ISREG(mode)
        assert stat.S_IMODE(mode) == 0o600
    assert sorted(os.listdir(directory)) == sorted(
        os.path.basename(p)
        for p in (counter.path, lock.path)  # type: ignore[attr-defined]
    )


def test_shutdown_removes_the_files_and_their_directory(
    own_manager: proxyshare.ShareManager,
) -> None:
    counter = own_manager.counter("hits", shared_memory=True)
    lock = own_manager.lock("guard", shared_memory=True)
    lock.acquire()
    directory = os.path.dirname(counter.path)  # type: ignore[attr-defined]
    close_all_channels()
    own_manager.shutdown()
    wait_until(lambda: not os.path.exists(directory), timeout=10)
    with pytest.raises(proxyshare.ResourceNotFoundError, match="deleted or its server stopped"):
        counter.increment()


def test_delete_removes_the_file_and_open_objects_report_it(
    manager: proxyshare.ShareManager,
) -> None:
    counter = manager.counter("hits", shared_memory=True)
    counter.increment()
    path = counter.path  # type: ignore[attr-defined]
    assert manager.delete("hits")
    assert not os.path.exists(path)
    with pytest.raises(proxyshare.ResourceNotFoundError, match="open it again"):
        counter.get()
    fresh = manager.counter("hits", 7, shared_memory=True)
    assert fresh.get() == 7


def test_unpickling_where_the_file_is_gone_reports_it_at_first_use(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    counter = manager.counter("hits", shared_memory=True)
    manager.delete("hits")
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        error = pool.submit(call_method, counter, "increment").exception(timeout=60)
    assert isinstance(error, proxyshare.ProxyShareError)
    if mp_context.get_start_method() == "fork":
        # A forked worker inherits our mapping, where the server marked it deleted.
        assert isinstance(error, proxyshare.ResourceNotFoundError)
        assert "was deleted or its server stopped" in str(error)
    else:
        assert "is gone" in str(error)
        assert "shared_memory=False" in str(error)


# -- errors and status --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("counter", "shm_counter"),
        ("shm_counter", "counter"),
        ("lock", "shm_lock"),
        ("shm_lock", "lock"),
        ("shm_counter", "shm_lock"),
    ],
)
def test_same_name_with_and_without_shared_memory_is_a_kind_error(
    manager: proxyshare.ShareManager, first: str, second: str
) -> None:
    def open_(kind: str) -> object:
        method = getattr(manager, kind.removeprefix("shm_"))
        return method("x", shared_memory=kind.startswith("shm_"))

    open_(first)
    with pytest.raises(proxyshare.ResourceKindError, match=f"already a {first}"):
        open_(second)


def test_counter_overflow_raises_and_leaves_the_value_unchanged(
    manager: proxyshare.ShareManager,
) -> None:
    top = manager.counter("top", INT64_MAX, shared_memory=True)
    with pytest.raises(OverflowError, match="unchanged"):
        top.increment()
    assert top.get() == INT64_MAX
    bottom = manager.counter("bottom", INT64_MIN, shared_memory=True)
    with pytest.raises(OverflowError):
        bottom.decrement()
    assert bottom.get() == INT64_MIN
    with pytest.raises(OverflowError):
        manager.counter("huge", 1 << 63, shared_memory=True)
    assert "huge" not in manager.names()


def test_a_lease_is_refused_for_a_shared_memory_lock(manager: proxyshare.ShareManager) -> None:
    with pytest.raises(ValueError, match="lease"):
        manager.lock("guard", lease=5, shared_memory=True)


def test_status_shows_the_counter_value_and_the_lock_holder(
    manager: proxyshare.ShareManager,
) -> None:
    counter = manager.counter("hits", 41, shared_memory=True)
    counter.increment()
    lock = manager.lock("guard", shared_memory=True)
    resources = {r["name"]: r for r in manager.status()["resources"]}
    assert resources["hits"]["kind"] == "shm_counter"
    assert resources["hits"]["value"] == 42
    assert resources["guard"]["locked"] is False
    assert resources["guard"]["holders"] == []
    with lock:
        before = time.time()
        (holder,) = {r["name"]: r for r in manager.status()["resources"]}["guard"]["holders"]
    assert holder["pid"] == os.getpid()
    assert holder["since"] <= before
    assert isinstance(holder["host"], str) and holder["host"]
    assert manager.names() == {"hits": "shm_counter", "guard": "shm_lock"}


def test_status_ignores_a_dead_holders_record(
    manager: proxyshare.ShareManager,
) -> None:
    lock = manager.lock("guard", shared_memory=True)
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=hold_lock_forever, args=(lock, ready))
    holder.start()
    try:
        assert ready.wait(30)
        (guard,) = manager.status()["resources"]
        assert guard["holders"][0]["pid"] == holder.pid
    finally:
        kill_hard(holder)
    (guard,) = manager.status()["resources"]
    assert guard["locked"] is False
    assert lock.owner() is None
