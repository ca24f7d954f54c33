"""The adder's objects in one process (no server): the file, slots, types, reset.

The server-side resource makes the file; the client object is built on it
directly, as ``open_adder`` would.  Processes, pools and kills are in
``tests/integration/test_adder.py``.
"""

from __future__ import annotations

import enum
import gc
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare import _protocol as P
from proxyshare._backends.shm import adder_layout as A
from proxyshare._backends.shm import client as _shm
from proxyshare._backends.shm import layout
from proxyshare._backends.shm.adder import Adder, AdderHandle
from proxyshare._backends.shm.client import ShmTransport
from proxyshare._server.resources.adder import AdderResource
from proxyshare._server.resources.shm import DIR_ENV
from tests.support import released, wait_until

INT64_MAX = (1 << 63) - 1

pytestmark = pytest.mark.skipif(not A.available(), reason="needs Linux OFD locks")


@pytest.fixture(autouse=True)
def private_directory(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DIR_ENV, str(tmp_path))


@pytest.fixture
def resource() -> Iterator[AdderResource]:
    made = AdderResource("items")
    try:
        yield made
    finally:
        made.destroy()


@pytest.fixture
def small() -> Iterator[AdderResource]:
    made = AdderResource("small", slots=2)
    try:
        yield made
    finally:
        made.destroy()


def adder_on(resource: AdderResource, host: str = layout.HOST) -> Adder:
    handle = _shm._handle("adder", resource.name, resource.path, resource.token, host, AdderHandle)
    return Adder(ShmTransport(handle), resource.name)


def in_thread(body: Callable[[], Any]) -> Any:
    """Run ``body`` in a new thread (which then ends); return its result or raise its error."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = body()
        except BaseException as exc:  # handed to the caller
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    if "error" in out:
        raise out["error"]
    return out.get("result")


# -- the API -------------------------------------------------------------------------------


def test_add_returns_nothing_and_get_value_and_reset_read_the_total(
    resource: AdderResource,
) -> None:
    adder = adder_on(resource)
    assert adder.get() == 0
    assert adder.add() is None
    assert adder.add(41) is None
    assert adder.get() == adder.value == 42
    assert adder.reset() == 42
    assert adder.get() == 0
    adder.add(-3)
    assert adder.value == -3
    assert isinstance(adder, proxyshare.Adder)


class Size(enum.IntEnum):
    BIG = 7


@pytest.mark.parametrize(
    ("n", "error", "fragment"),
    [
        ("1", TypeError, "add\\(n\\) must be an int, not str"),
        (1.5, TypeError, "not float"),
        (True, TypeError, "not bool"),
        (None, TypeError, "not NoneType"),
        (1 << 63, OverflowError, "does not fit in 64 bits"),
        (-(1 << 64), OverflowError, "does not fit in 64 bits"),
    ],
)
def test_a_bad_add_raises_and_leaves_the_value_unchanged(
    resource: AdderResource, n: object, error: type[Exception], fragment: str
) -> None:
    adder = adder_on(resource)
    for first_in_thread in (True, False):  # the claiming path, then the fast path
        if not first_in_thread:
            adder.add(5)
        before = adder.get()
        with pytest.raises(error, match=fragment):
            adder.add(n)  # type: ignore[arg-type]
        assert adder.get() == before


def test_an_int_subclass_is_added_as_an_int(resource: AdderResource) -> None:
    adder = adder_on(resource)
    adder.add(Size.BIG)
    adder.add(Size.BIG)
    assert adder.get() == 14


def test_an_add_that_would_overflow_the_slot_raises_and_changes_nothing(
    resource: AdderResource,
) -> None:
    adder = adder_on(resource)
    adder.add(INT64_MAX)
    with pytest.raises(OverflowError, match=r"slot would overflow.*unchanged"):
        adder.add(1)
    assert adder.get() == INT64_MAX
    adder.add(-1)  # still usable
    assert adder.get() == INT64_MAX - 1


def test_the_64_bit_limit_is_on_the_slots_new_value_on_every_path(
    resource: AdderResource,
) -> None:
    adder = adder_on(resource)
    adder.add(5)
    adder.add(-(1 << 63) - 1)  # n alone would not fit; the slot's new value does
    assert adder.get() == 5 - (1 << 63) - 1
    with pytest.raises(OverflowError, match="0 - 9223372036854775809 does not fit"):
        in_thread(lambda: adder.add(-(1 << 63) - 1))  # a fresh slot: its new value would not
    assert adder.get() == 5 - (1 << 63) - 1


def test_the_total_is_not_bounded_by_64_bits(resource: AdderResource) -> None:
    adder = adder_on(resource)
    adder.add(INT64_MAX)
    in_thread(lambda: adder.add(INT64_MAX))  # another slot
    assert adder.get() == 2 * INT64_MAX
    assert adder.reset() == 2 * INT64_MAX
    assert adder.get() == 0


# -- slots: threads, reuse, exhaustion -----------------------------------------------------


def test_each_thread_adds_to_its_own_slot(resource: AdderResource) -> None:
    adder = adder_on(resource)
    threads, n = 4, 5_000
    start, finished, leave = (threading.Barrier(threads + 1) for _ in range(3))

    def body() -> None:
        start.wait(30)
        for _ in range(n):
            adder.add()
        finished.wait(30)
        leave.wait(30)

    workers = [threading.Thread(target=body) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        start.wait(30)
        finished.wait(30)
        assert resource.describe()["slots_in_use"] == threads
        assert adder.get() == threads * n
    finally:
        leave.wait(30)
        for worker in workers:
            worker.join(60)


def test_a_thread_that_ends_frees_its_slot_and_its_counts_stay(resource: AdderResource) -> None:
    adder = adder_on(resource)
    in_thread(lambda: adder.add(10))
    gc.collect()
    wait_until(lambda: resource.describe()["slots_in_use"] == 0)
    in_thread(lambda: adder.add(5))  # reuses the freed slot
    assert resource.describe()["slots"] == 1
    assert adder.get() == 15


def test_when_every_slot_is_held_an_add_raises_a_clear_error(small: AdderResource) -> None:
    adder = adder_on(small)
    holding, stop = threading.Barrier(3), threading.Event()

    def hold() -> None:
        adder.add(1)
        holding.wait(30)
        stop.wait(30)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    with released(stop):
        for holder in holders:
            holder.start()
        holding.wait(30)
        assert small.describe()["slots_in_use"] == 2
        with pytest.raises(proxyshare.ProxyShareError, match="no free slot: all 2 are held"):
            adder.add(100)
        assert adder.get() == 2
    for holder in holders:
        holder.join(30)
    gc.collect()
    adder.add(100)  # a slot came back when its thread ended
    assert adder.get() == 102
    assert small.describe()["slots"] == 2


def test_status_shows_value_and_slots(resource: AdderResource) -> None:
    adder = adder_on(resource)
    adder.add(7)
    described = resource.describe()
    assert described["kind"] == "adder"
    assert described["value"] == 7
    assert described["slots_in_use"] == 1
    assert described["slots"] == 1
    assert described["max_slots"] == A.CAPACITY
    assert described["path"] == resource.path


def test_the_file_is_sparse_and_grows_by_pages_of_claimed_slots(resource: AdderResource) -> None:
    size = os.stat(resource.path).st_size
    assert size == A.file_size(A.CAPACITY)
    adder = adder_on(resource)
    adder.add()
    assert os.stat(resource.path).st_blocks * 512 <= 4 * 4096  # a header page and a slot page


# -- reset ---------------------------------------------------------------------------------


def test_reset_while_threads_add_loses_nothing(resource: AdderResource) -> None:
    adder = adder_on(resource)
    added = [0, 0, 0]
    stop = threading.Event()

    def body(i: int) -> None:
        while not stop.is_set():
            adder.add()
            added[i] += 1

    workers = [threading.Thread(target=body, args=(i,)) for i in range(len(added))]
    taken = 0
    with released(stop):
        for worker in workers:
            worker.start()
        wait_until(lambda: all(added), timeout=30)  # every thread is adding ...
        for _ in range(200):  # ... while these resets run
            taken += adder.reset()
        stop.set()
        for worker in workers:
            worker.join(60)
    assert taken + adder.get() == sum(added)


def test_reset_is_serialised_with_other_resets(resource: AdderResource) -> None:
    adder = adder_on(resource)
    adder.add(1_000)
    taken: list[int] = []
    lock = threading.Lock()

    def body() -> None:
        for _ in range(200):
            value = adder.reset()
            with lock:
                taken.append(value)

    workers = [threading.Thread(target=body) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert sum(taken) == 1_000
    assert adder.get() == 0


# -- pickling, identity, other hosts, the table -------------------------------------------


def test_an_adder_pickles_as_its_file_and_compares_equal(resource: AdderResource) -> None:
    adder = adder_on(resource)
    again = pickle.loads(pickle.dumps(adder))
    assert again == adder and hash(again) == hash(adder)
    assert type(again) is Adder
    again.add(3)
    assert adder.get() == 3
    assert repr(adder) == f"<proxyshare.Adder 'items' at shared memory {resource.path}>"


def test_on_another_host_the_first_use_raises_a_clear_error(resource: AdderResource) -> None:
    adder = adder_on(resource, host="elsewhere.example")
    for use in (adder.add, adder.get, adder.reset):
        with pytest.raises(proxyshare.ProxyShareError, match=r"host 'elsewhere\.example'") as info:
            use()
        assert "mgr.counter(name)" in str(info.value)


def test_every_adder_operation_of_the_table_runs_through_the_transport(
    resource: AdderResource,
) -> None:
    transport = adder_on(resource)._transport
    assert [op.method for op in P.ops_of("adder")] == ["add", "get", "reset"]
    assert transport.call(P.ADDER_ADD, "items", 4) is None
    assert transport.call(P.ADDER_GET, "items") == 4
    assert transport.call(P.ADDER_RESET, "items") == 4
    with pytest.raises(proxyshare.ProxyShareError, match="not available on shared-memory adder"):
        transport.call(P.COUNTER_ADD, "items", 1)


def test_the_served_operations_refuse_what_runs_in_the_caller(resource: AdderResource) -> None:
    adder_on(resource).add(2)
    assert resource.get(None) == 2  # type: ignore[arg-type]
    for method in ("add", "reset"):
        with pytest.raises(proxyshare.ProxyShareError, match="runs in the calling process"):
            getattr(resource, method)(None)


@pytest.mark.parametrize("slots", [0, -1, A.MAX_CAPACITY + 1])
def test_a_file_needs_a_sensible_number_of_slots(slots: int) -> None:
    with pytest.raises(ValueError, match="slots must be between"):
        AdderResource("bad", slots=slots)


def test_delete_marks_every_slot_so_owners_stop(resource: AdderResource) -> None:
    adder = adder_on(resource)
    adder.add(1)
    other = AdderResource("other")
    try:
        in_thread(lambda: adder_on(other).add(1))
    finally:
        other.destroy()
    resource.destroy()
    for use in (adder.add, adder.get, adder.reset):
        with pytest.raises(proxyshare.ResourceNotFoundError, match=r"open it again with mgr.adder"):
            use()


def test_the_redis_backend_refuses_an_adder_clearly() -> None:
    pytest.importorskip("redis")
    from proxyshare._backends.redis import RedisManager

    manager = RedisManager("redis://127.0.0.1:1/0", check=False)
    with pytest.raises(proxyshare.ProxyShareError, match="same host only, like shared_memory"):
        manager.adder("items")
