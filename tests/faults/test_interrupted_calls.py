"""An interrupted call cancels only itself; a stopped server cannot hang a client;
a client that does not read its replies stalls nobody else.

The interruption is real: a SIGALRM handler that raises while the call waits
(as a deadline in user code would), or KeyboardInterrupt from SIGINT.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare import _client
from proxyshare import _protocol as P
from proxyshare._client import Channel, close_all_channels
from tests.faults.conftest import Figures, poll_until
from tests.support import running_manager, stop_hard, wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.matrix]  # differs by Python: see noxfile.py


class Deadline(TimeoutError):
    """The user's own exception; a TimeoutError is an OSError, like a socket error."""


@pytest.fixture
def alarm() -> Iterator[Callable[[float, type[BaseException]], None]]:
    """``alarm(seconds, error)``: raise ``error`` in this thread after ``seconds``."""
    previous = signal.getsignal(signal.SIGALRM)

    def arm(seconds: float, error: type[BaseException] = Deadline) -> None:
        def handler(signum: int, frame: Any) -> None:
            raise error("the caller's own deadline")

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, seconds)

    try:
        yield arm
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _resource(mgr: proxyshare.ShareManager, name: str) -> dict[str, Any]:
    (found,) = [r for r in mgr.status()["resources"] if r["name"] == name]
    return dict(found)


class Held:
    """A resource kept busy by another thread (its own connection), freed on ``free()``."""

    def __init__(self, take: Callable[[], Any], give: Callable[[], Any]) -> None:
        self._taken = threading.Event()
        self._free = threading.Event()

        def hold() -> None:
            take()
            self._taken.set()
            self._free.wait(30)
            give()

        self._thread = threading.Thread(target=hold, daemon=True)
        self._thread.start()
        assert self._taken.wait(10)

    def free(self) -> None:
        self._free.set()
        self._thread.join(10)


# (kind, how to make the wait happen, the call that waits, what undoes the wait's setup)
def _lock_case(mgr: proxyshare.ShareManager) -> tuple[Callable[[], Any], Held]:
    lock = mgr.lock("busy")
    return lock.acquire, Held(lock.acquire, lock.release)


def _semaphore_case(mgr: proxyshare.ShareManager) -> tuple[Callable[[], Any], Held]:
    sem = mgr.semaphore("busy", 1)
    return sem.acquire, Held(sem.acquire, sem.release)


def _queue_get_case(mgr: proxyshare.ShareManager) -> tuple[Callable[[], Any], None]:
    q = mgr.queue("busy")
    return q.get, None


def _queue_get_many_case(mgr: proxyshare.ShareManager) -> tuple[Callable[[], Any], None]:
    q = mgr.queue("busy")
    return (lambda: q.get_many(5)), None


def _queue_put_case(mgr: proxyshare.ShareManager) -> tuple[Callable[[], Any], None]:
    q = mgr.queue("busy", maxsize=1)
    q.put("first")
    return (lambda: q.put("second")), None


def _event_case(mgr: proxyshare.ShareManager) -> tuple[Callable[[], Any], None]:
    return mgr.event("busy").wait, None


def _barrier_case(mgr: proxyshare.ShareManager) -> tuple[Callable[[], Any], None]:
    return mgr.barrier("busy", 2).wait, None


WAITS = {
    "lock.acquire": _lock_case,
    "semaphore.acquire": _semaphore_case,
    "queue.get": _queue_get_case,
    "queue.get_many": _queue_get_many_case,
    "queue.put": _queue_put_case,
    "event.wait": _event_case,
    "barrier.wait": _barrier_case,
}


@pytest.mark.parametrize("error", [Deadline, KeyboardInterrupt], ids=["handler", "ctrl-c"])
@pytest.mark.parametrize("wait", list(WAITS))
def test_an_interrupted_wait_cancels_only_itself_and_the_thread_keeps_its_other_lock(
    manager: proxyshare.ShareManager,
    alarm: Callable[[float, type[BaseException]], None],
    figures: Figures,
    wait: str,
    error: type[BaseException],
) -> None:
    kept = manager.lock("kept")
    assert kept.acquire()
    call, held = WAITS[wait](manager)
    channel = kept._transport.channel()  # type: ignore[attr-defined]
    alarm(0.2, error)
    started = time.monotonic()
    with pytest.raises(error) as raised:
        call()
    assert type(raised.value) is error  # the caller's own exception, unchanged
    elapsed = time.monotonic() - started
    # The same connection, in step, and still the holder of the other lock.
    assert kept._transport.channel() is channel  # type: ignore[attr-defined]
    assert _resource(manager, "kept")["locked"]
    assert kept.owner() is not None and kept.owner()["pid"] == os.getpid()  # type: ignore[index]
    if held is not None:
        waiters = _resource(manager, "busy")["waiters"]
        assert waiters == []  # the cancelled acquire left the FIFO
        held.free()
        # Never granted later: the released lock or permit stays free.
        assert not _resource(manager, "busy").get("locked", False)
        assert _resource(manager, "busy").get("holders", []) == []
    if wait.startswith("queue.get"):
        q = manager.queue("busy")
        q.put("item")
        assert q.get(timeout=5) == "item"  # not taken by the cancelled get
    if wait == "queue.put":
        assert manager.queue("busy").get_many(10) == ["first"]  # nothing added
    kept.release()
    figures.record(f"{error.__name__} during {wait}", "cancelled; other lock kept", elapsed - 0.2)


def test_a_lock_granted_as_the_cancel_crosses_the_reply_is_given_back(
    manager: proxyshare.ShareManager,
) -> None:
    """The grant and the CANCEL cross on the wire: the server undoes the grant."""
    lock = manager.lock("crossing")
    ref = manager.server_ref
    raw = Channel(ref.address, ref.authkey)
    try:
        raw._wire.send_bytes(pickle.dumps((P.LOCK_ACQUIRE.code, "crossing", True, None)))
        raw.seq += 1
        wait_until(lambda: _resource(manager, "crossing")["locked"], timeout=10)
        raw._cancel()  # the grant's reply is on its way, unread
        assert not lock.locked()
    finally:
        raw.close()


def test_items_a_cancelled_get_took_go_back_to_the_front(manager: proxyshare.ShareManager) -> None:
    q = manager.queue("front")
    q.put_many(["a", "b", "c"])
    ref = manager.server_ref
    raw = Channel(ref.address, ref.authkey)
    try:
        raw._wire.send_bytes(pickle.dumps((P.QUEUE_GET_MANY.code, "front", 2, None)))
        raw.seq += 1
        wait_until(lambda: q.qsize() == 1, timeout=10)  # served: two items handed out
        raw._cancel()  # ... and the reply not taken
    finally:
        raw.close()
    assert q.get_many(10) == ["a", "b", "c"]


def test_a_cancel_for_a_request_the_server_never_got_changes_nothing(
    manager: proxyshare.ShareManager,
) -> None:
    lock = manager.lock("mine")
    assert lock.acquire()
    channel = lock._transport.channel()  # type: ignore[attr-defined]
    channel.seq += 1  # as if the next request was interrupted before it went out
    channel._cancel()
    assert lock.locked() and lock.owner()["pid"] == os.getpid()  # type: ignore[index]
    lock.release()


def test_a_cancel_naming_no_request_of_the_session_drops_it(
    manager: proxyshare.ShareManager,
) -> None:
    ref = manager.server_ref
    raw = Channel(ref.address, ref.authkey)
    try:
        raw._wire.send_bytes(pickle.dumps((P.CANCEL.code, None, 99)))
        with pytest.raises((EOFError, ConnectionResetError)):
            raw._wire.recv_view()
    finally:
        raw.close()
    assert manager.counter("still-serving").increment() == 1


# -- a stopped server --------------------------------------------------------------------


@pytest.fixture
def short_deadline(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    close_all_channels()  # channels made from now on use the short deadline
    monkeypatch.setattr(_client, "_CALL_TIMEOUT", 1.0)
    yield 1.0
    close_all_channels()


@pytest.mark.timeout(90)
def test_a_stopped_server_raises_within_the_deadline_instead_of_hanging(
    short_deadline: float, figures: Figures
) -> None:
    with running_manager() as mgr:
        counter, lock = mgr.counter("c"), mgr.lock("l")
        counter.increment()
        assert lock.acquire()  # held here: the other thread's acquire must wait
        outcome: dict[str, Any] = {}
        go = threading.Event()

        def acquire_in_its_own_connection() -> None:
            lock.locked()  # connected before the server stops
            go.wait(30)
            started = time.monotonic()
            try:
                lock.acquire(timeout=1.5)
            except proxyshare.ServerUnavailableError as exc:
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=acquire_in_its_own_connection, daemon=True)
        thread.start()
        wait_until(lambda: len(mgr.status()["clients"]) >= 2)
        pid = mgr._process.pid
        try:
            stop_hard(pid)  # stopped, not just signalled
            go.set()
            started = time.monotonic()
            with pytest.raises(proxyshare.ServerUnavailableError, match="did not answer within"):
                counter.increment()
            plain = time.monotonic() - started
            thread.join(30)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert 0.9 <= plain < 5
        assert "did not answer within" in str(outcome["error"])
        assert 2.4 <= outcome["seconds"] < 8  # its own timeout plus the deadline
        assert counter.get() >= 2  # served again once the server runs, on a new connection
    figures.record("server SIGSTOPped, deadline 1 s", "increment raised", plain)
    figures.record(
        "server SIGSTOPped, deadline 1 s", "acquire(timeout=1.5) raised", outcome["seconds"]
    )


def test_the_call_timeout_comes_from_the_environment() -> None:
    assert _client.call_timeout({}) == 10.0
    assert _client.call_timeout({"PROXYSHARE_CALL_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ValueError, match="PROXYSHARE_CALL_TIMEOUT"):
            _client.call_timeout({"PROXYSHARE_CALL_TIMEOUT": bad})


# -- a client that never reads ---------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_client_that_pipelines_without_reading_stalls_nobody_else(
    manager: proxyshare.ShareManager, figures: Figures
) -> None:
    """It holds a lock, then floods requests whose replies are large and never read."""
    d = manager.dict("big")
    d["v"] = bytes(256 * 1024)
    manager.lock("held")
    ref = manager.server_ref
    raw = Channel(ref.address, ref.authkey)
    try:
        assert raw.call((P.LOCK_ACQUIRE.code, "held", True, None)) is True
        request = pickle.dumps((P.DICT_SNAPSHOT.code, "big"), P.PICKLE_PROTOCOL)
        raw._wire.sock.setblocking(False)
        flooded = 0
        with pytest.raises(BlockingIOError):  # until its own send buffer is full
            for flooded in range(100_000):  # noqa: B007
                raw._wire.sock.send(len(request).to_bytes(4, "big") + request)
        raw._wire.sock.setblocking(True)
        counter = manager.counter("others")
        started = time.monotonic()
        for _ in range(500):
            counter.increment()
        others = time.monotonic() - started
        assert counter.get() == 500
        assert _resource(manager, "held")["locked"]  # the stuck client keeps its lock
        poll_until(lambda: manager.status()["server"]["operations"] > 500, timeout=10)
    finally:
        raw._wire.sock.shutdown(socket.SHUT_RDWR)
        raw.close()
    wait_until(lambda: not _resource(manager, "held")["locked"], timeout=10)
    figures.record(
        f"a client flooded {flooded} unread requests", "500 increments by another client", others
    )
