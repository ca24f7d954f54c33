"""The reactor-driven server end to end: parked acquires, worker hand-offs, large messages.

Each thread of this process is its own session (its own connection), so
threads stand in for separate clients.  Lock and semaphore acquires that must
wait are *parked*: no server thread waits for them, and the grant, a timeout,
a delete, a lease running out or the client's death answers them.  Calls that
wait on a queue, event or barrier, and messages too large for one read, are
finished on worker threads, after which the connection goes back to the reactor.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare import _protocol as P
from proxyshare._client import Channel
from tests.faults import workers as fault_workers
from tests.faults.conftest import serve_in_thread
from tests.support import START_METHODS, kill_hard, released, running_manager, wait_until

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(90)]

PRIMITIVES = ["lock", "semaphore"]


class Call(threading.Thread):
    """``fn(*args)`` in a thread of its own (so a session of its own); keeps the outcome."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        super().__init__(name=name, daemon=True)
        self.fn, self.args = fn, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:
            self.error = exc

    def outcome(self, timeout: float = 30) -> Any:
        """Wait for the call; return its result or raise its error here."""
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} did not finish within {timeout}s"
        if self.error is not None:
            raise self.error
        return self.result


Spawn = Callable[..., Call]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``Call`` threads; joined after the server has stopped (see ``mgr``)."""
    started: list[Call] = []

    def start(fn: Callable[..., Any], *args: Any, name: str | None = None) -> Call:
        call = Call(fn, *args, name=name)
        started.append(call)
        call.start()
        return call

    try:
        yield start
    finally:
        for call in started:
            call.join(15)


@pytest.fixture
def mgr(spawn: Spawn) -> Iterator[proxyshare.ShareManager]:
    """A server in its own process.  It depends on ``spawn`` so that it stops first:
    a thread still blocked in a call then gets ServerUnavailableError and ends."""
    with running_manager() as manager:
        yield manager


def _open(mgr: Any, kind: str, name: str) -> Any:
    return mgr.lock(name) if kind == "lock" else mgr.semaphore(name, value=1)


def _resource(mgr: Any, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for r in mgr.status()["resources"] if r["name"] == name]
    assert len(found) == 1, f"no resource {name!r}"
    return found[0]


def _waiters(mgr: Any, name: str) -> list[str]:
    """Thread names of the sessions parked on lock/semaphore ``name``, oldest first."""
    return [w["thread"] for w in _resource(mgr, name)["waiters"]]


def _holders(mgr: Any, name: str) -> list[tuple[int, str]]:
    return [(h["pid"], h["thread"]) for h in _resource(mgr, name)["holders"]]


# -- timeouts ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_a_parked_acquire_times_out_with_false_and_its_session_goes_on(
    mgr: proxyshare.ShareManager, spawn: Spawn, kind: str
) -> None:
    prim, counter = _open(mgr, kind, "busy"), mgr.counter("after")
    assert prim.acquire()  # held by this thread: another session must wait
    freed = threading.Event()

    def contender() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        start = time.monotonic()
        seen["timed"] = prim.acquire(timeout=0.2)
        seen["waited"] = time.monotonic() - start
        start = time.monotonic()
        seen["zero"] = prim.acquire(timeout=0)
        seen["zero_waited"] = time.monotonic() - start
        seen["non_blocking"] = prim.acquire(blocking=False)
        seen["waiters_after"] = _waiters(mgr, "busy")
        seen["holders_after"] = _holders(mgr, "busy")
        seen["next_call"] = counter.increment()  # last: the main thread releases after it
        freed.wait(30)
        seen["later"] = prim.acquire(timeout=10)
        seen["holders_later"] = _holders(mgr, "busy")
        prim.release()
        return seen

    with released(freed):
        call = spawn(contender, name="contender")
        wait_until(lambda: counter.get() == 1, timeout=30)
        prim.release()  # goes to nobody: the timed-out waiters left the FIFO
        assert _holders(mgr, "busy") == []
    seen = call.outcome()
    assert seen["timed"] is False
    assert 0.2 <= seen["waited"] < 5.0
    assert seen["zero"] is False and seen["zero_waited"] < 2.0
    assert seen["non_blocking"] is False
    assert seen["next_call"] == 1
    assert seen["waiters_after"] == []
    assert seen["holders_after"] == [(os.getpid(), "MainThread")]
    assert seen["later"] is True
    assert seen["holders_later"] == [(os.getpid(), "contender")]
    assert _holders(mgr, "busy") == [] and _waiters(mgr, "busy") == []


# -- delete -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_deleting_a_primitive_answers_its_parked_waiter_and_the_session_goes_on(
    mgr: proxyshare.ShareManager, spawn: Spawn, kind: str
) -> None:
    prim, counter = _open(mgr, kind, "doomed"), mgr.counter("after")
    assert prim.acquire()

    def waiter() -> tuple[BaseException | None, int, bool]:
        error = None
        try:
            prim.acquire()
        except BaseException as exc:
            error = exc
        again = _open(mgr, kind, "doomed")  # the name can be used again at once
        return error, counter.increment(), again.acquire(timeout=10)

    call = spawn(waiter, name="waiter")
    wait_until(lambda: _waiters(mgr, "doomed") == ["waiter"], timeout=30)
    assert mgr.delete("doomed") is True
    error, next_call, reacquired = call.outcome()
    assert isinstance(error, proxyshare.ResourceNotFoundError)
    assert f"{kind} 'doomed' was deleted while this call was waiting on it" in str(error)
    assert next_call == 1
    assert reacquired is True  # the new one, fresh


# -- FIFO ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_parked_waiters_are_granted_in_arrival_order(
    mgr: proxyshare.ShareManager, spawn: Spawn, kind: str
) -> None:
    prim = _open(mgr, kind, "fifo")
    assert prim.acquire()
    granted: list[int] = []

    def waiter(i: int) -> None:
        assert prim.acquire()
        granted.append(i)  # while holding it: the list is in grant order
        prim.release()

    names = [f"w{i}" for i in range(5)]
    calls = []
    for i, name in enumerate(names):
        calls.append(spawn(waiter, i, name=name))
        # the next one starts only once this one is parked
        wait_until(lambda i=i: len(_waiters(mgr, "fifo")) == i + 1, timeout=30)
    assert _waiters(mgr, "fifo") == names
    prim.release()
    for call in calls:
        call.outcome()
    assert granted == list(range(5))
    assert _holders(mgr, "fifo") == [] and _waiters(mgr, "fifo") == []


# -- lease --------------------------------------------------------------------------------


def test_a_parked_waiter_gets_a_leased_lock_when_its_holder_s_lease_runs_out(
    mgr: proxyshare.ShareManager, spawn: Spawn
) -> None:
    lock = mgr.lock("leased", lease=0.3)
    took: list[float] = []

    def holder() -> BaseException | None:
        took.append(time.monotonic())
        assert lock.acquire()
        took.append(time.monotonic())
        done.wait(30)  # stays connected, never releases
        try:
            lock.release()
        except BaseException as exc:
            return exc
        return None

    def taker() -> tuple[bool, float, list[tuple[int, str]]]:
        got = lock.acquire()  # no timeout: no timer of its own answers it
        elapsed = time.monotonic() - took[0]
        holders = _holders(mgr, "leased")
        lock.release()
        return got, elapsed, holders

    with released(threading.Event()) as done:
        call = spawn(holder, name="holder")
        wait_until(lambda: len(took) == 2, timeout=30)
        # Parked at once, long before the lease ends (nothing else touches the
        # lock meanwhile): only the reactor's periodic tick can take it back.
        got, elapsed, holders = spawn(taker, name="taker").outcome(10)
    assert isinstance(call.outcome(), proxyshare.NotOwnerError)  # it was taken back
    assert got is True
    assert 0.3 <= elapsed < 3.0
    assert holders == [(os.getpid(), "taker")]
    assert not lock.locked()


# -- many parked waiters -------------------------------------------------------------------


def test_fifty_parked_waiters_cost_no_server_thread_and_all_get_the_lock_in_turn(
    mgr: proxyshare.ShareManager, spawn: Spawn
) -> None:
    waiters = 50
    lock, work = mgr.lock("crowded"), mgr.counter("work")
    assert lock.acquire()
    baseline = mgr.status()["server"]["threads"]
    granted: list[str] = []
    inside = [0, 0]  # now, most ever
    guard = threading.Lock()

    def waiter() -> None:
        assert lock.acquire()
        with guard:
            inside[0] += 1
            inside[1] = max(inside)
        work.increment()  # a round trip while holding it
        granted.append(threading.current_thread().name)
        with guard:
            inside[0] -= 1
        lock.release()

    calls = [spawn(waiter, name=f"p{i:02}") for i in range(waiters)]
    wait_until(lambda: len(_waiters(mgr, "crowded")) == waiters, timeout=30)
    parked_order = _waiters(mgr, "crowded")
    # The threads that did the handshakes end; none waits for a parked acquire.
    wait_until(lambda: mgr.status()["server"]["threads"] <= baseline + 5, timeout=10)
    lock.release()
    for call in calls:
        call.outcome(60)
    assert granted == parked_order  # each in turn, first come first served
    assert inside[1] == 1  # never two holders at once
    assert work.get() == waiters
    assert _holders(mgr, "crowded") == [] and _waiters(mgr, "crowded") == []


def test_answered_parked_acquires_leave_no_timers_behind() -> None:
    """Contended acquire(timeout=60)s answered by grants cancel their timers."""
    with serve_in_thread() as (server, client):
        lock = client.lock("l")

        def contend() -> int:
            for _ in range(300):
                assert lock.acquire(timeout=60)
                lock.release()
            return 300

        calls = [Call(contend, name=f"c{i}") for i in range(4)]
        for call in calls:
            call.start()
        assert [call.outcome(60) for call in calls] == [300] * 4
        assert _resource(client, "l")["waiters"] == []
        assert next(server.reactor._timer_ids) > 100  # many acquires did park with a timer
        # Every acquire has been answered: no live timer, and the cancelled ones
        # were compacted away (at most about 2 x 65 can remain).
        assert [entry for entry in server.reactor._timers if entry[2].fn is not None] == []
        assert len(server.reactor._timers) <= 200


# -- a parked session that speaks ---------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"too soon", bytes(200 * 1024)],  # read at once; or more than one read (a worker's)
    ids=["small", "large"],
)
def test_a_parked_session_that_sends_another_request_is_dropped_and_never_granted(
    caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    with serve_in_thread() as (server, client):
        lock, counter = client.lock("l"), client.counter("c")
        assert lock.acquire()
        ref = client.server_ref
        raw = Channel(ref.address, ref.authkey)  # a client of its own, outside the registry
        try:
            raw._wire.sock.settimeout(10)  # a missing EOF fails the test, not hangs it
            raw_id = raw.server_info["client"]
            acquire = (P.LOCK_ACQUIRE.code, "l", True, None)
            raw._wire.send_bytes(pickle.dumps(acquire, P.PICKLE_PROTOCOL))
            wait_until(lambda: len(_resource(client, "l")["waiters"]) == 1, timeout=10)
            with caplog.at_level(logging.INFO, logger="proxyshare.server"):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    # (the server may close it before it has read all of a large one)
                    ping = (P.PING.code, None, payload)
                    raw._wire.send_bytes(pickle.dumps(ping, P.PICKLE_PROTOCOL))
                with pytest.raises((EOFError, ConnectionResetError)):  # no reply: closed
                    raw._wire.recv_view()
                wait_until(lambda: raw_id not in server.sessions, timeout=10)
        finally:
            raw.close()
        assert f"dropping client {raw_id}: it sent a request while waiting" in caplog.text
        assert _resource(client, "l")["waiters"] == []
        lock.release()
        assert not lock.locked()  # not granted to the dropped session
        assert counter.increment() == 1

        def other_client() -> bool:
            got = bool(lock.acquire(timeout=10))
            lock.release()
            return got

        other = Call(other_client)
        other.start()
        assert other.outcome() is True


# -- calls finished on worker threads ------------------------------------------------------

ROUNDS = 3


@pytest.mark.parametrize("kind", ["queue.get", "event.wait", "barrier.wait"])
def test_a_call_finished_on_a_worker_is_answered_and_the_session_goes_on(
    mgr: proxyshare.ShareManager, spawn: Spawn, kind: str
) -> None:
    jobs, meet, after = mgr.queue("jobs"), mgr.barrier("meet", 2), mgr.counter("after")
    events = [mgr.event(f"go{i}") for i in range(ROUNDS)]

    def waiter() -> list[tuple[Any, int, int]]:
        seen = []
        for i in range(ROUNDS):
            if kind == "queue.get":
                got = jobs.get()
            elif kind == "event.wait":
                got = events[i].wait()
            else:
                got = meet.wait()
            # the next call, on the same connection, straight after
            seen.append((got, after.increment(), id(after._transport.channel())))
        return seen

    def blocked(i: int) -> bool:
        if kind == "queue.get":
            return bool(_resource(mgr, "jobs")["blocked_getters"] == 1)
        if kind == "event.wait":
            return bool(_resource(mgr, f"go{i}")["waiting"] == 1)
        return bool(_resource(mgr, "meet")["n_waiting"] == 1)

    call = spawn(waiter, name="waiter")
    mine = []
    for i in range(ROUNDS):
        wait_until(lambda i=i: blocked(i), timeout=30)
        if kind == "queue.get":
            jobs.put(f"item{i}")
        elif kind == "event.wait":
            events[i].set()
        else:
            mine.append(meet.wait(timeout=30))
        wait_until(lambda i=i: after.get() == i + 1, timeout=30)
    seen = call.outcome()
    assert [n for _, n, _ in seen] == [1, 2, 3]
    assert len({channel for _, _, channel in seen}) == 1  # never reconnected
    got = [g for g, _, _ in seen]
    if kind == "queue.get":
        assert got == ["item0", "item1", "item2"]
    elif kind == "event.wait":
        assert got == [True] * ROUNDS
    else:
        assert [{a, b} for a, b in zip(got, mine, strict=True)] == [{0, 1}] * ROUNDS


# -- large messages --------------------------------------------------------------------------

# Around the reply's one-send limit (16 KiB), the request's one-read limit
# (64 KiB with its header), and well past both.
SIZES = [16 * 1024 - 64, 16 * 1024, 64 * 1024 - 64, 64 * 1024, 64 * 1024 + 1, 1 << 20, 3 << 20]


def _blob(worker: int, round_: int, size: int) -> bytes:
    return random.Random(f"{worker}/{round_}/{size}").randbytes(size)


def test_large_requests_and_replies_interleaved_with_small_calls(
    mgr: proxyshare.ShareManager, spawn: Spawn
) -> None:
    blobs, small = mgr.dict("blobs"), mgr.counter("small")

    def small_calls() -> int:
        n = 0
        while not stop.is_set():
            small.increment()
            n += 1
        return n

    def large_calls(worker: int) -> int:
        checked = 0
        for round_ in range(3):
            for size in SIZES:
                value = _blob(worker, round_, size)
                blobs[(worker, size)] = value  # a large request
                assert blobs[(worker, size)] == value  # a large reply
                assert small.get() >= 0  # a small call on the same connection
                checked += 1
        return checked

    with released(threading.Event()) as stop:
        smalls = [spawn(small_calls, name=f"small{i}") for i in range(2)]
        wait_until(lambda: small.get() > 0, timeout=30)
        larges = [spawn(large_calls, w, name=f"large{w}") for w in range(3)]
        assert [c.outcome(60) for c in larges] == [3 * len(SIZES)] * 3
    made = sum(c.outcome() for c in smalls)  # first: they may be mid-call until joined
    assert made > 0 and small.get() == made
    assert sorted(blobs.keys()) == sorted((w, size) for w in range(3) for size in SIZES)
    assert blobs[(1, 1 << 20)] == _blob(1, 2, 1 << 20)


# -- a client killed while parked ----------------------------------------------------------


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_a_client_killed_while_parked_leaves_the_fifo_and_the_next_grant_goes_to_the_living(
    mgr: proxyshare.ShareManager, spawn: Spawn, kind: str
) -> None:
    prim, reports = _open(mgr, kind, "guard"), mgr.queue("reports")
    assert prim.acquire()
    baseline = _waiters(mgr, "guard")
    victim = multiprocessing.get_context("fork").Process(
        target=fault_workers.acquire_and_report, args=(prim, reports), daemon=True
    )
    victim.start()
    try:
        wait_until(lambda: len(_waiters(mgr, "guard")) == len(baseline) + 1, timeout=30)

        def live_waiter() -> list[tuple[int, str]]:
            assert prim.acquire()
            holders = _holders(mgr, "guard")
            prim.release()
            return holders

        live = spawn(live_waiter, name="live")
        wait_until(lambda: _waiters(mgr, "guard")[-1:] == ["live"], timeout=30)
        assert len(_waiters(mgr, "guard")) == len(baseline) + 2  # the victim first
        kill_hard(victim)
        # its EOF is seen on the socket still watched while it was parked
        wait_until(lambda: _waiters(mgr, "guard") == [*baseline, "live"], timeout=10)
    finally:
        kill_hard(victim)
    prim.release()
    assert live.outcome() == [(os.getpid(), "live")]
    assert reports.qsize() == 0  # the dead never got it
    assert _holders(mgr, "guard") == [] and _waiters(mgr, "guard") == []


# -- the poll(2) backend (macOS, BSDs), forced here on Linux ------------------------------


def test_the_poll_backend_serves_counters_locks_and_waits_finished_on_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """poll(2) does not see a session re-attached by a worker until woken: check it is."""
    from proxyshare._server import reactor as _reactor

    monkeypatch.setattr(_reactor, "_poller", _reactor._Poll)
    with serve_in_thread() as (server, client):
        assert isinstance(server.reactor._poller, _reactor._Poll)
        counter, lock, q = client.counter("n"), client.lock("l"), client.queue("q")

        def work(i: int) -> int:
            for _ in range(200):
                with lock:
                    counter.increment()
            return i

        calls = [Call(work, i) for i in range(4)]
        getter = Call(lambda: [q.get(timeout=30) for _ in range(3)])  # waits on a worker
        for call in [*calls, getter]:
            call.start()
        for item in ("a", "b", "c"):
            wait_until(lambda: _resource(client, "q")["blocked_getters"] == 1, timeout=10)
            q.put(item)
        assert getter.outcome(30) == ["a", "b", "c"]
        assert sorted(call.outcome(30) for call in calls) == [0, 1, 2, 3]
        assert counter.get() == 800


@pytest.mark.parametrize("method", START_METHODS)
def test_the_server_process_reads_its_backend_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """PROXYSHARE_REACTOR reaches the embedded server's own process (CI's poll(2) run
    relies on it), as set or unset now; a value it does not know stops the start,
    naming the variable."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":  # started before the variable changes, so its copy is old
        multiprocessing.forkserver.ensure_running()
    monkeypatch.setenv("PROXYSHARE_REACTOR", "kqueue")
    with pytest.raises(proxyshare.ProxyShareError, match="PROXYSHARE_REACTOR='kqueue'"):
        proxyshare.ShareManager(ctx=ctx).start()
    monkeypatch.delenv("PROXYSHARE_REACTOR")
    with running_manager(ctx=ctx) as mgr:
        assert mgr.counter("n").increment() == 1
    monkeypatch.setenv("PROXYSHARE_REACTOR", "poll")
    with running_manager(ctx=ctx) as mgr:
        assert mgr.counter("n").increment() == 1


def test_the_server_variables_are_the_ones_the_server_reads() -> None:
    """ShareManager.start() sends these to the server process; each is read there."""
    from proxyshare._manager import SERVER_ENV
    from proxyshare._server.reactor import REACTOR_ENV
    from proxyshare._server.resources.shm import DIR_ENV
    from proxyshare._wire import SPIN_ENV

    assert sorted(SERVER_ENV) == sorted([REACTOR_ENV, DIR_ENV, SPIN_ENV])
