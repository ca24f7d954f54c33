"""Server-side resources driven directly, with fake sessions and plain threads.

No server, no sockets: each test calls the methods the server would call,
from as many threads as it likes, and plays a client's death by flipping
``FakeSession.alive()``.
"""

from __future__ import annotations

import pickle
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxyshare import NotOwnerError, ProxyShareError, ResourceNotFoundError
from proxyshare._server.resources import (
    KINDS,
    BarrierResource,
    CounterResource,
    DictResource,
    EventResource,
    LockResource,
    QueueResource,
    Resource,
    SemaphoreResource,
)
from proxyshare._server.resources.base import WAIT_SLICE, SessionGone, applying_pipeline
from tests.support import wait_until

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(60)]

THREADS = 16
OPS = 2_000


class FakeSession:
    """Stands in for ``_server.Session``: a client that can 'die' on demand."""

    _ids = iter(range(1, 1 << 30))

    def __init__(self, pid: int = 1, host: str = "testhost") -> None:
        self.id = next(FakeSession._ids)
        self.pid = pid
        self.host = host
        self.dead = False
        self.held: set[Resource] = set()
        self.unacked: list[Resource] = []

    def alive(self) -> bool:
        return not self.dead

    def describe(self) -> dict[str, Any]:
        return {"client": id(self), "pid": self.pid, "host": self.host, "thread": "t"}

    def hold(self, resource: Resource) -> None:
        self.held.add(resource)

    def awaits_ack(self, resource: Resource) -> None:
        self.unacked.append(resource)

    def next_request(self) -> None:
        """What the server does when this session's next request arrives."""
        unacked, self.unacked = self.unacked, []
        for resource in unacked:
            resource.ack(self)

    def reply_early(self, result: Any, resource: Resource) -> bool:
        return False  # no connection: the woken waiter returns its result itself

    def die(self, *resources: Resource) -> None:
        """What the server does when the connection drops."""
        self.dead = True
        for resource in resources:
            resource.session_closed(self)


class Call:
    """Run ``fn(*args)`` in a daemon thread; keep its result or exception."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self.value = fn(*args)
        except BaseException as exc:
            self.error = exc

    def done(self) -> bool:
        return not self.thread.is_alive()

    def result(self, timeout: float = 10.0) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"call still blocked after {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value


def run_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run ``fn(i)`` for i in range(n), all started together; return results."""
    start = threading.Barrier(n)

    def body(i: int) -> Any:
        start.wait()
        return fn(i)

    calls = [Call(body, i) for i in range(n)]
    return [c.result(timeout=50) for c in calls]


@pytest.fixture
def s1() -> FakeSession:
    return FakeSession(pid=101)


@pytest.fixture
def s2() -> FakeSession:
    return FakeSession(pid=102)


# -- errors for wrong types: one table for every resource ------------------------

WRONG_TYPES: list[tuple[str, Callable[[FakeSession], Any], str]] = [
    ("counter initial", lambda s: CounterResource("c", initial="1"), "initial must be an int"),
    ("counter add str", lambda s: CounterResource("c").add(s, "1"), "increment(n) must be an int"),
    ("counter add float", lambda s: CounterResource("c").add(s, 1.5), "must be an int"),
    ("counter add bool", lambda s: CounterResource("c").add(s, True), "must be an int"),
    ("counter set", lambda s: CounterResource("c").set(s, None), "set(value) must be an int"),
    ("lock blocking", lambda s: LockResource("l").acquire(s, "yes"), "blocking must be a bool"),
    ("lock timeout", lambda s: LockResource("l").acquire(s, True, "1"), "timeout must be a number"),
    ("dict update", lambda s: DictResource("d").update(s, [1, 2]), "update() needs a dict"),
    ("dict increment n", lambda s: DictResource("d").increment(s, "k", "1"), "must be an int"),
    ("queue maxsize", lambda s: QueueResource("q", maxsize="3"), "maxsize must be an int"),
    ("queue put block", lambda s: QueueResource("q").put(s, 1, "x"), "block must be a bool"),
    ("queue get timeout", lambda s: QueueResource("q").get(s, True, "1"), "timeout must be"),
    ("queue get_many n", lambda s: QueueResource("q").get_many(s, "2"), "max_items must be an int"),
    ("queue put_many", lambda s: QueueResource("q").put_many(s, (1, 2)), "needs a list"),
    ("semaphore value", lambda s: SemaphoreResource("s", value=1.0), "value must be an int"),
    ("semaphore timeout", lambda s: SemaphoreResource("s").acquire(s, True, []), "timeout"),
    ("event timeout", lambda s: EventResource("e").wait(s, "soon"), "timeout must be a number"),
    ("barrier parties", lambda s: BarrierResource("b", parties="2"), "parties must be an int"),
    ("barrier timeout", lambda s: BarrierResource("b", 2).wait(s, b"1"), "timeout must be"),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in WRONG_TYPES], ids=[i for i, _, _ in WRONG_TYPES]
)
def test_wrong_argument_types_raise_type_error_naming_the_argument(
    s1: FakeSession, call: Callable[[FakeSession], Any], message: str
) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        call(s1)


BAD_VALUES: list[tuple[str, Callable[[FakeSession], Any], str]] = [
    ("semaphore of 0", lambda s: SemaphoreResource("s", value=0), "must be >= 1"),
    ("barrier of 0", lambda s: BarrierResource("b", parties=0), "parties must be >= 1"),
    ("lock lease 0", lambda s: LockResource("l", lease=0), "lease must be a positive"),
    ("negative timeout", lambda s: QueueResource("q").get(s, True, -0.5), "non-negative"),
    ("timeout, no block", lambda s: LockResource("l").acquire(s, False, 1), "non-blocking"),
    ("queue timeout -1", lambda s: QueueResource("q").put(s, 1, True, -1), "non-negative"),
    ("get_many 0", lambda s: QueueResource("q").get_many(s, 0), "max_items must be >= 1"),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES]
)
def test_bad_argument_values_raise_value_error(
    s1: FakeSession, call: Callable[[FakeSession], Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(s1)


def test_a_rejected_call_leaves_the_resource_unchanged(s1: FakeSession) -> None:
    counter = CounterResource("c", initial=5)
    with pytest.raises(TypeError):
        counter.add(s1, "1")
    assert counter.add(s1, 1) == 6


# -- counter ---------------------------------------------------------------------


def test_counter_operations(s1: FakeSession) -> None:
    counter = CounterResource("c", initial=10)
    assert counter.add(s1, 5) == 15
    assert counter.sub(s1, 3) == 12
    assert counter.compare_and_set(s1, 11, 0) is False
    assert counter.compare_and_set(s1, 12, 20) is True
    assert counter.get_and_set(s1, 7) == 20
    counter.set(s1, -4)
    assert counter.get(s1) == -4
    assert counter.describe() == {"name": "c", "kind": "counter", "value": -4}


def test_counter_is_exact_under_many_threads(s1: FakeSession) -> None:
    counter = CounterResource("c")

    def work(i: int) -> None:
        for _ in range(OPS):
            counter.add(s1, 1)
            counter.add(s1, 2)
            counter.sub(s1, 2)

    run_threads(THREADS, work)
    assert counter.get(s1) == THREADS * OPS


def test_counter_compare_and_set_loops_are_exact_under_many_threads(s1: FakeSession) -> None:
    counter = CounterResource("c")

    def work(i: int) -> None:
        for _ in range(OPS // 4):
            while True:
                current = counter.get(s1)
                if counter.compare_and_set(s1, current, current + 1):
                    break

    run_threads(THREADS, work)
    assert counter.get(s1) == THREADS * (OPS // 4)


# -- lock ------------------------------------------------------------------------


def test_lock_acquire_release_and_owner(s1: FakeSession, s2: FakeSession) -> None:
    lock = LockResource("l")
    assert lock.acquire(s1) is True
    assert lock.locked(s1) is True
    owner = lock.owner(s2)
    assert owner is not None and owner["pid"] == 101 and owner["host"] == "testhost"
    assert lock.acquire(s2, False) is False
    lock.release(s1)
    assert lock.locked(s1) is False
    assert lock.owner(s1) is None
    assert s1.held == {lock}


def test_lock_release_by_non_holder_raises_not_owner(s1: FakeSession, s2: FakeSession) -> None:
    lock = LockResource("l")
    with pytest.raises(NotOwnerError, match="holds no"):
        lock.release(s1)
    lock.acquire(s1)
    with pytest.raises(NotOwnerError):
        lock.release(s2)
    assert lock.locked(s1)


def test_lock_acquire_times_out_and_leaves_the_wait_list(s1: FakeSession, s2: FakeSession) -> None:
    lock = LockResource("l")
    lock.acquire(s1)
    started = time.monotonic()
    assert lock.acquire(s2, True, 0.2) is False
    assert time.monotonic() - started >= 0.19
    assert not lock.waiters
    assert lock.acquire(s2, True, 0) is False


def test_lock_refuses_to_deadlock_on_itself(s1: FakeSession) -> None:
    lock = LockResource("l")
    lock.acquire(s1)
    with pytest.raises(ProxyShareError, match="not re-entrant"):
        lock.acquire(s1)
    assert lock.acquire(s1, False) is False


def test_lock_mutual_exclusion_under_many_threads() -> None:
    lock = LockResource("l")
    sessions = [FakeSession(pid=i) for i in range(THREADS)]
    total = [0]

    def work(i: int) -> None:
        for _ in range(OPS // 4):
            lock.acquire(sessions[i])
            value = total[0]
            time.sleep(0)  # invite a race if the lock were not exclusive
            total[0] = value + 1
            lock.release(sessions[i])

    run_threads(THREADS, work)
    assert total[0] == THREADS * (OPS // 4)
    assert not lock.locked(sessions[0]) and not lock.waiters


def _queue_up_waiters(
    resource: LockResource, n: int, order: list[int]
) -> tuple[list[FakeSession], list[Call]]:
    """Start ``n`` blocked acquirers one after another, each recording its turn."""
    sessions = [FakeSession(pid=200 + i) for i in range(n)]
    calls = []

    def acquire_then_record(i: int) -> None:
        resource.acquire(sessions[i])
        order.append(i)
        resource.release(sessions[i])

    for i in range(n):
        calls.append(Call(acquire_then_record, i))
        wait_until(lambda i=i: len(resource.waiters) == i + 1)  # type: ignore[misc]
    return sessions, calls


def test_lock_waiters_are_served_first_come_first_served(s1: FakeSession) -> None:
    lock = LockResource("l")
    lock.acquire(s1)
    order: list[int] = []
    _sessions, calls = _queue_up_waiters(lock, 8, order)
    lock.release(s1)
    for call in calls:
        call.result()
    assert order == list(range(8))


def test_semaphore_waiters_are_served_first_come_first_served(s1: FakeSession) -> None:
    sem = SemaphoreResource("s", value=2)
    sem.acquire(s1)
    sem.acquire(s1)
    sessions = [FakeSession(pid=200 + i) for i in range(8)]
    calls = []
    for i, session in enumerate(sessions):
        calls.append(Call(sem.acquire, session))
        wait_until(lambda i=i: len(sem.waiters) == i + 1)  # type: ignore[misc]
    # A release hands its permit to the oldest waiter at once, under the mutex.
    releasers = [s1, s1, *sessions[:6]]
    for i, releaser in enumerate(releasers):
        sem.release(releaser)
        assert sessions[i] in sem.holders
        assert [w.session for w in sem.waiters] == sessions[i + 1 :]
    assert all(call.result() is True for call in calls)


def test_a_release_hands_the_lock_to_the_waiter_so_nobody_barges_in(
    s1: FakeSession, s2: FakeSession
) -> None:
    lock = LockResource("l")
    lock.acquire(s1)
    waiter = Call(lock.acquire, s2)
    wait_until(lambda: lock.waiters)
    lock.release(s1)
    assert lock.acquire(FakeSession(pid=3), False) is False  # s2 already owns it
    assert waiter.result() is True
    assert lock.owner(s1)["pid"] == 102  # type: ignore[index]


def test_lock_is_released_when_holder_session_closes(s1: FakeSession, s2: FakeSession) -> None:
    lock = LockResource("l")
    lock.acquire(s1)
    waiter = Call(lock.acquire, s2, True, 10)
    wait_until(lambda: lock.waiters)
    s1.die(lock)
    assert waiter.result() is True
    assert lock.owner(s1)["pid"] == 102  # type: ignore[index]


def test_lock_waiter_whose_session_dies_leaves_the_wait_list(
    s1: FakeSession, s2: FakeSession
) -> None:
    lock = LockResource("l")
    lock.acquire(s1)
    waiter = Call(lock.acquire, s2)
    wait_until(lambda: lock.waiters)
    s2.dead = True  # the client died; the server has not noticed yet
    with pytest.raises(SessionGone):
        waiter.result(timeout=5)
    assert not lock.waiters
    lock.release(s1)
    assert not lock.locked(s1)


def test_a_grant_to_a_waiter_that_died_is_taken_back(s1: FakeSession, s2: FakeSession) -> None:
    lock = LockResource("l")
    lock.acquire(s1)
    waiter = Call(lock.acquire, s2)
    wait_until(lambda: lock.waiters)
    with lock.mutex:  # die and get the hand-off "at the same time"
        s2.dead = True
        lock.release(s1)
    with pytest.raises(SessionGone):
        waiter.result()
    assert not lock.locked(s1)


def test_lock_lease_expires_and_the_next_waiter_gets_it(s1: FakeSession, s2: FakeSession) -> None:
    lock = LockResource("l", lease=0.3)
    lock.acquire(s1)
    assert lock.acquire(s2, True, 10) is True
    assert lock.owner(s2)["pid"] == 102  # type: ignore[index]
    with pytest.raises(NotOwnerError):
        lock.release(s1)  # its lease ran out


def test_lock_lease_expiry_frees_an_idle_lock(s1: FakeSession) -> None:
    lock = LockResource("l", lease=0.1)
    lock.acquire(s1)
    wait_until(lambda: not lock.locked(s1), timeout=5)
    assert lock.describe()["lease"] == 0.1


# -- semaphore -------------------------------------------------------------------


def test_semaphore_counts_permits(s1: FakeSession, s2: FakeSession) -> None:
    sem = SemaphoreResource("s", value=2)
    assert sem.value(s1) == 2
    assert sem.acquire(s1) and sem.acquire(s1)
    assert sem.value(s1) == 0
    assert sem.acquire(s2, False) is False
    assert sem.acquire(s2, True, 0.05) is False
    sem.release(s1)
    assert sem.value(s1) == 1
    info = sem.describe()
    assert info["value"] == 1 and info["initial"] == 2
    assert [h["pid"] for h in info["holders"]] == [101]


def test_semaphore_release_without_a_permit_raises_not_owner(
    s1: FakeSession, s2: FakeSession
) -> None:
    sem = SemaphoreResource("s", value=3)
    sem.acquire(s1)
    with pytest.raises(NotOwnerError, match=r"semaphore 's'.*holds no permit"):
        sem.release(s2)
    assert sem.value(s1) == 2


def test_semaphore_never_lets_more_than_value_in_under_many_threads() -> None:
    sem = SemaphoreResource("s", value=3)
    sessions = [FakeSession(pid=i) for i in range(THREADS)]
    inside = [0]
    peak = [0]
    guard = threading.Lock()
    passes = [0]

    def work(i: int) -> None:
        for _ in range(100):
            sem.acquire(sessions[i])
            with guard:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0)
            with guard:
                inside[0] -= 1
                passes[0] += 1
            sem.release(sessions[i])

    run_threads(THREADS, work)
    assert passes[0] == THREADS * 100
    assert 1 <= peak[0] <= 3
    assert sem.value(sessions[0]) == 3 and not sem.holders and not sem.waiters


def test_semaphore_permits_of_a_closed_session_come_back(s1: FakeSession, s2: FakeSession) -> None:
    sem = SemaphoreResource("s", value=2)
    sem.acquire(s1)
    sem.acquire(s1)
    waiter = Call(sem.acquire, s2, True, 10)
    wait_until(lambda: sem.waiters)
    s1.die(sem)
    assert waiter.result() is True
    assert sem.value(s2) == 1
    assert [h["pid"] for h in sem.describe()["holders"]] == [102]


def test_semaphore_waiter_whose_session_dies_leaves_the_wait_list(
    s1: FakeSession, s2: FakeSession
) -> None:
    sem = SemaphoreResource("s", value=1)
    sem.acquire(s1)
    waiter = Call(sem.acquire, s2)
    wait_until(lambda: sem.waiters)
    s2.dead = True
    with pytest.raises(SessionGone):
        waiter.result(timeout=5)
    assert not sem.waiters
    sem.release(s1)
    assert sem.value(s1) == 1


# -- dict ------------------------------------------------------------------------


def test_dict_operations(s1: FakeSession) -> None:
    d = DictResource("d")
    d.set(s1, "a", 1)
    d.update(s1, {"b": 2, "c": 3})
    assert d.get(s1, "a") == 1 and d.get_default(s1, "zz", 9) == 9
    assert d.len(s1) == 3 and d.contains(s1, "b") and d.keys(s1) == ["a", "b", "c"]
    assert d.pop(s1, "c") == 3 and d.pop(s1, "c", True, "gone") == "gone"
    assert d.setdefault(s1, "e", []) == []
    d.delete(s1, "e")
    with pytest.raises(KeyError):
        d.get(s1, "e")
    assert d.compare_and_set(s1, "a", 1, 10) is True
    assert d.compare_and_set(s1, "a", 1, 20) is False
    assert d.compare_and_set(s1, "missing", None, 1) is False
    assert d.snapshot(s1) == {"a": 10, "b": 2}
    d.clear(s1)
    assert d.describe()["size"] == 0


def test_dict_increment_of_a_non_int_value_says_which_key(s1: FakeSession) -> None:
    d = DictResource("d")
    d.set(s1, "k", "text")
    with pytest.raises(TypeError, match=r"cannot increment key 'k': its value is not an int"):
        d.increment(s1, "k")
    assert d.get(s1, "k") == "text"


def test_dict_increment_is_exact_under_many_threads(s1: FakeSession) -> None:
    d = DictResource("d")

    def work(i: int) -> None:
        for j in range(OPS):
            d.increment(s1, "total")
            d.increment(s1, j % 4, 2)

    run_threads(THREADS, work)
    assert d.get(s1, "total") == THREADS * OPS
    assert sum(d.get(s1, k) for k in range(4)) == 2 * THREADS * OPS


# -- queue -----------------------------------------------------------------------


def test_queue_is_fifo_and_raises_stdlib_empty_and_full(s1: FakeSession) -> None:
    q = QueueResource("q", maxsize=2)
    q.put(s1, "a")
    q.put(s1, "b", False)
    with pytest.raises(queue.Full):
        q.put(s1, "c", False)
    with pytest.raises(queue.Full):
        q.put(s1, "c", True, 0.05)
    assert q.info(s1) == (2, 2, False)
    assert q.get(s1) == "a" and q.get(s1, False) == "b"
    with pytest.raises(queue.Empty):
        q.get(s1, False)
    with pytest.raises(queue.Empty):
        q.get(s1, True, 0.05)
    assert q.qsize(s1) == 0


def test_queue_ignores_the_timeout_of_a_non_blocking_call_like_the_stdlib(s1: FakeSession) -> None:
    q = QueueResource("q", maxsize=1)
    q.put(s1, 1, False, 5)
    with pytest.raises(queue.Full):
        q.put(s1, 2, False, 5)
    assert q.get(s1, False, 5) == 1
    with pytest.raises(queue.Empty):
        q.get(s1, False, 5)


def test_queue_get_waits_for_a_put(s1: FakeSession, s2: FakeSession) -> None:
    q = QueueResource("q")
    getter = Call(q.get, s1, True, 10)
    wait_until(lambda: q.blocked["get"] == 1)
    q.put(s2, {"x": 1})
    assert getter.result() == {"x": 1}
    assert q.describe()["blocked_getters"] == 0


def test_queue_put_waits_for_room(s1: FakeSession, s2: FakeSession) -> None:
    q = QueueResource("q", maxsize=1)
    q.put(s1, 1)
    putter = Call(q.put, s1, 2, True, 10)
    wait_until(lambda: q.describe()["blocked_putters"] == 1)
    assert q.get(s2) == 1
    putter.result()
    assert q.get(s2) == 2


def test_queue_put_many_and_get_many(s1: FakeSession) -> None:
    q = QueueResource("q")
    q.put_many(s1, list(range(10)))
    q.put_many(s1, [])
    assert q.get_many(s1, 4) == [0, 1, 2, 3]
    assert q.get_many(s1, 100) == [4, 5, 6, 7, 8, 9]
    started = time.monotonic()
    assert q.get_many(s1, 5, 0.1) == []
    assert time.monotonic() - started >= 0.09
    assert q.get_many(s1, 5, 0) == []


def test_queue_get_many_waits_only_while_empty(s1: FakeSession, s2: FakeSession) -> None:
    q = QueueResource("q")
    getter = Call(q.get_many, s1, 10, 10)
    wait_until(lambda: q.blocked["get"] == 1)
    q.put_many(s2, ["a", "b"])
    assert getter.result() == ["a", "b"]


def test_queue_put_many_is_all_or_nothing_on_a_bounded_queue(
    s1: FakeSession, s2: FakeSession
) -> None:
    q = QueueResource("q", maxsize=3)
    q.put(s1, 0)
    q.put(s1, 1)
    with pytest.raises(queue.Full):
        q.put_many(s1, [2, 3], False)
    with pytest.raises(queue.Full):
        q.put_many(s1, [2, 3], True, 0.05)
    assert q.qsize(s1) == 2  # nothing of the batch went in
    putter = Call(q.put_many, s1, [2, 3, 4], True, 10)
    wait_until(lambda: q.blocked["put"] == 1)
    assert q.get(s2) == 0
    assert q.qsize(s2) == 1  # still waiting: 1 + 3 > 3
    assert q.get(s2) == 1
    putter.result()
    assert q.get_many(s2, 10) == [2, 3, 4]


def test_queue_put_many_larger_than_maxsize_goes_into_an_empty_queue(s1: FakeSession) -> None:
    q = QueueResource("q", maxsize=2)
    q.put_many(s1, [1, 2, 3, 4])
    assert q.qsize(s1) == 4
    with pytest.raises(queue.Full):
        q.put_many(s1, [5], False)


def test_closed_queue_refuses_puts_and_drains_then_raises(s1: FakeSession) -> None:
    q = QueueResource("q")
    q.put_many(s1, [1, 2])
    q.close(s1)
    with pytest.raises(ProxyShareError, match="closed"):
        q.put(s1, 3)
    with pytest.raises(ProxyShareError, match="closed"):
        q.put_many(s1, [3])
    assert q.get(s1) == 1
    assert q.get_many(s1, 5) == [2]
    with pytest.raises(ProxyShareError, match="closed and empty"):
        q.get(s1)
    assert q.get_many(s1, 5) == []
    assert q.info(s1) == (0, 0, True)


def test_closing_a_queue_wakes_blocked_getters_and_putters(
    s1: FakeSession, s2: FakeSession
) -> None:
    q = QueueResource("q", maxsize=1)
    empty = QueueResource("e")
    q.put(s1, "x")
    putter = Call(q.put, s1, "y")
    getter = Call(empty.get, s2)
    many = Call(empty.get_many, FakeSession(), 3)
    wait_until(lambda: q.blocked["put"] == 1 and empty.blocked["get"] == 2)
    q.close(s1)
    empty.close(s2)
    with pytest.raises(ProxyShareError, match="closed"):
        putter.result()
    with pytest.raises(ProxyShareError, match="closed and empty"):
        getter.result()
    assert many.result() == []
    assert q.get(s2) == "x"


def test_items_of_a_consumer_that_dies_go_back_to_the_front_in_order(
    s1: FakeSession, s2: FakeSession
) -> None:
    q = QueueResource("q")
    q.put_many(s2, [1, 2, 3, 4, 5])
    assert q.get_many(s1, 2) == [1, 2]
    assert q.get(s2) == 3
    assert q.describe()["in_flight"] == 3 and q.qsize(s1) == 2
    s1.die(q)
    assert q.get_many(FakeSession(), 10) == [1, 2, 4, 5]


def test_the_next_request_acknowledges_what_a_consumer_was_handed(s1: FakeSession) -> None:
    q = QueueResource("q")
    q.put_many(s1, ["a", "b"])
    assert q.get(s1) == "a"
    s1.next_request()
    assert q.get(s1) == "b"  # handed out: in flight until the next request
    s1.next_request()
    s1.die(q)
    assert q.qsize(s1) == 0 and q.describe()["in_flight"] == 0


def test_items_in_a_pipeline_are_one_batch_that_goes_back_together(s1: FakeSession) -> None:
    q = QueueResource("q")
    q.put_many(s1, ["a", "b", "c"])
    with q.mutex:  # as a pipeline holds it
        assert [q.get(s1, False), q.get(s1, False)] == ["a", "b"]
    assert s1.unacked == [q]  # one acknowledgment covers both
    assert q.requeue(s1) == 2
    assert q.get_many(s1, 10) == ["a", "b", "c"]


def test_a_queue_dumps_and_loads_its_items_in_flight_back_in_front(
    s1: FakeSession, s2: FakeSession
) -> None:
    q = QueueResource("q", maxsize=5)
    q.put_many(s1, [1, 2, 3, 4])
    q.get(s1)
    q.get(s2)
    q.close(s1)
    restored = QueueResource.create("q", q.options())
    sessions: dict[int, Any] = {}
    restored.load_state(
        pickle.loads(pickle.dumps(q.dump_state())), lambda sid: sessions.setdefault(sid, sid)
    )
    assert restored.describe()["in_flight"] == 2 and restored.closed
    assert restored.requeue_all() == 2
    assert restored.get_many(s1, 10) == [1, 2, 3, 4]


def test_queue_getter_whose_session_dies_takes_nothing(s1: FakeSession, s2: FakeSession) -> None:
    q = QueueResource("q")
    doomed = Call(q.get, s1)
    wait_until(lambda: q.blocked["get"] == 1)
    s1.dead = True
    with pytest.raises(SessionGone):
        doomed.result(timeout=5)
    q.put_many(s2, ["a", "b"])
    assert q.get_many(s2, 10) == ["a", "b"]


def test_queue_putter_whose_session_dies_puts_nothing(s1: FakeSession, s2: FakeSession) -> None:
    q = QueueResource("q", maxsize=1)
    q.put(s2, "first")
    doomed = Call(q.put, s1, "never")
    wait_until(lambda: q.blocked["put"] == 1)
    s1.dead = True
    with pytest.raises(SessionGone):
        doomed.result(timeout=5)
    assert q.get_many(s2, 10) == ["first"]


def test_queue_delivers_every_item_exactly_once_under_many_threads() -> None:
    q = QueueResource("q", maxsize=50)
    producers, consumers = THREADS // 2, THREADS // 2
    per_producer = OPS
    sessions = [FakeSession(pid=i) for i in range(THREADS)]
    got: list[list[Any]] = [[] for _ in range(consumers)]

    def produce(i: int) -> None:
        s = sessions[i]
        for j in range(0, per_producer, 10):
            if j % 20 == 0:
                q.put_many(s, [(i, j + k) for k in range(10)])
            else:
                for k in range(10):
                    q.put(s, (i, j + k))

    def consume(i: int) -> None:
        s = sessions[producers + i]
        while True:
            batch = q.get_many(s, 1 + i % 5) if i % 2 else _get_or_none(q, s)
            if not batch:
                return
            got[i].extend(batch)

    producing = [Call(produce, i) for i in range(producers)]
    consuming = [Call(consume, i) for i in range(consumers)]
    for call in producing:
        call.result(timeout=50)
    q.close(sessions[0])
    for call in consuming:
        call.result(timeout=50)
    everything = [item for items in got for item in items]
    assert len(everything) == producers * per_producer
    assert set(everything) == {(i, j) for i in range(producers) for j in range(per_producer)}
    for items in got:  # each producer's items arrive in the order it put them
        for i in range(producers):
            mine = [j for (p, j) in items if p == i]
            assert mine == sorted(mine)


def _get_or_none(q: QueueResource, s: FakeSession) -> list[Any]:
    try:
        return [q.get(s)]
    except ProxyShareError:
        return []


# -- event -----------------------------------------------------------------------


def test_event_set_clear_is_set_and_wait(s1: FakeSession) -> None:
    ev = EventResource("e")
    assert ev.is_set(s1) is False
    assert ev.wait(s1, 0.05) is False
    assert ev.wait(s1, 0) is False
    ev.set(s1)
    assert ev.is_set(s1) and ev.wait(s1) is True and ev.wait(s1, 0) is True
    ev.clear(s1)
    assert ev.is_set(s1) is False
    assert ev.describe()["set"] is False


def test_event_set_wakes_every_waiter(s1: FakeSession) -> None:
    ev = EventResource("e")
    waiters = [Call(ev.wait, FakeSession(pid=i), 10) for i in range(THREADS)]
    wait_until(lambda: ev.waiting == THREADS)
    ev.set(s1)
    assert [w.result() for w in waiters] == [True] * THREADS
    assert ev.describe()["waiting"] == 0


def test_event_wait_returns_true_for_a_set_then_clear_pulse(s1: FakeSession) -> None:
    ev = EventResource("e")
    waiter = Call(ev.wait, FakeSession(), 10)
    wait_until(lambda: ev.waiting == 1)
    with ev.mutex:  # set and clear before the waiter can look at the flag
        ev.set(s1)
        ev.clear(s1)
    assert waiter.result() is True


def test_event_waiter_whose_session_dies_is_dropped(s1: FakeSession) -> None:
    ev = EventResource("e")
    waiter = Call(ev.wait, s1)
    wait_until(lambda: ev.waiting == 1)
    s1.dead = True
    with pytest.raises(SessionGone):
        waiter.result(timeout=5)
    assert ev.waiting == 0


# -- barrier ---------------------------------------------------------------------


def test_barrier_releases_all_parties_with_distinct_indices_round_after_round() -> None:
    barrier = BarrierResource("b", parties=THREADS)
    sessions = [FakeSession(pid=i) for i in range(THREADS)]

    def work(i: int) -> list[int]:
        return [barrier.wait(sessions[i], 10) for _ in range(5)]

    results = run_threads(THREADS, work)
    for round_ in range(5):
        assert sorted(r[round_] for r in results) == list(range(THREADS))
    assert barrier.n_waiting(sessions[0]) == 0 and not barrier.broken


def test_barrier_of_one_party_never_waits(s1: FakeSession) -> None:
    assert BarrierResource("b", parties=1).wait(s1) == 0


def test_barrier_timeout_breaks_it_for_everyone(s1: FakeSession, s2: FakeSession) -> None:
    barrier = BarrierResource("b", parties=3)
    patient = Call(barrier.wait, s1)
    wait_until(lambda: barrier.n_waiting(s1) == 1)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(s2, 0.1)
    with pytest.raises(threading.BrokenBarrierError):
        patient.result()
    assert barrier.info(s1) == (3, 0, True)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(s1)  # stays broken until reset
    barrier.reset(s1)
    assert barrier.info(s1) == (3, 0, False)


def test_barrier_abort_breaks_it_for_current_waiters(s1: FakeSession, s2: FakeSession) -> None:
    barrier = BarrierResource("b", parties=3)
    waiters = [Call(barrier.wait, FakeSession(pid=i)) for i in range(2)]
    wait_until(lambda: barrier.n_waiting(s1) == 2)
    barrier.abort(s2)
    for waiter in waiters:
        with pytest.raises(threading.BrokenBarrierError):
            waiter.result()


def test_barrier_reset_breaks_the_current_round_and_makes_it_usable(s1: FakeSession) -> None:
    barrier = BarrierResource("b", parties=2)
    waiter = Call(barrier.wait, s1)
    wait_until(lambda: barrier.n_waiting(s1) == 1)
    barrier.reset(s1)
    with pytest.raises(threading.BrokenBarrierError):
        waiter.result()
    other = Call(barrier.wait, FakeSession())
    wait_until(lambda: barrier.n_waiting(s1) == 1)
    assert barrier.wait(s1, 10) in (0, 1)
    assert other.result() in (0, 1)


def test_barrier_party_whose_session_dies_breaks_it_for_the_others(
    s1: FakeSession, s2: FakeSession
) -> None:
    barrier = BarrierResource("b", parties=3)
    survivor = Call(barrier.wait, s1)
    doomed = Call(barrier.wait, s2)
    wait_until(lambda: barrier.n_waiting(s1) == 2)
    described = barrier.describe()
    assert described["n_waiting"] == 2
    assert sorted(w["pid"] for w in described["waiters"]) == [101, 102]
    s2.dead = True
    with pytest.raises(SessionGone):
        doomed.result(timeout=5)
    with pytest.raises(threading.BrokenBarrierError):
        survivor.result(timeout=5)
    assert barrier.describe()["broken"] is True


def test_barrier_refuses_a_different_party_count_for_the_same_name() -> None:
    barrier = BarrierResource("b", parties=3)
    barrier.check_options({"parties": 3})
    with pytest.raises(ValueError, match="already exists with parties=3, not 4"):
        barrier.check_options({"parties": 4})


def test_broken_barrier_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(threading.BrokenBarrierError(), pickle.HIGHEST_PROTOCOL))
    assert type(error) is threading.BrokenBarrierError
    for exc in (queue.Empty(), queue.Full()):
        assert type(pickle.loads(pickle.dumps(exc))) is type(exc)


# -- every blocking wait: mutex free while parked; dropped on delete ----------------


Blocked = tuple[Resource, Callable[[FakeSession], Any], Callable[[], bool]]


def _blocked_lock() -> Blocked:
    lock = LockResource("l")
    lock.acquire(FakeSession(pid=1))
    return lock, lambda s: lock.acquire(s), lambda: len(lock.waiters) == 1


def _blocked_semaphore() -> Blocked:
    sem = SemaphoreResource("s", value=1)
    sem.acquire(FakeSession(pid=1))
    return sem, lambda s: sem.acquire(s), lambda: len(sem.waiters) == 1


def _blocked_get() -> Blocked:
    q = QueueResource("q")
    return q, lambda s: q.get(s), lambda: q.blocked["get"] == 1


def _blocked_get_many() -> Blocked:
    q = QueueResource("q")
    return q, lambda s: q.get_many(s, 3), lambda: q.blocked["get"] == 1


def _blocked_put() -> Blocked:
    q = QueueResource("q", maxsize=1)
    q.put(FakeSession(), 0)
    return q, lambda s: q.put(s, 1), lambda: q.blocked["put"] == 1


def _blocked_event() -> Blocked:
    ev = EventResource("e")
    return ev, lambda s: ev.wait(s), lambda: ev.waiting == 1


def _blocked_barrier() -> Blocked:
    barrier = BarrierResource("b", parties=2)
    return barrier, lambda s: barrier.wait(s), lambda: len(barrier.round.waiters) == 1


BLOCKING: dict[str, Callable[[], Blocked]] = {
    "lock.acquire": _blocked_lock,
    "semaphore.acquire": _blocked_semaphore,
    "queue.get": _blocked_get,
    "queue.get_many": _blocked_get_many,
    "queue.put": _blocked_put,
    "event.wait": _blocked_event,
    "barrier.wait": _blocked_barrier,
}


@pytest.fixture(params=list(BLOCKING))
def blocked(request: pytest.FixtureRequest) -> Iterator[tuple[Resource, Call, FakeSession]]:
    """A resource with one call parked in a blocking wait."""
    resource, call, parked_yet = BLOCKING[request.param]()
    session = FakeSession(pid=999)
    parked = Call(call, session)
    wait_until(parked_yet)
    yield resource, parked, session
    session.dead = True  # lets the thread go if the test left it waiting
    parked.thread.join(5)


def test_blocking_waits_do_not_hold_the_resource_mutex(
    blocked: tuple[Resource, Call, FakeSession],
) -> None:
    resource, parked, _ = blocked
    for _ in range(5):  # several tries, across the waiter's wake-ups
        assert resource.mutex.acquire(timeout=1.0), "a parked waiter is holding the mutex"
        resource.mutex.release()
        resource.describe()
        time.sleep(WAIT_SLICE / 2)
    assert not parked.done()


def test_a_blocked_caller_whose_client_dies_returns_within_a_wait_slice(
    blocked: tuple[Resource, Call, FakeSession],
) -> None:
    _, parked, session = blocked
    session.dead = True
    started = time.monotonic()
    with pytest.raises(SessionGone):
        parked.result(timeout=5)
    assert time.monotonic() - started < 5


def test_deleting_a_resource_wakes_its_waiters_with_resource_not_found(
    blocked: tuple[Resource, Call, FakeSession],
) -> None:
    resource, parked, _ = blocked
    resource.destroy()
    with pytest.raises(ResourceNotFoundError, match="was deleted while this call was waiting"):
        parked.result(timeout=5)


# -- status -------------------------------------------------------------------------


def test_describe_reports_what_status_needs(s1: FakeSession) -> None:
    q = QueueResource("q", maxsize=5)
    q.put_many(s1, [1, 2, 3])
    sem = SemaphoreResource("s", value=2)
    sem.acquire(s1)
    ev = EventResource("e")
    ev.set(s1)
    barrier = BarrierResource("b", parties=4)
    assert q.describe() == {
        "name": "q",
        "kind": "queue",
        "size": 3,
        "maxsize": 5,
        "closed": False,
        "in_flight": 0,
        "blocked_getters": 0,
        "blocked_putters": 0,
    }
    described = sem.describe()
    assert described["value"] == 1 and described["holders"][0]["pid"] == 101
    assert described["holders"][0]["since"] <= time.time()
    assert ev.describe() == {"name": "e", "kind": "event", "set": True, "waiting": 0}
    assert barrier.describe() == {
        "name": "b",
        "kind": "barrier",
        "parties": 4,
        "n_waiting": 0,
        "waiters": [],
        "broken": False,
    }


def test_every_kind_is_registered() -> None:
    from proxyshare._protocol import KINDS as SERVED

    assert set(SERVED) <= set(KINDS)
    assert set(KINDS) == {
        "shm_counter",
        "shm_lock",
        "adder",
        "counter",
        "lock",
        "dict",
        "queue",
        "semaphore",
        "event",
        "barrier",
    }


def test_put_many_inside_a_pipeline_never_waits(s1: FakeSession) -> None:
    q = QueueResource("q", maxsize=2)
    applying_pipeline(True)  # as the server's pipeline does while it holds the mutexes
    try:
        with q.mutex:
            q.put_many(s1, [1])
            with pytest.raises(queue.Full):
                q.put_many(s1, [2, 3])
    finally:
        applying_pipeline(False)
    assert q.get_many(s1, 10) == [1]


def test_put_many_under_its_own_mutex_outside_a_pipeline_still_waits(
    s1: FakeSession, s2: FakeSession
) -> None:
    """A server with a state dir applies every change under the resource's mutex."""
    q = QueueResource("q", maxsize=2)
    q.put_many(s1, [1, 2])

    def put_under_the_mutex() -> None:
        with q.mutex:
            q.put_many(s1, [3], True, 10)

    putter = Call(put_under_the_mutex)
    wait_until(lambda: q.blocked["put"] == 1)
    assert q.get(s2) == 1
    putter.result()
    assert q.get_many(s2, 10) == [2, 3]


# -- the queue against a model (non-blocking operations, any order) -----------------

QUEUE_OPS = st.one_of(
    st.tuples(st.just("put"), st.integers()),
    st.tuples(st.just("put_many"), st.lists(st.integers(), max_size=5)),
    st.tuples(st.just("get"), st.none()),
    st.tuples(st.just("get_many"), st.integers(min_value=1, max_value=4)),
    st.tuples(st.just("close"), st.none()),
)


@settings(max_examples=300, deadline=None)
@example(maxsize=2, ops=[("put_many", [1, 2, 3, 4]), ("put_many", []), ("put", 5)])
@given(maxsize=st.integers(min_value=0, max_value=4), ops=st.lists(QUEUE_OPS, max_size=30))
def test_queue_matches_a_simple_model(maxsize: int, ops: list[tuple[str, Any]]) -> None:
    s = FakeSession()
    q = QueueResource("q", maxsize=maxsize)
    model: list[int] = []
    closed = False

    def fits(n: int) -> bool:
        return maxsize == 0 or not model or len(model) + n <= maxsize

    for op, arg in ops:
        if op in ("put", "put_many"):
            batch = [arg] if op == "put" else arg
            if closed:
                with pytest.raises(ProxyShareError, match="closed"):
                    q.put(s, arg, False) if op == "put" else q.put_many(s, arg, False)
            elif not fits(len(batch)) and batch:
                with pytest.raises(queue.Full):
                    q.put(s, arg, False) if op == "put" else q.put_many(s, arg, False)
            else:
                q.put(s, arg, False) if op == "put" else q.put_many(s, arg, False)
                model.extend(batch)
        elif op == "get":
            if model:
                assert q.get(s, False) == model.pop(0)
            else:
                with pytest.raises(ProxyShareError if closed else queue.Empty):
                    q.get(s, False)
        elif op == "get_many":
            assert q.get_many(s, arg, 0) == model[:arg]
            del model[:arg]
        else:
            q.close(s)
            closed = True
        assert q.info(s) == (len(model), maxsize, closed)
