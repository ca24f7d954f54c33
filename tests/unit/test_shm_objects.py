"""Shared-memory counter and lock objects, in one process (no server needed).

The server-side resources create the files; the client objects are built
on them directly, as ``open_shm_counter``/``open_shm_lock`` would.
"""

from __future__ import annotations

import gc
import os
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare import _rules
from proxyshare._backends.shm import client as _shm
from proxyshare._backends.shm import layout
from proxyshare._backends.shm.client import SharedMemoryCounter, SharedMemoryLock, ShmTransport
from proxyshare._server.resources.shm import DIR_ENV, ShmCounterResource, ShmLockResource
from tests.support import wait_until

pytestmark = pytest.mark.matrix


@pytest.fixture(autouse=True)
def private_directory(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DIR_ENV, str(tmp_path))


@pytest.fixture
def counter_resource() -> Iterator[ShmCounterResource]:
    resource = ShmCounterResource("hits", 0)
    try:
        yield resource
    finally:
        resource.destroy()


@pytest.fixture
def lock_resource() -> Iterator[ShmLockResource]:
    resource = ShmLockResource("guard")
    try:
        yield resource
    finally:
        resource.destroy()


def counter_on(resource: ShmCounterResource, host: str = layout.HOST) -> SharedMemoryCounter:
    handle = _shm._handle("counter", resource.name, resource.path, resource.token, host)
    return SharedMemoryCounter(ShmTransport(handle), resource.name)


def lock_on(resource: ShmLockResource) -> SharedMemoryLock:
    handle = _shm._handle("lock", resource.name, resource.path, resource.token, layout.HOST)
    return SharedMemoryLock(ShmTransport(handle), resource.name)


# -- counter ------------------------------------------------------------------------------


def test_counter_is_a_proxyshare_counter(counter_resource: ShmCounterResource) -> None:
    assert isinstance(counter_on(counter_resource), proxyshare.Counter)


@pytest.mark.parametrize(
    ("method", "args", "result", "value_after"),
    [
        ("increment", (), 11, 11),
        ("increment", (5,), 15, 15),
        ("increment", (-3,), 7, 7),
        ("decrement", (), 9, 9),
        ("decrement", (4,), 6, 6),
        ("get", (), 10, 10),
        ("set", (3,), None, 3),
        ("compare_and_set", (10, 20), True, 20),
        ("compare_and_set", (9, 20), False, 10),
        ("get_and_set", (-1,), 10, -1),
    ],
)
def test_counter_methods_behave_like_the_served_counter(
    counter_resource: ShmCounterResource,
    method: str,
    args: tuple[int, ...],
    result: object,
    value_after: int,
) -> None:
    counter = counter_on(counter_resource)
    counter.set(10)
    assert getattr(counter, method)(*args) == result
    assert counter.value == value_after


def test_value_property_reads_and_assigns(counter_resource: ShmCounterResource) -> None:
    counter = counter_on(counter_resource)
    counter.value = 5
    assert counter.value == 5


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("increment", ("1",)),
        ("increment", (1.0,)),
        ("increment", (True,)),
        ("decrement", (None,)),
        ("set", (1.5,)),
        ("compare_and_set", (0, "1")),
        ("get_and_set", (None,)),
    ],
)
def test_a_non_int_argument_is_a_type_error(
    counter_resource: ShmCounterResource, method: str, args: tuple[object, ...]
) -> None:
    counter = counter_on(counter_resource)
    with pytest.raises(TypeError, match="must be an int"):
        getattr(counter, method)(*args)
    assert counter.get() == 0


@pytest.mark.parametrize(
    ("start", "method", "args"),
    [
        (_rules.INT64_MAX, "increment", ()),
        (_rules.INT64_MIN, "decrement", ()),
        (0, "increment", (1 << 64,)),
        (0, "set", (1 << 63,)),
        (0, "get_and_set", (-(1 << 63) - 1,)),
        (0, "compare_and_set", (0, 1 << 70)),
    ],
)
def test_overflow_is_an_overflow_error_and_leaves_the_value_unchanged(
    counter_resource: ShmCounterResource, start: int, method: str, args: tuple[int, ...]
) -> None:
    counter = counter_on(counter_resource)
    counter.set(start)
    with pytest.raises(OverflowError):
        getattr(counter, method)(*args)
    assert counter.get() == start


def test_the_64_bit_limits_themselves_are_values(counter_resource: ShmCounterResource) -> None:
    counter = counter_on(counter_resource)
    counter.set(_rules.INT64_MAX - 1)
    assert counter.increment() == _rules.INT64_MAX
    counter.set(_rules.INT64_MIN + 1)
    assert counter.decrement() == _rules.INT64_MIN


def test_a_pickled_counter_shares_the_value(counter_resource: ShmCounterResource) -> None:
    counter = counter_on(counter_resource)
    copy = pickle.loads(pickle.dumps(counter))
    copy.increment(2)
    assert counter.get() == 2
    assert copy == counter


def test_unpickling_does_not_touch_the_file() -> None:
    handle = _shm._Handle("counter", "hits", "/nonexistent/counter-x", b"t" * 16, layout.HOST)
    data = pickle.dumps(SharedMemoryCounter(ShmTransport(handle), "hits"))
    counter = pickle.loads(data)  # fine: a pool worker must not die while unpickling
    with pytest.raises(proxyshare.ProxyShareError, match=r"is gone.*shared_memory=False"):
        counter.get()


def test_a_counter_from_another_host_says_to_use_the_served_counter(
    counter_resource: ShmCounterResource,
) -> None:
    counter = counter_on(counter_resource, host="elsewhere.example")
    with pytest.raises(proxyshare.ProxyShareError) as info:
        counter.increment()
    message = str(info.value)
    assert "'elsewhere.example'" in message
    assert "one host only" in message
    assert "mgr.counter('hits')" in message and "shared_memory=False" in message


def test_a_replaced_file_is_refused(counter_resource: ShmCounterResource) -> None:
    handle = _shm._Handle("counter", "hits", counter_resource.path, b"x" * 16, layout.HOST)
    with pytest.raises(proxyshare.ProxyShareError, match="was replaced"):
        SharedMemoryCounter(ShmTransport(handle), "hits").get()


def test_a_closed_resource_is_reported_as_not_found() -> None:
    resource = ShmCounterResource("hits", 0)
    counter = counter_on(resource)
    counter.increment()
    resource.destroy()
    with pytest.raises(proxyshare.ResourceNotFoundError, match="deleted or its server stopped"):
        counter.increment()


def test_describe_shows_the_value(counter_resource: ShmCounterResource) -> None:
    counter_on(counter_resource).increment(3)
    described = counter_resource.describe()
    assert described["value"] == 3
    assert described["kind"] == "shm_counter"
    assert described["path"] == counter_resource.path


# -- lock ----------------------------------------------------------------------------------


def test_lock_is_a_proxyshare_lock(lock_resource: ShmLockResource) -> None:
    assert isinstance(lock_on(lock_resource), proxyshare.Lock)


def test_lock_acquire_release_owner(lock_resource: ShmLockResource) -> None:
    lock = lock_on(lock_resource)
    assert not lock.locked()
    assert lock.owner() is None
    assert lock.acquire()
    assert lock.locked()
    owner = lock.owner()
    assert owner is not None
    assert (owner["pid"], owner["host"]) == (os.getpid(), layout.HOST)
    lock.release()
    assert not lock.locked()
    assert lock.owner() is None


def test_lock_works_as_a_context_manager(lock_resource: ShmLockResource) -> None:
    lock = lock_on(lock_resource)
    with lock as acquired:
        assert acquired is True
        assert lock.locked()
    assert not lock.locked()


def test_release_without_holding_is_not_owner_error(lock_resource: ShmLockResource) -> None:
    with pytest.raises(proxyshare.NotOwnerError, match="holds no lock"):
        lock_on(lock_resource).release()


def test_acquiring_twice_in_one_thread_refuses_to_deadlock(lock_resource: ShmLockResource) -> None:
    lock = lock_on(lock_resource)
    with lock:
        with pytest.raises(proxyshare.ProxyShareError, match="not re-entrant"):
            lock.acquire()
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(timeout=0.01) is False
        assert lock.locked()
    assert not lock.locked()


def test_two_objects_for_one_lock_share_ownership_in_a_thread(
    lock_resource: ShmLockResource,
) -> None:
    first, second = lock_on(lock_resource), pickle.loads(pickle.dumps(lock_on(lock_resource)))
    first.acquire()
    second.release()  # owned by the thread, whichever object took it (as served locks)
    assert not first.locked()


def test_a_lock_taken_through_a_temporary_object_stays_taken(
    lock_resource: ShmLockResource,
) -> None:
    lock_on(lock_resource).acquire()
    gc.collect()
    assert lock_on(lock_resource).locked()
    lock_on(lock_resource).release()
    assert not lock_on(lock_resource).locked()


def test_a_thread_that_ends_holding_the_lock_releases_it(lock_resource: ShmLockResource) -> None:
    lock = lock_on(lock_resource)
    holder = threading.Thread(target=lock.acquire)
    holder.start()
    holder.join(30)
    wait_until(lambda: lock.acquire(blocking=False))
    lock.release()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"blocking": False, "timeout": 1}, ValueError),
        ({"timeout": -1.5}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"blocking": "yes"}, TypeError),
    ],
)
def test_bad_acquire_arguments_are_refused(
    lock_resource: ShmLockResource, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        lock_on(lock_resource).acquire(**kwargs)


def test_acquire_with_a_timeout_gives_up_in_time(lock_resource: ShmLockResource) -> None:
    lock = lock_on(lock_resource)
    results: list[bool] = []
    lock.acquire()
    other = threading.Thread(target=lambda: results.append(lock.acquire(timeout=0.05)))
    other.start()
    other.join(30)
    lock.release()
    assert results == [False]


def test_a_dead_holders_record_is_ignored_and_cleared(lock_resource: ShmLockResource) -> None:
    # What a killed holder leaves behind: a record, no kernel lock, maybe an odd seq.
    layout.RECORD.pack_into(lock_resource.mm, layout.OFF_RECORD, 7, 999_999, 1.0, b"ghost")
    lock = lock_on(lock_resource)
    assert not lock.locked()
    assert lock.owner() is None
    assert lock_resource.describe()["holders"] == []
    with lock:
        owner = lock.owner()
        assert owner is not None and owner["pid"] == os.getpid()
    seq = layout.SEQ.unpack_from(lock_resource.mm, layout.OFF_RECORD)[0]
    assert seq % 2 == 0


def test_describe_shows_the_holder(lock_resource: ShmLockResource) -> None:
    lock = lock_on(lock_resource)
    assert lock_resource.describe()["locked"] is False
    with lock:
        described = lock_resource.describe()
        assert described["locked"] is True
        (holder,) = described["holders"]
        assert holder["pid"] == os.getpid()
    assert lock_resource.describe()["holders"] == []


def test_a_deleted_lock_cannot_be_acquired() -> None:
    resource = ShmLockResource("guard")
    lock = lock_on(resource)
    lock.acquire()
    lock.release()
    resource.destroy()
    with pytest.raises(proxyshare.ResourceNotFoundError):
        lock.acquire()


# -- files ---------------------------------------------------------------------------------


def test_files_go_in_a_private_directory_removed_with_the_last_file(tmp_path: Any) -> None:
    first, second = ShmCounterResource("a", 0), ShmLockResource("b")
    directory = os.path.dirname(first.path)
    assert os.path.dirname(directory) == str(tmp_path)
    assert os.path.dirname(second.path) == directory
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.stat(first.path).st_mode & 0o777 == 0o600
    first.destroy()
    assert os.path.isdir(directory)
    second.destroy()
    assert not os.path.exists(directory)
    assert os.listdir(tmp_path) == []


def test_closing_twice_is_harmless(tmp_path: Any) -> None:
    resource = ShmCounterResource("a", 0)
    resource.destroy()
    resource.destroy()
    assert os.listdir(tmp_path) == []


def test_an_initial_value_beyond_64_bits_is_refused_by_the_server() -> None:
    with pytest.raises(OverflowError, match="64 bits"):
        ShmCounterResource("a", 1 << 63)
