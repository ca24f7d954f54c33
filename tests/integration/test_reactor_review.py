"""Regression tests from a review of the reactor-driven server's failure handling.

Each test drives one path on which a session could be lost (never answered,
never closed) or the reactor thread could stop serving everyone.  Servers run
in a thread of this process (``serve_in_thread``), so a test can reach their
state and, where a race needs a precise interleaving, hold one step open.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare import _protocol as P
from proxyshare import _wire
from proxyshare._client import Channel, close_all_channels
from proxyshare._server import reactor as _reactor
from proxyshare._server.server import ShareServer
from proxyshare._server.session import Session
from tests.faults.conftest import serve_in_thread
from tests.integration.test_reactor_server import Call
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)

SERVER_LOGGER = "proxyshare.server"


class ExitsWhenPickledOnTheServer:
    """Pickles where it is made; the copy unpickled on the server raises SystemExit
    when it is pickled again (a ``__reduce__`` that misbehaves in one place only)."""

    def __init__(self, revived: bool = False, padding: bytes = b"") -> None:
        self.revived = revived
        self.padding = padding  # a large one makes a request too large for one read

    def __reduce__(self) -> tuple[Any, ...]:
        if self.revived:
            raise SystemExit("pickled again on the server")
        return (ExitsWhenPickledOnTheServer, (True, self.padding))

    def __repr__(self) -> str:
        return "ExitsWhenPickledOnTheServer()"


def _in_thread(fn: Any, *args: Any) -> Call:
    call = Call(fn, *args)
    call.start()
    return call


def _resource(client: Any, name: str) -> dict[str, Any]:
    (found,) = [r for r in client.status()["resources"] if r["name"] == name]
    return dict(found)


@pytest.fixture
def raw_channels() -> Iterator[list[Channel]]:
    """Channels of their own (outside the per-thread registry); closed after the test."""
    made: list[Channel] = []
    try:
        yield made
    finally:
        for channel in made:
            if not channel.closed:
                channel.close()


def _raw(client: Any, made: list[Channel]) -> Channel:
    ref = client.server_ref
    channel = Channel(ref.address, ref.authkey)
    channel._wire.sock.settimeout(10)  # a missing reply fails the test, not hangs it
    made.append(channel)
    return channel


def _send(channel: Channel, request: tuple[Any, ...]) -> None:
    channel._wire.send_bytes(pickle.dumps(request, P.PICKLE_PROTOCOL))


# -- a reply or an error that cannot be pickled -----------------------------------------


@pytest.mark.parametrize(
    "path", ["reply-on-reactor", "error-on-reactor", "reply-on-worker", "error-on-worker"]
)
def test_a_value_whose_pickling_raises_system_exit_gets_an_error_reply_and_serving_goes_on(
    path: str,
) -> None:
    """Unpickling a request may raise anything and is answered; so must pickling the reply.

    A BaseException from ``pickle.dumps`` used to escape ``_dump_reply`` and the
    pickling check in ``_error_reply``: on the reactor it ended the loop's
    thread, so no client was served again; on a worker it ended that thread
    with the session detached, so its client waited forever.
    """
    with serve_in_thread() as (server, client):
        d, q, after = client.dict("d"), client.queue("q"), client.counter("after")

        def call() -> Any:
            if path == "reply-on-reactor":
                d["x"] = ExitsWhenPickledOnTheServer()
                return d["x"]
            if path == "error-on-reactor":
                return d[ExitsWhenPickledOnTheServer()]  # KeyError(<that key>)
            if path == "error-on-worker":  # a request too large for one read
                return d[ExitsWhenPickledOnTheServer(padding=bytes(200 * 1024))]
            return q.get(timeout=30)  # waits: finished on a worker

        def call_then_next() -> tuple[BaseException | None, int]:
            try:
                call()
            except BaseException as exc:  # what the client raises
                error: BaseException | None = exc
            else:
                error = None
            return error, after.increment()  # the same connection, straight after

        pending = _in_thread(call_then_next)
        if path == "reply-on-worker":
            wait_until(lambda: _resource(client, "q")["blocked_getters"] == 1, timeout=10)
            q.put(ExitsWhenPickledOnTheServer())
        error, next_call = pending.outcome(10)
        assert isinstance(error, proxyshare.ProxyShareError)
        assert "SystemExit" in str(error) or "KeyError" in str(error)
        assert next_call == 1
        assert server.reactor.thread.is_alive()
        assert _in_thread(after.increment).outcome(10) == 2  # others are served too


# -- the server stops while clients are connected ------------------------------------------


def test_stopping_the_server_closes_the_sessions_its_reactor_was_watching(
    raw_channels: list[Channel],
) -> None:
    """The reactor stops first, so nobody is left to read those sessions' EOF."""
    with serve_in_thread() as (server, client):
        client.lock("l")
        # The holder is a raw channel too, which nothing closes before the server
        # stops: a holder leaving first would hand the lock to the parked waiter.
        holder = _raw(client, raw_channels)
        _send(holder, (P.LOCK_ACQUIRE.code, "l", True, None))
        holder._wire.recv_view()  # the grant
        assert _resource(client, "l")["locked"]
        idle = _raw(client, raw_channels)
        parked = _raw(client, raw_channels)
        _send(parked, (P.LOCK_ACQUIRE.code, "l", True, None))
        wait_until(lambda: len(_resource(client, "l")["waiters"]) == 1, timeout=10)
        sessions = [server.sessions[c.server_info["client"]] for c in (holder, idle, parked)]
    # Still connected from this side: the server must not wait for us to hang up.
    assert all(not channel.closed for channel in raw_channels)
    assert [s.wire.sock.fileno() for s in sessions] == [-1, -1, -1]
    assert server.sessions == {}
    for channel in (holder, idle, parked):
        with pytest.raises((EOFError, ConnectionResetError)):
            channel._wire.recv_view()


@contextlib.contextmanager
def stopped_but_serving() -> Iterator[tuple[ShareServer, Any]]:
    """A server whose reactor keeps serving after ``stop()`` until the test calls
    ``close()``: the window ``serve_forever`` leaves between the two (up to its
    0.5 s poll of ``stop_event``), held open so a test can act inside it."""
    key = secrets.token_hex(16).encode()
    server = proxyshare.ShareManager(authkey=key).get_server()
    accepter = threading.Thread(target=server.accepter, name="test-accepter", daemon=True)
    accepter.start()
    try:
        yield server, proxyshare.connect(server.address, authkey=key)
    finally:
        # Idempotent: the test may have closed it already.  The accepter is not
        # joined: closing the listener does not wake an accept() blocked on it
        # (Linux), so it stays parked there, a daemon, as under serve_forever.
        server.close()
        close_all_channels()


@pytest.mark.parametrize("wait", ["parked", "on-worker"])
@pytest.mark.parametrize("freed_by", ["release", "lease"])
def test_a_stopping_server_hands_a_freed_lock_to_no_waiter(
    raw_channels: list[Channel], wait: str, freed_by: str
) -> None:
    """After ``stop()`` a lock freed by its holder (a release, or a lease that
    runs out) used to go to the next waiter: ``reply_early`` told it True while
    the server was going away.  A stopping server grants nothing; the waiter
    sees its connection end when the server closes."""
    # A request too large for one read is served on a worker, which waits in
    # _await_grant; a small one parks in the reactor with no thread.
    name = "l" if wait == "parked" else "l" * (200 * 1024)
    with stopped_but_serving() as (server, client):
        lock = client.lock(name, lease=3600.0 if freed_by == "lease" else None)
        assert lock.acquire()
        waiter = _raw(client, raw_channels)
        _send(waiter, (P.LOCK_ACQUIRE.code, name, True, None))
        resource = server.resources[name]
        wait_until(lambda: len(resource.waiters) == 1, timeout=10)
        server.stop()
        if freed_by == "release":
            # A grant is sent under the lock's mutex, before release() is answered.
            lock.release()
        else:
            with resource.mutex:  # as if the holder took it two hours ago: its lease is up
                (holder,) = resource.holders
                resource.holders[holder][0] -= 7200
            # Taken back at the waiter's next lease check (every WAIT_SLICE), under
            # the mutex that any grant is sent under: once it is free, all is sent.
            wait_until(lambda: holder not in resource.holders, timeout=10)
            with resource.mutex:
                pass
        server.close()
        with pytest.raises((EOFError, ConnectionResetError)):
            reply = waiter._wire.recv_view()
            pytest.fail(f"the waiter was answered {pickle.loads(reply)!r}")


# -- a grant racing the drop of its parked session -------------------------------------------


@pytest.mark.parametrize("backend", ["epoll", "poll"])
def test_a_grant_racing_the_drop_of_its_parked_session_does_not_watch_it_again(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    raw_channels: list[Channel],
    backend: str,
) -> None:
    """``reply_early`` hands back to the reactor a session it finds detached,
    taking it for one whose wait runs on a worker; a session the reactor is
    dropping is detached too.  Re-attached there, it stayed watched after its
    socket was closed: a stale owner (epoll), or, with poll(2), an fd of -1 the
    loop could never detach, failing on every turn."""
    if backend == "poll":
        monkeypatch.setattr(_reactor, "_poller", _reactor._Poll)
    with serve_in_thread() as (server, client):
        lock, counter = client.lock("l"), client.counter("c")
        assert lock.acquire()
        (holder,) = server.sessions.values()  # this thread's
        victim: list[Session] = []
        in_drop, granted = threading.Event(), threading.Event()
        real_end_session = server._end_session

        def end_session(session: Session) -> None:
            # Hold the drop open between the detach and the end of the session.
            if victim and session is victim[0]:
                in_drop.set()
                granted.wait(10)
            real_end_session(session)

        monkeypatch.setattr(server, "_end_session", end_session)
        raw = _raw(client, raw_channels)
        raw_id = raw.server_info["client"]
        victim.append(server.sessions[raw_id])
        _send(raw, (P.LOCK_ACQUIRE.code, "l", True, None))
        wait_until(lambda: len(_resource(client, "l")["waiters"]) == 1, timeout=10)
        with caplog.at_level(logging.INFO, logger=SERVER_LOGGER):
            _send(raw, (P.PING.code, None, b"too soon"))  # a request while waiting: dropped
            try:
                assert in_drop.wait(10)
                # A release on another thread (as on a worker) grants it now.
                server.resources["l"].release(holder)
            finally:
                granted.set()
            wait_until(lambda: raw_id not in server.sessions, timeout=10)
            assert _in_thread(counter.increment).outcome(10) == 1  # a few loop turns
            assert _in_thread(counter.increment).outcome(10) == 2
        session = victim[0]
        assert session.wire.sock.fileno() == -1
        assert session.attached is False
        assert session not in server.reactor._owners.values()
        assert "serving a connection failed" not in caplog.text
        assert _resource(client, "l")["holders"] == []  # taken back from the dropped one


# -- timeouts the timer heap cannot order ---------------------------------------------------


@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_a_nan_timeout_is_refused_and_other_parked_timeouts_still_fire(kind: str) -> None:
    """NaN compares false with everything: pushed on the reactor's timer heap, it
    stuck at the root (``nan <= now`` is never true) and no timer ran again, so
    every later acquire(timeout=...) on the server waited until a grant.
    ``threading.Lock.acquire(timeout=nan)`` raises ValueError; so does this."""
    with serve_in_thread() as (_server, client):
        prim = client.lock("p") if kind == "lock" else client.semaphore("p", value=1)
        assert prim.acquire()
        nan = _in_thread(prim.acquire, True, float("nan"))
        try:
            # answered at once, or parked with its timer on the heap
            wait_until(lambda: not nan.is_alive() or _resource(client, "p")["waiters"])
            assert _in_thread(prim.acquire, True, 0.2).outcome(10) is False
        finally:
            prim.release()  # a NaN waiter left parked is granted it and ends
        with pytest.raises(ValueError, match="timeout"):
            nan.outcome(10)


# -- a reply too large for one message ------------------------------------------------------


@pytest.mark.parametrize("path", ["small-request", "large-request"])
def test_a_reply_too_large_for_a_frame_gets_an_error_reply_and_the_session_goes_on(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A frame's length is a signed 32-bit int; ``send_bytes`` raises ValueError
    past it.  A large reply is sent by ``_send_on_worker``, which caught only
    OSError, so the job failed with the session detached and its client waited
    forever (as a snapshot of three 760 MiB values did).  Here a lowered limit
    stands in for 2 GiB, lowered once the values are stored."""
    with serve_in_thread() as (server, client):
        d, after = client.dict("d"), client.counter("after")
        d["big"] = [bytes(400 * 1024) for _ in range(3)]  # 1.2 MiB, distinct objects
        monkeypatch.setattr(_wire, "MAX_FRAME", 1 << 20)

        def call_then_next() -> tuple[BaseException | None, int]:
            try:
                if path == "small-request":  # served on the reactor
                    d.snapshot()
                else:  # more than one read: served on a worker
                    d.get("big", bytes(100 * 1024))
            except BaseException as exc:
                error: BaseException | None = exc
            else:
                error = None
            return error, after.increment()  # the same connection, straight after

        error, next_call = _in_thread(call_then_next).outcome(10)
        assert isinstance(error, proxyshare.ProxyShareError)
        assert "too large" in str(error)
        assert next_call == 1
        assert all(s.attached for s in server.sessions.values())


def test_a_failing_worker_job_closes_its_connection_instead_of_leaving_the_client_waiting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with serve_in_thread() as (server, client):

        def broken(session: Any, request: Any) -> None:
            raise RuntimeError("a bug in a worker job")

        monkeypatch.setattr(server, "_finish_on_worker", broken)
        q = client.queue("q")
        with (
            caplog.at_level(logging.ERROR, logger="proxyshare.server"),
            pytest.raises(proxyshare.ServerUnavailableError),
        ):
            q.get(timeout=30)  # empty: finished on a worker, which fails
        assert "a bug in a worker job" in caplog.text
        monkeypatch.undo()
        q.put(1)  # the next call reconnects
        assert q.get(timeout=5) == 1
