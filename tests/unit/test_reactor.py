"""The server's reactor loop and its elastic worker pool, on plain socket pairs.

``Reactor.call_at`` and ``Reactor.detach`` are for the loop thread only, so
the tests call them from inside ``on_ready``, ``on_error`` or a timer, as the
server does.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from proxyshare._server import reactor as _reactor
from proxyshare._server.reactor import Reactor, Workers
from proxyshare._wire import SPIN_ENV
from tests.support import released, wait_until

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(30)]

SERVER_LOGGER = "proxyshare.server"


class Loop:
    """A started reactor whose callbacks record what they were called with.

    ``handlers[owner]`` replaces the default ``on_ready`` behaviour (read what
    arrived, record the owner) for that owner.
    """

    def __init__(self, poller: Callable[[], Any] | None = None) -> None:
        self.ready: list[Any] = []  # owners, in call order
        self.errors: list[Any] = []  # owners passed to on_error
        self.socks: dict[Any, socket.socket] = {}  # owner -> the watched end
        self.handlers: dict[Any, Callable[[Any], None]] = {}
        self.on_error_hook: Callable[[Any], None] | None = None
        self.reactor = Reactor(self._on_ready, self._on_error, poller)

    def _on_ready(self, owner: Any) -> None:
        handler = self.handlers.get(owner)
        if handler is not None:
            handler(owner)
            return
        self.socks[owner].recv(4096)  # level-triggered: consume, or be called again
        self.ready.append(owner)

    def _on_error(self, owner: Any) -> None:
        self.errors.append(owner)
        if self.on_error_hook is not None:
            self.on_error_hook(owner)

    def watch(self, owner: Any, sock: socket.socket) -> bool:
        self.socks[owner] = sock
        return self.reactor.attach(sock.fileno(), owner)

    def count(self, owner: Any) -> int:
        return self.ready.count(owner)


@pytest.fixture(
    params=[("default", None), ("0", None), ("default", _reactor._Poll)],
    ids=["polling", "no-polling", "poll(2)-backend"],
)
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    """A running reactor: poll-before-sleep on and off, and the macOS/BSD poll(2) backend."""
    spin, poller = request.param
    if spin == "default":
        monkeypatch.delenv(SPIN_ENV, raising=False)
    else:
        monkeypatch.setenv(SPIN_ENV, spin)  # read when the loop starts
    harness = Loop(poller)
    harness.reactor.start()
    try:
        yield harness
    finally:
        harness.reactor.close()


@pytest.fixture
def pairs() -> Iterator[Callable[[], tuple[socket.socket, socket.socket]]]:
    """Make socket pairs; all closed after the test (after the loop has stopped)."""
    made: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    try:
        yield make
    finally:
        for sock in made:
            sock.close()


# -- readiness -----------------------------------------------------------------------


def test_on_ready_gets_the_owner_each_time_its_peer_writes(
    loop: Loop, pairs: Callable[[], tuple[socket.socket, socket.socket]]
) -> None:
    watched, peer = pairs()
    other_watched, other_peer = pairs()
    assert loop.watch("a", watched) is True
    assert loop.watch("b", other_watched) is True
    for n in range(1, 4):
        peer.send(b"x")
        wait_until(lambda n=n: loop.count("a") == n)
    other_peer.send(b"y")
    wait_until(lambda: loop.count("b") == 1)
    assert loop.ready == ["a", "a", "a", "b"]
    assert loop.errors == []


def test_a_detach_from_inside_on_ready_stops_the_calls(
    loop: Loop, pairs: Callable[[], tuple[socket.socket, socket.socket]]
) -> None:
    watched, peer = pairs()
    sentinel, sentinel_peer = pairs()

    def read_once_then_detach(owner: Any) -> None:
        watched.recv(4096)
        loop.ready.append(owner)
        loop.reactor.detach(watched.fileno())

    loop.handlers["detaching"] = read_once_then_detach
    loop.watch("detaching", watched)
    loop.watch("sentinel", sentinel)
    peer.send(b"first")
    wait_until(lambda: loop.count("detaching") == 1)
    peer.send(b"unwatched")
    # Written after the unwatched bytes: once the loop has seen it, it would
    # have seen (level-triggered) the detached socket too, had it still watched it.
    sentinel_peer.send(b"s")
    wait_until(lambda: loop.count("sentinel") == 1)
    assert loop.count("detaching") == 1
    assert watched.recv(4096, socket.MSG_DONTWAIT) == b"unwatched"  # nobody read it


def test_a_detached_fd_can_be_attached_again(
    loop: Loop, pairs: Callable[[], tuple[socket.socket, socket.socket]]
) -> None:
    watched, peer = pairs()
    detached = threading.Event()

    def read_then_detach(owner: Any) -> None:
        watched.recv(4096)
        loop.ready.append(owner)
        loop.reactor.detach(watched.fileno())
        detached.set()

    loop.handlers["first"] = read_then_detach
    loop.watch("first", watched)
    peer.send(b"1")
    wait_until(detached.is_set)
    # Any thread may attach an fd that is not watched: the server's workers do.
    assert loop.watch("second", watched) is True
    peer.send(b"2")
    wait_until(lambda: loop.count("second") == 1)
    assert loop.ready == ["first", "second"]


# -- close -------------------------------------------------------------------------


def test_close_joins_the_thread_is_idempotent_and_refuses_attach_after(
    pairs: Callable[[], tuple[socket.socket, socket.socket]],
) -> None:
    harness = Loop()
    harness.reactor.start()
    thread = harness.reactor.thread
    try:
        assert thread.is_alive()
        watched, _peer = pairs()
        assert harness.watch("before", watched) is True
    finally:
        harness.reactor.close()
    assert not thread.is_alive()  # close() waited for it
    harness.reactor.close()  # again: nothing to do, no error
    late, _late_peer = pairs()
    assert harness.reactor.attach(late.fileno(), "late") is False
    harness.reactor.start()  # a closed reactor does not start again
    assert not thread.is_alive()


def test_a_reactor_closed_before_it_started_never_starts() -> None:
    harness = Loop()
    harness.reactor.close()
    harness.reactor.close()
    harness.reactor.start()
    assert harness.reactor.thread.ident is None


# -- timers ---------------------------------------------------------------------------


def _run_on_loop(loop: Loop, sock_pair: tuple[socket.socket, socket.socket], fn: Any) -> None:
    """Run ``fn()`` once on the loop thread (from on_ready), where call_at is allowed."""
    watched, peer = sock_pair

    def handler(owner: Any) -> None:
        watched.recv(4096)
        fn()

    loop.handlers["runner"] = handler
    loop.watch("runner", watched)
    peer.send(b"go")


def test_timers_run_in_deadline_order_including_ones_added_by_timers(
    loop: Loop, pairs: Callable[[], tuple[socket.socket, socket.socket]]
) -> None:
    ran: list[tuple[str, float, float]] = []  # (name, deadline, when it ran)
    scheduled: list[tuple[str, float]] = []
    done = threading.Event()

    def timer(name: str, when: float) -> None:
        ran.append((name, when, time.monotonic()))
        if name == "b":  # adds one due before "c", which is already queued
            c_when = next(w for n, w in scheduled if n == "c")
            loop.reactor.call_at(c_when - 0.05, timer, "b2", c_when - 0.05)
        if name == "d":
            done.set()

    def schedule() -> None:
        now = time.monotonic()
        # queued out of order, and one already due
        for name, offset in [("d", 0.4), ("b", 0.1), ("past", -1.0), ("c", 0.3), ("a", 0.05)]:
            scheduled.append((name, now + offset))
            loop.reactor.call_at(now + offset, timer, name, now + offset)

    _run_on_loop(loop, pairs(), schedule)
    assert done.wait(10)
    assert [name for name, _, _ in ran] == ["past", "a", "b", "b2", "c", "d"]
    assert all(at >= when for _, when, at in ran)  # none ran early


def test_a_raising_timer_is_logged_and_later_timers_still_run(
    loop: Loop,
    pairs: Callable[[], tuple[socket.socket, socket.socket]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    done = threading.Event()

    def broken() -> None:
        ran.append("broken")
        raise RuntimeError("timer bug")

    def later(name: str) -> None:
        ran.append(name)
        if name == "last":
            done.set()

    def schedule() -> None:
        now = time.monotonic()
        loop.reactor.call_at(now + 0.01, broken)
        loop.reactor.call_at(now + 0.01, later, "same deadline, queued after")
        loop.reactor.call_at(now + 0.05, later, "last")

    with caplog.at_level(logging.ERROR, logger=SERVER_LOGGER):
        _run_on_loop(loop, pairs(), schedule)
        assert done.wait(10)
    assert ran == ["broken", "same deadline, queued after", "last"]
    failures = [r for r in caplog.records if r.getMessage() == "a server timer failed"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and "timer bug" in str(failures[0].exc_info[1])
    assert loop.reactor.thread.is_alive()


# -- errors in on_ready ------------------------------------------------------------------


def test_a_raising_on_ready_calls_on_error_and_the_loop_serves_the_others(
    loop: Loop,
    pairs: Callable[[], tuple[socket.socket, socket.socket]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad, bad_peer = pairs()
    good, good_peer = pairs()

    def broken(owner: Any) -> None:
        raise RuntimeError("on_ready bug")

    loop.handlers["bad"] = broken
    # As the server's _drop does: stop watching the owner on_ready failed for.
    loop.on_error_hook = lambda owner: loop.reactor.detach(loop.socks[owner].fileno())
    with caplog.at_level(logging.ERROR, logger=SERVER_LOGGER):
        loop.watch("bad", bad)
        loop.watch("good", good)
        bad_peer.send(b"boom")
        wait_until(lambda: loop.errors == ["bad"])
        for n in range(1, 4):
            good_peer.send(b"ok")
            wait_until(lambda n=n: loop.count("good") == n)
    assert loop.errors == ["bad"]  # once: it was detached
    assert loop.ready == ["good"] * 3
    failures = [r for r in caplog.records if "serving a connection failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and "on_ready bug" in str(failures[0].exc_info[1])


# -- workers ------------------------------------------------------------------------------


@pytest.fixture
def workers() -> Iterator[Workers]:
    pool = Workers()
    try:
        yield pool
    finally:
        pool.close()


def test_submitted_jobs_run_with_their_arguments(workers: Workers) -> None:
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def job(n: int, word: str) -> None:
        with lock:
            results.append((n, word))

    for n in range(10):
        workers.submit(job, n, f"w{n}")
    wait_until(lambda: len(results) == 10)
    assert sorted(results) == [(n, f"w{n}") for n in range(10)]


def test_a_raising_job_is_logged_and_its_thread_serves_the_next_job(
    workers: Workers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reactor, "IDLE_WORKER_SECONDS", 600.0)  # stays idle: reused
    threads: list[threading.Thread] = []

    def broken() -> None:
        threads.append(threading.current_thread())
        raise ValueError("job bug")

    def fine() -> None:
        threads.append(threading.current_thread())

    with caplog.at_level(logging.ERROR, logger=SERVER_LOGGER):
        workers.submit(broken)
        wait_until(lambda: workers.idle == 1)  # it survived, and waits for work
    failures = [r for r in caplog.records if r.getMessage() == "a server worker job failed"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and "job bug" in str(failures[0].exc_info[1])
    workers.submit(fine)
    wait_until(lambda: len(threads) == 2)
    assert threads[0] is threads[1]  # the same thread: an idle one is reused
    wait_until(lambda: workers.idle == 1)


def test_idle_threads_exit_after_the_idle_time(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reactor, "IDLE_WORKER_SECONDS", 0.2)
    threads: list[threading.Thread] = []
    lock = threading.Lock()
    with released(threading.Event()) as gate:

        def job() -> None:
            with lock:
                threads.append(threading.current_thread())
            gate.wait(10)

        for _ in range(5):
            workers.submit(job)
        wait_until(lambda: len(threads) == 5)
        assert len(set(threads)) == 5 and workers.idle == 0
    wait_until(lambda: not any(t.is_alive() for t in threads), timeout=10)
    assert workers.idle == 0
    # The pool still works after its threads have gone: it starts a new one.
    ran = threading.Event()
    workers.submit(ran.set)
    assert ran.wait(10)


def test_close_lets_idle_threads_exit_at_once_and_busy_ones_after_their_job(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reactor, "IDLE_WORKER_SECONDS", 600.0)  # only close() ends them
    idle_threads: list[threading.Thread] = []
    busy_threads: list[threading.Thread] = []
    lock = threading.Lock()
    with released(threading.Event()) as first, released(threading.Event()) as busy:

        def short() -> None:
            with lock:
                idle_threads.append(threading.current_thread())
            first.wait(10)  # so each gets its own thread

        def long() -> None:
            busy_threads.append(threading.current_thread())
            busy.wait(10)

        for _ in range(3):
            workers.submit(short)
        wait_until(lambda: len(idle_threads) == 3)
        first.set()
        wait_until(lambda: workers.idle == 3)
        workers.submit(long)  # takes one of the idle threads
        wait_until(lambda: len(busy_threads) == 1)
        assert workers.idle == 2
        workers.close()
        assert workers.idle == 0
        others = [t for t in idle_threads if t is not busy_threads[0]]
        wait_until(lambda: not any(t.is_alive() for t in others), timeout=5)
        assert busy_threads[0].is_alive()  # still in its job
    wait_until(lambda: not busy_threads[0].is_alive(), timeout=5)
    assert workers.idle == 0


def test_many_blocking_jobs_each_get_their_own_thread(
    workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_reactor, "IDLE_WORKER_SECONDS", 600.0)  # until close()
    jobs = 20
    started: list[int] = []
    finished: list[int] = []
    lock = threading.Lock()
    with released(threading.Event()) as gate:

        def job(n: int) -> None:
            with lock:
                started.append(threading.get_ident())
            gate.wait(20)
            with lock:
                finished.append(n)

        for n in range(jobs):
            workers.submit(job, n)
        # All start while every one of them is still blocked: none waits for a thread.
        wait_until(lambda: len(started) == jobs, timeout=10)
        assert len(set(started)) == jobs and finished == []
    wait_until(lambda: len(finished) == jobs, timeout=10)
    assert sorted(finished) == list(range(jobs))
    wait_until(lambda: workers.idle == jobs)


# -- choosing the backend: PROXYSHARE_REACTOR ------------------------------------------


@pytest.mark.parametrize(
    ("value", "backend"),
    [("", "_Epoll"), ("auto", "_Epoll"), ("epoll", "_Epoll"), ("poll", "_Poll")],
)
def test_the_environment_picks_the_backend(
    monkeypatch: pytest.MonkeyPatch, value: str, backend: str
) -> None:
    if not hasattr(_reactor.select, "epoll"):
        pytest.skip("no epoll on this system: auto means poll(2) here")
    monkeypatch.setenv(_reactor.REACTOR_ENV, value)
    poller = _reactor._poller()
    try:
        assert type(poller).__name__ == backend
    finally:
        poller.close()


def test_an_unknown_backend_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_reactor.REACTOR_ENV, "kqueue")
    with pytest.raises(ValueError, match="PROXYSHARE_REACTOR='kqueue'"):
        _reactor._poller()
