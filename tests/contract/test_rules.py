"""The contract suite: the same call with the same argument has the same outcome on
every backend -- the same exception class with the same words, or the same result.

Each case runs on every backend that has the resource (``served``: a
ShareManager; ``shm``: ``shared_memory=True`` counters and locks; ``redis``:
the Redis backend; ``aio-served`` and ``aio-redis``: the asyncio client of
each, behind a blocking face) and the outcomes must be equal.  The rules themselves are
written once, in ``proxyshare._rules``; this suite proves every backend uses
them.  Where an error names the backend's own place ("on this server",
"under prefix ..."), only the class is compared.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from tests.support import running_manager

pytestmark = pytest.mark.timeout(60)

Outcome = tuple[str, str]
_names = itertools.count()


class Backend:
    """One way of serving resources, with the kinds it has."""

    def __init__(self, label: str, mgr: Any, kinds: set[str]) -> None:
        self.label = label
        self.mgr = mgr
        self.kinds = kinds

    def counter(self, name: str, **options: Any) -> Any:
        if self.label == "shm":
            return self.mgr.counter(name, shared_memory=True, **options)
        return self.mgr.counter(name, **options)

    def lock(self, name: str, **options: Any) -> Any:
        if self.label == "shm":
            return self.mgr.lock(name, shared_memory=True, **options)
        return self.mgr.lock(name, **options)

    def __getattr__(self, kind: str) -> Callable[..., Any]:
        return getattr(self.mgr, kind)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def backends(request: pytest.FixtureRequest) -> Iterator[list[Backend]]:
    everything = {"counter", "lock", "dict", "queue", "semaphore", "event", "barrier"}
    from proxyshare import aio
    from tests.aio.helpers import connect_redis
    from tests.contract.blocking_aio import LoopThread, blocking_manager

    with contextlib.ExitStack() as stack:
        served = stack.enter_context(running_manager())
        shm = stack.enter_context(running_manager())
        runner = LoopThread()
        stack.callback(runner.close)
        ref = stack.enter_context(running_manager()).server_ref  # data of its own
        aio_served, close = blocking_manager(
            runner, lambda: aio.connect(ref.address, authkey=ref.authkey)
        )
        stack.callback(close)
        found = [
            Backend("served", served, everything),
            Backend("shm", shm, {"counter", "lock"}),
            Backend("aio-served", aio_served, everything),
        ]
        try:
            redis_server = request.getfixturevalue("redis_server")
        except pytest.skip.Exception:
            redis_server = None  # no redis-server here: the other backends still run
        if redis_server is not None:
            from proxyshare._backends.redis import RedisManager
            from tests.integration.redis_workers import flush_prefix

            prefix = f"contract:{uuid.uuid4().hex[:8]}:"
            stack.callback(flush_prefix, redis_server.url, prefix)
            redis_mgr = RedisManager(redis_server.url, prefix=prefix)
            found.append(Backend("redis", redis_mgr, everything - {"barrier"}))
            aio_prefix = f"contract:{uuid.uuid4().hex[:8]}:"
            stack.callback(flush_prefix, redis_server.url, aio_prefix)
            aio_redis, close = blocking_manager(
                runner, lambda: connect_redis(redis_server.url, aio_prefix)
            )
            stack.callback(close)
            found.append(Backend("aio-redis", aio_redis, everything - {"barrier"}))
        yield found


def outcome(call: Callable[[], Any], *, words: bool = True) -> Outcome:
    """What a call did: ("ok", repr(result)) or (error class, message)."""
    try:
        return ("ok", repr(call()))
    except Exception as exc:
        return (type(exc).__name__, str(exc) if words else "")


def same_everywhere(
    backends: list[Backend],
    kind: str,
    case: Callable[[Backend, str], Any],
    *,
    words: bool = True,
) -> Outcome:
    """Run ``case(backend, name)`` on every backend that has ``kind``; all must agree."""
    name = f"r{next(_names)}"
    seen = {
        b.label: outcome(lambda b=b: case(b, name), words=words)
        for b in backends
        if kind in b.kinds
    }
    assert len(set(seen.values())) == 1, seen
    return next(iter(seen.values()))


# -- names --------------------------------------------------------------------------------

BAD_NAMES = ["", None, 5, b"bytes"]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=repr)
@pytest.mark.parametrize("kind", ["counter", "lock", "dict", "queue", "event"])
def test_a_bad_name_is_refused_alike(backends: list[Backend], kind: str, bad: Any) -> None:
    result = same_everywhere(backends, kind, lambda b, _: getattr(b, kind)(bad))
    assert result[0] == "TypeError" and "non-empty str" in result[1]


# -- integers -------------------------------------------------------------------------------

COUNTER_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("increment", ("1",)),
    ("increment", (1.5,)),
    ("increment", (True,)),
    ("decrement", (None,)),
    ("set", ("x",)),
    ("compare_and_set", (0, "x")),
    ("get_and_set", (2.0,)),
]


@pytest.mark.parametrize(("method", "args"), COUNTER_CALLS, ids=lambda v: repr(v))
def test_a_counter_refuses_what_is_not_an_int_alike(
    backends: list[Backend], method: str, args: tuple[Any, ...]
) -> None:
    def case(b: Backend, name: str) -> Any:
        counter = b.counter(name, initial=7)
        try:
            return getattr(counter, method)(*args)
        finally:
            assert counter.get() == 7  # unchanged

    result = same_everywhere(backends, "counter", case)
    assert result[0] == "TypeError" and "must be an int" in result[1]


def test_a_counter_refuses_a_non_int_initial_value_alike(backends: list[Backend]) -> None:
    result = same_everywhere(backends, "counter", lambda b, name: b.counter(name, initial="0"))
    assert result[0] == "TypeError"


def test_a_dict_increment_refuses_a_non_int_step_alike(backends: list[Backend]) -> None:
    result = same_everywhere(backends, "dict", lambda b, name: b.dict(name).increment("k", "1"))
    assert result[0] == "TypeError" and "must be an int" in result[1]


def test_a_dict_increment_refuses_a_non_int_value_alike(backends: list[Backend]) -> None:
    def case(b: Backend, name: str) -> Any:
        d = b.dict(name)
        d["k"] = "text"
        return d.increment("k")

    result = same_everywhere(backends, "dict", case)
    assert result[0] == "TypeError"


# -- timeouts -------------------------------------------------------------------------------

BAD_TIMEOUTS: list[tuple[Any, str]] = [
    (math.nan, "ValueError"),
    (-1.5, "ValueError"),
    (math.inf, "ValueError"),
    ("1", "TypeError"),
    (True, "TypeError"),
]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=lambda v: repr(v))
@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_an_acquire_refuses_a_bad_timeout_alike(
    backends: list[Backend], kind: str, timeout: Any, error: str
) -> None:
    result = same_everywhere(
        backends, kind, lambda b, n: getattr(b, kind)(n).acquire(timeout=timeout)
    )
    assert result[0] == error


@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_a_non_blocking_acquire_refuses_a_timeout_alike(backends: list[Backend], kind: str) -> None:
    result = same_everywhere(
        backends, kind, lambda b, n: getattr(b, kind)(n).acquire(blocking=False, timeout=1)
    )
    assert result[0] == "ValueError" and "non-blocking" in result[1]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=lambda v: repr(v))
def test_waits_refuse_a_bad_timeout_alike(
    backends: list[Backend], timeout: Any, error: str
) -> None:
    assert same_everywhere(backends, "event", lambda b, n: b.event(n).wait(timeout))[0] == error
    assert (
        same_everywhere(backends, "queue", lambda b, n: b.queue(n).get(timeout=timeout))[0] == error
    )
    assert (
        same_everywhere(backends, "barrier", lambda b, n: b.barrier(n, 2).wait(timeout))[0] == error
    )


def test_a_non_blocking_queue_call_ignores_its_timeout_alike(backends: list[Backend]) -> None:
    """As ``queue.Queue``: get(block=False, timeout=-5) is a plain non-blocking get."""
    result = same_everywhere(
        backends, "queue", lambda b, n: b.queue(n).get(block=False, timeout=-5)
    )
    assert result == ("Empty", "")


def test_minus_one_waits_forever_as_in_threading(backends: list[Backend]) -> None:
    def case(b: Backend, name: str) -> Any:
        lock = b.lock(name)
        try:
            return lock.acquire(timeout=-1)
        finally:
            lock.release()

    assert same_everywhere(backends, "lock", case) == ("ok", "True")


# -- leases -------------------------------------------------------------------------------

BAD_LEASES: list[tuple[Any, str]] = [
    (math.nan, "ValueError"),
    (0, "ValueError"),
    (-3, "ValueError"),
    (math.inf, "ValueError"),
    ("5", "TypeError"),
]


@pytest.mark.parametrize(("lease", "error"), BAD_LEASES, ids=lambda v: repr(v))
def test_a_lock_refuses_a_bad_lease_alike(backends: list[Backend], lease: Any, error: str) -> None:
    # The shared-memory lock takes no lease at all: it refuses every value with a ValueError.
    served = [b for b in backends if b.label != "shm"]
    result = same_everywhere(served, "lock", lambda b, n: b.lock(n, lease=lease))
    assert result[0] == error
    shm = [b for b in backends if b.label == "shm"]
    assert same_everywhere(shm, "lock", lambda b, n: b.lock(n, lease=lease))[0] == "ValueError"


# -- sizes --------------------------------------------------------------------------------

SIZES: list[tuple[str, Callable[[Backend, str], Any], str]] = [
    ("semaphore", lambda b, n: b.semaphore(n, 0), "ValueError"),
    ("semaphore", lambda b, n: b.semaphore(n, -2), "ValueError"),
    ("semaphore", lambda b, n: b.semaphore(n, "2"), "TypeError"),
    ("queue", lambda b, n: b.queue(n, maxsize="3"), "TypeError"),
    ("queue", lambda b, n: b.queue(n, maxsize=2.5), "TypeError"),
    ("queue", lambda b, n: b.queue(n).get_many(0), "ValueError"),
    ("queue", lambda b, n: b.queue(n).get_many("2"), "TypeError"),
    ("barrier", lambda b, n: b.barrier(n, 0), "ValueError"),
    ("barrier", lambda b, n: b.barrier(n, "2"), "TypeError"),
]


@pytest.mark.parametrize(
    ("kind", "case", "error"), SIZES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(SIZES)]
)
def test_sizes_are_checked_alike(
    backends: list[Backend], kind: str, case: Callable[[Backend, str], Any], error: str
) -> None:
    assert same_everywhere(backends, kind, case)[0] == error


def test_a_negative_maxsize_means_unbounded_alike(backends: list[Backend]) -> None:
    def case(b: Backend, name: str) -> Any:
        q = b.queue(name, maxsize=-1)
        q.put_many(list(range(10)), block=False)
        return q.qsize()

    assert same_everywhere(backends, "queue", case) == ("ok", "10")


# -- kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"), [("counter", "lock"), ("lock", "counter"), ("counter", "dict")]
)
def test_a_name_used_for_another_kind_is_refused_alike(
    backends: list[Backend], first: str, second: str
) -> None:
    def case(b: Backend, name: str) -> Any:
        getattr(b, first)(name)
        return getattr(b, second)(name)

    with_both = [b for b in backends if {first, second} <= b.kinds]
    result = same_everywhere(with_both, first, case, words=False)
    assert result[0] == "ResourceKindError"


# -- ownership ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_release_without_holding_is_refused_alike(backends: list[Backend], kind: str) -> None:
    result = same_everywhere(
        backends, kind, lambda b, n: getattr(b, kind)(n).release(), words=False
    )
    assert result[0] == "NotOwnerError"


def test_release_by_another_thread_is_refused_alike(backends: list[Backend]) -> None:
    def case(b: Backend, name: str) -> Any:
        lock = b.lock(name)
        assert lock.acquire()
        failure: list[BaseException] = []

        def other() -> None:
            try:
                lock.release()
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        lock.release()
        if failure:
            raise failure[0]

    result = same_everywhere(backends, "lock", case, words=False)
    assert result[0] == "NotOwnerError"


def test_the_not_owner_message_has_one_wording_for_locks(backends: list[Backend]) -> None:
    result = same_everywhere(backends, "lock", lambda b, n: b.lock("same-name").release())
    assert result[0] == "NotOwnerError" and "holds no lock" in result[1]


def test_acquiring_a_held_lock_again_without_a_timeout_is_refused_alike(
    backends: list[Backend],
) -> None:
    def case(b: Backend, name: str) -> Any:
        lock = b.lock(name)
        lock.acquire()
        try:
            return lock.acquire()
        finally:
            lock.release()

    result = same_everywhere(backends, "lock", case)
    assert result[0] == "ProxyShareError" and "not re-entrant" in result[1]


# -- keys -----------------------------------------------------------------------------------


def _subscript(d: Any) -> Any:
    return d["nope"]  # the asyncio dict has no subscript (its ``get`` takes a default)


KEY_CASES: list[tuple[Callable[[Any], Any], Outcome]] = [
    (_subscript, ("KeyError", "'nope'")),
    (lambda d: d.__delitem__("nope"), ("KeyError", "'nope'")),
    (lambda d: d.pop("nope"), ("KeyError", "'nope'")),
    (lambda d: d.pop("nope", 5), ("ok", "5")),
    (lambda d: d.get("nope"), ("ok", "None")),
    (lambda d: "nope" in d, ("ok", "False")),
]


@pytest.mark.parametrize(
    ("call", "expected"), KEY_CASES, ids=[e[0] + str(i) for i, (_, e) in enumerate(KEY_CASES)]
)
def test_missing_keys_behave_alike(
    backends: list[Backend], call: Callable[[Any], Any], expected: Outcome
) -> None:
    if call is _subscript:
        backends = [b for b in backends if not b.label.startswith("aio")]
    assert same_everywhere(backends, "dict", lambda b, n: call(b.dict(n))) == expected


# -- deleted resources and the rest of the queue's rules -------------------------------------


def test_a_deleted_resource_is_not_found_alike(backends: list[Backend]) -> None:
    def case(b: Backend, name: str) -> Any:
        counter = b.counter(name)
        b.mgr.delete(name)
        return counter.increment()

    result = same_everywhere(backends, "counter", case, words=False)
    assert result[0] == "ResourceNotFoundError"


def test_a_closed_queue_refuses_puts_and_says_when_it_is_drained_alike(
    backends: list[Backend],
) -> None:
    def put_after_close(b: Backend, name: str) -> Any:
        q = b.queue(name)
        q.close()
        return q.put(1)

    result = same_everywhere(backends, "queue", put_after_close)
    assert result[0] == "ProxyShareError" and "is closed" in result[1]

    def get_when_drained(b: Backend, name: str) -> Any:
        q = b.queue(name)
        q.put(1)
        q.close()
        return (q.get(), outcome(q.get))

    result = same_everywhere(backends, "queue", get_when_drained)
    assert result[0] == "ok" and "closed and empty" in result[1]


def test_a_full_queue_raises_the_stdlib_full_alike(backends: list[Backend]) -> None:
    def case(b: Backend, name: str) -> Any:
        q = b.queue(name, maxsize=1)
        q.put(1)
        return q.put(2, timeout=0.01)

    assert same_everywhere(backends, "queue", case)[0] == queue.Full.__name__


# -- what differs on purpose ------------------------------------------------------------------


def test_only_the_served_counter_is_unbounded(backends: list[Backend]) -> None:
    big = 1 << 70
    for b in backends:
        name = f"big{next(_names)}"
        got = outcome(lambda b=b, name=name: b.counter(name).increment(big))
        if b.label in ("served", "aio-served"):
            assert got == ("ok", repr(big))
        else:
            assert got[0] == "OverflowError" and "64 bits" in got[1], (b.label, got)


def test_every_backend_of_this_run_took_part(backends: list[Backend]) -> None:
    labels = {b.label for b in backends}
    assert {"served", "shm", "aio-served"} <= labels
    import os

    if os.environ.get("PROXYSHARE_REQUIRE_REDIS") == "1":
        assert {"redis", "aio-redis"} <= labels
    assert isinstance(proxyshare.ProxyShareError("x"), Exception)
