"""``proxyshare.ProcessPoolExecutor``: refuses what cannot be shared, loses no exception.

Also: proxies as plain task arguments of loky and Dask executors, and a worker
killed while holding a lock.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import gc
import logging
import multiprocessing
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from typing import Any

import pytest

import proxyshare
from tests.integration import pool_workers as w
from tests.support import loky_safe_logging, wait_until

pytestmark = pytest.mark.matrix


@dataclasses.dataclass
class Settings:
    """A dataclass argument (module level, so it pickles)."""

    name: str
    guard: Any = None


class Slotted:
    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("Unpicklable refuses to be pickled")


MP = multiprocessing.get_context("spawn")

# (id, factory(stack) -> argument, how the message starts, what else it must say)
BAD_ARGUMENTS: list[tuple[str, Callable[[ExitStack], Any], str, list[str]]] = [
    (
        "mp.Value",
        lambda s: MP.Value("i", 0),
        "args[0] is",
        ["multiprocessing.Value", "mgr.counter"],
    ),
    ("mp.Array", lambda s: MP.Array("i", 3), "args[0] is", ["multiprocessing.Array", "mgr.dict"]),
    ("mp.Lock", lambda s: MP.Lock(), "args[0] is", ["multiprocessing.Lock", "mgr.lock"]),
    ("mp.RLock", lambda s: MP.RLock(), "args[0] is", ["multiprocessing.RLock", "mgr.lock"]),
    ("mp.Semaphore", lambda s: MP.Semaphore(2), "args[0] is", ["mgr.semaphore"]),
    ("mp.BoundedSemaphore", lambda s: MP.BoundedSemaphore(2), "args[0] is", ["mgr.semaphore"]),
    ("mp.Condition", lambda s: MP.Condition(), "args[0] is", ["mgr.lock", "mgr.event"]),
    ("mp.Event", lambda s: MP.Event(), "args[0] is", ["multiprocessing.Event", "mgr.event"]),
    ("mp.Barrier", lambda s: MP.Barrier(2), "args[0] is", ["mgr.barrier"]),
    ("mp.Queue", lambda s: MP.Queue(), "args[0] is", ["multiprocessing.Queue", "mgr.queue"]),
    ("threading.Lock", lambda s: threading.Lock(), "args[0] is", ["threading.Lock", "mgr.lock"]),
    ("threading.RLock", lambda s: threading.RLock(), "args[0] is", ["mgr.lock"]),
    ("threading.Condition", lambda s: threading.Condition(), "args[0] is", ["mgr.event"]),
    ("threading.Semaphore", lambda s: threading.Semaphore(), "args[0] is", ["mgr.semaphore"]),
    ("threading.Event", lambda s: threading.Event(), "args[0] is", ["mgr.event"]),
    ("queue.Queue", lambda s: queue.Queue(), "args[0] is", ["mgr.queue"]),
    ("lambda", lambda s: lambda: None, "args[0] is a lambda", ["module level"]),
    ("open file", lambda s: s.enter_context(open(__file__)), "args[0] is an open file", ["path"]),  # noqa: SIM115
    ("socket", lambda s: s.enter_context(socket.socket()), "args[0] is a socket", ["address"]),
    ("generator", lambda s: (i for i in range(3)), "args[0] is a generator", ["list("]),
    ("unpicklable", lambda s: Unpicklable(), "args[0] (", ["refuses to be pickled"]),
    (
        "nested in containers",
        lambda s: [1, {"k": (0, 1, MP.Value("i"))}],
        "args[0][1]['k'][2] is",
        ["sharedctypes.Synchronized", "mgr.counter"],
    ),
    (
        "nested in a dataclass",
        lambda s: Settings("x", guard=threading.Lock()),
        "args[0].guard is",
        ["_thread.lock", "mgr.lock"],
    ),
    (
        "nested in __slots__",
        lambda s: Slotted({"q": MP.Queue()}),
        "args[0].payload['q'] is",
        ["multiprocessing.queues.Queue", "mgr.queue"],
    ),
]


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.mark.parametrize(
    ("factory", "start", "hints"),
    [case[1:] for case in BAD_ARGUMENTS],
    ids=[case[0] for case in BAD_ARGUMENTS],
)
def test_submit_refuses_an_unshareable_argument_at_once(
    stack: ExitStack, factory: Callable[[ExitStack], Any], start: str, hints: list[str]
) -> None:
    argument = factory(stack)
    with (
        proxyshare.ProcessPoolExecutor(1) as pool,
        pytest.raises(proxyshare.UnshareableArgumentError) as info,
    ):
        pool.submit(w.noop, argument)
    message = str(info.value)
    assert message.startswith(start), message
    if start.startswith("args[0] "):  # the argument itself is the culprit: its type is named
        assert type(argument).__qualname__ in message
    for hint in hints:
        assert hint in message
    assert isinstance(info.value, TypeError)


def test_submit_names_a_keyword_argument() -> None:
    with (
        proxyshare.ProcessPoolExecutor(1) as pool,
        pytest.raises(proxyshare.UnshareableArgumentError, match=r"^kwargs\['hits'\] is"),
    ):
        pool.submit(w.noop, 1, hits=MP.Value("i"))


def test_submit_refuses_a_lambda_as_the_function() -> None:
    with (
        proxyshare.ProcessPoolExecutor(1) as pool,
        pytest.raises(proxyshare.UnshareableArgumentError, match=r"^fn is a lambda"),
    ):
        pool.submit(lambda: None)


def test_map_names_the_element_that_cannot_be_sent() -> None:
    with (
        proxyshare.ProcessPoolExecutor(1) as pool,
        pytest.raises(proxyshare.UnshareableArgumentError, match=r"^iterables\[1\]\[2\] is"),
    ):
        list(pool.map(w.noop, [1, 2, 3], [4, 5, threading.Lock()]))


def test_with_the_check_off_the_stdlib_error_lands_in_the_future() -> None:
    with proxyshare.ProcessPoolExecutor(1, check_arguments=False, log_unretrieved=False) as pool:
        future = pool.submit(w.noop, MP.Value("i"))
        error = future.exception(timeout=60)
    assert isinstance(error, RuntimeError) and "inheritance" in str(error)


def test_good_arguments_reach_the_worker(manager: proxyshare.ShareManager) -> None:
    resources = [
        manager.counter("c"),
        manager.lock("l"),
        manager.dict("d"),
        manager.queue("q"),
        manager.semaphore("s"),
        manager.event("e"),
        manager.barrier("b", 2),
    ]
    plain = [1, 2.5, "s", b"b", None, [1, (2, 3)], {"k": {4, 5}}, Settings("x", guard=7)]
    with proxyshare.ProcessPoolExecutor(2) as pool:
        assert pool.submit(w.echo, resources).result(timeout=60) == resources
        assert pool.submit(w.echo, plain).result(timeout=60) == plain
        assert list(pool.map(w.echo, resources, timeout=60)) == resources


def test_stdlib_manager_proxies_pass() -> None:
    with multiprocessing.Manager() as stdlib_manager:
        shared = stdlib_manager.dict()
        with proxyshare.ProcessPoolExecutor(1) as pool:
            pool.submit(w.noop, shared, stdlib_manager.Lock()).result(timeout=60)


@pytest.mark.parametrize("workers", [2, 4])
def test_counter_increments_through_the_checking_pool_are_exact(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext, workers: int
) -> None:
    counter = manager.counter("hits")
    with proxyshare.ProcessPoolExecutor(workers, mp_context=mp_context) as pool:
        futures = [pool.submit(w.increment_many, counter, 10_000) for _ in range(workers)]
        assert sum(f.result(timeout=100) for f in futures) == workers * 10_000
    assert counter.get() == workers * 10_000


# -- initializer / initargs ------------------------------------------------------------


def test_initializer_may_receive_proxies(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    counter, lock = manager.counter("hits"), manager.lock("guard")
    with proxyshare.ProcessPoolExecutor(
        2, mp_context=mp_context, initializer=w.remember, initargs=(counter, lock)
    ) as pool:
        assert sum(pool.map(w.increment_remembered, [500, 500], timeout=60)) == 1000
    assert counter.get() == 1000


def test_initializer_may_still_receive_a_multiprocessing_value(
    mp_context: multiprocessing.context.BaseContext,
) -> None:
    value = mp_context.Value("i", 0)
    with proxyshare.ProcessPoolExecutor(
        2, mp_context=mp_context, initializer=w.remember_value, initargs=(value,)
    ) as pool:
        assert sum(pool.map(w.add_to_remembered_value, [500, 500], timeout=60)) == 1000
    assert value.value == 1000


def test_initargs_refuse_a_threading_lock() -> None:
    with pytest.raises(proxyshare.UnshareableArgumentError, match=r"^initargs\[0\] is"):
        proxyshare.ProcessPoolExecutor(1, initializer=w.remember, initargs=(threading.Lock(), 1))


# -- exceptions nobody retrieved ----------------------------------------------------------


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    caplog.set_level(logging.ERROR, logger="proxyshare")
    return lambda: [r for r in caplog.records if r.name == "proxyshare"]


def _assert_logged_with_remote_traceback(record: logging.LogRecord, message: str) -> None:
    assert record.levelno == logging.ERROR
    assert message in record.getMessage()
    assert "pool_workers.fail(" in record.getMessage()  # names the task
    assert record.exc_info is not None
    exc = record.exc_info[1]
    assert isinstance(exc, ValueError)
    assert "in fail" in str(exc.__cause__)  # the worker's traceback


def test_an_exception_nobody_retrieved_is_logged_at_shutdown(
    errors: Callable[[], list[logging.LogRecord]],
) -> None:
    with proxyshare.ProcessPoolExecutor(1) as pool:
        future = pool.submit(w.fail, "lost at shutdown")
        cf.wait([future], timeout=60)
        assert errors() == []
    (record,) = errors()
    _assert_logged_with_remote_traceback(record, "lost at shutdown")
    del future
    gc.collect()
    assert len(errors()) == 1  # exactly once


def test_an_exception_of_a_dropped_future_is_logged_when_it_is_collected(
    errors: Callable[[], list[logging.LogRecord]],
) -> None:
    with proxyshare.ProcessPoolExecutor(1) as pool:
        pool.submit(w.fail, "dropped")

        def logged_after_collection() -> list[logging.LogRecord]:
            gc.collect()  # CPython frees it at once; other collectors may need a push
            return errors()

        (record,) = wait_until(logged_after_collection, timeout=60)
        _assert_logged_with_remote_traceback(record, "dropped")
    assert len(errors()) == 1


def _by_result(futures: list[cf.Future[Any]]) -> None:
    for future in futures:
        with pytest.raises(ValueError):
            future.result(timeout=60)


def _by_exception(futures: list[cf.Future[Any]]) -> None:
    for future in futures:
        assert isinstance(future.exception(timeout=60), ValueError)


def _by_as_completed(futures: list[cf.Future[Any]]) -> None:
    for future in cf.as_completed(futures, timeout=60):
        with pytest.raises(ValueError):
            future.result()


def _by_wait(futures: list[cf.Future[Any]]) -> None:
    done, _ = cf.wait(futures, timeout=60)
    assert all(isinstance(future.exception(), ValueError) for future in done)


@pytest.mark.parametrize(
    "retrieve",
    [_by_result, _by_exception, _by_as_completed, _by_wait],
    ids=["result", "exception", "as_completed", "wait"],
)
def test_a_retrieved_exception_is_not_logged(
    errors: Callable[[], list[logging.LogRecord]],
    retrieve: Callable[[list[cf.Future[Any]]], None],
) -> None:
    with proxyshare.ProcessPoolExecutor(2) as pool:
        futures = [pool.submit(w.fail, f"seen {i}") for i in range(3)]
        retrieve(futures)
    del futures
    gc.collect()
    assert errors() == []


def test_map_whose_iterator_raised_logs_nothing(
    errors: Callable[[], list[logging.LogRecord]],
) -> None:
    with proxyshare.ProcessPoolExecutor(2) as pool, pytest.raises(ValueError, match="odd"):
        list(pool.map(w.fail_if_odd, range(6), timeout=60))
    gc.collect()
    assert errors() == []


def test_map_nobody_iterated_logs_its_failure_once(
    errors: Callable[[], list[logging.LogRecord]],
) -> None:
    with proxyshare.ProcessPoolExecutor(2) as pool:
        results = pool.map(w.fail_if_odd, range(6))
    (record,) = errors()
    assert "fail_if_odd" in record.getMessage() and "map()" in record.getMessage()
    del results
    gc.collect()
    assert len(errors()) == 1


def test_logging_can_be_turned_off(errors: Callable[[], list[logging.LogRecord]]) -> None:
    with proxyshare.ProcessPoolExecutor(1, log_unretrieved=False) as pool:
        future = pool.submit(w.fail, "quiet")
        pool.submit(w.fail, "quiet, dropped")
        cf.wait([future], timeout=60)
    del future
    gc.collect()
    assert errors() == []


# -- a worker that dies ------------------------------------------------------------------


def test_a_killed_worker_names_its_task_and_leaves_no_lock_held(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    with proxyshare.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        future = pool.submit(w.acquire_then_die, manager.lock("x"))
        with pytest.raises(BrokenProcessPool, match=r"task: .*acquire_then_die\(<proxyshare.Lock"):
            future.result(timeout=60)
    lock = manager.lock("x")
    assert lock.acquire(timeout=2)
    lock.release()


# -- other executors: proxies unchanged ---------------------------------------------------


@pytest.mark.slow  # loky and Dask start their own worker processes, their own way
@pytest.mark.timeout(180)
def test_loky_tasks_increment_a_counter_proxy_exactly(manager: proxyshare.ShareManager) -> None:
    loky = pytest.importorskip("loky")
    counter = manager.counter("hits")
    with loky_safe_logging():
        executor = loky.get_reusable_executor(max_workers=2)
        try:
            futures = [executor.submit(w.increment_many, counter, 10_000) for _ in range(2)]
            assert sum(f.result(timeout=150) for f in futures) == 20_000
        finally:
            executor.shutdown(wait=True, kill_workers=True)
    assert counter.get() == 20_000


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
    )
    try:
        client = distributed.Client(cluster, timeout=120)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@pytest.mark.slow  # loky and Dask start their own worker processes, their own way
@pytest.mark.timeout(300)
def test_dask_submit_increments_a_counter_proxy_exactly(
    dask_client: Any, manager: proxyshare.ShareManager
) -> None:
    counter = manager.counter("hits")
    futures = [dask_client.submit(w.increment_many, counter, 10_000, pure=False) for _ in range(2)]
    assert sum(f.result(timeout=250) for f in futures) == 20_000
    assert counter.get() == 20_000


@pytest.mark.slow  # loky and Dask start their own worker processes, their own way
@pytest.mark.timeout(300)
def test_dask_executor_increments_a_counter_proxy_exactly(
    dask_client: Any, manager: proxyshare.ShareManager
) -> None:
    counter = manager.counter("hits")
    # pure=False: two identical calls are two tasks (Dask would run a pure one once).
    with dask_client.get_executor(pure=False) as executor:
        futures = [executor.submit(w.increment_many, counter, 10_000) for _ in range(2)]
        assert sum(f.result(timeout=250) for f in futures) == 20_000
    assert counter.get() == 20_000
