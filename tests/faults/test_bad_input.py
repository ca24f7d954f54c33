"""Bad input: each gives that client a clear error; the server keeps serving, state intact.

The server runs in a thread of the test process (``serve_in_thread``) so the
handshake timeout can be lowered and its logs read.  Every test sets up the
same state first and checks it, value by value, after the injection.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from multiprocessing import connection as mpc
from typing import Any

import pytest

import proxyshare
from proxyshare import _protocol as P
from proxyshare._server import ShareServer
from proxyshare._server import server as _server
from tests.faults import workers
from tests.faults.conftest import Figures, serve_in_thread, server_load, settled

pytestmark = pytest.mark.matrix

KEY = b"the right key for the bad-input tests"
HANDSHAKE = 0.5  # seconds; lowered from 10 so idle connections are dropped quickly


class Served:
    """A server in this process, a client, and the state that must survive."""

    def __init__(self, server: ShareServer, client: proxyshare.ShareManager) -> None:
        self.server = server
        self.client = client
        self.counter = client.counter("c", initial=41)
        self.dict = client.dict("d")
        self.dict.update({"a": 1, "nested": [1, 2, {"x": 3}], "s": "text"})
        self.lock = client.lock("l")
        assert self.lock.acquire()
        self.queue = client.queue("q")
        self.queue.put_many(["first", "second"])
        self.semaphore = client.semaphore("s", value=1)
        self.event = client.event("e")
        self.event.set()
        self.barrier = client.barrier("b", parties=2)
        self.names = client.names()
        self.baseline = server_load(client)

    def assert_intact(self) -> None:
        """Every value as set up, and the server still answers."""
        assert self.client.names() == self.names
        assert self.counter.get() == 41
        assert self.dict.snapshot() == {"a": 1, "nested": [1, 2, {"x": 3}], "s": "text"}
        owner = self.lock.owner()
        assert owner is not None and owner["pid"] == os.getpid()
        assert self.queue.qsize() == 2
        assert self.semaphore.value() == 1
        assert self.event.is_set()
        assert (self.barrier.parties, self.barrier.n_waiting, self.barrier.broken) == (2, 0, False)

    def assert_settled(self) -> float:
        """Seconds until the server's threads and connections are back to the baseline."""
        return settled(self.client, self.baseline, timeout=10)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    monkeypatch.setattr(_server, "HANDSHAKE_TIMEOUT", HANDSHAKE)
    with serve_in_thread(authkey=KEY) as (server, client):
        yield Served(server, client)


def _raw_socket(address: Any) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(10)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.connect(address)
            return sock
        except BlockingIOError:  # the accept backlog (16) is full for a moment
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def _seconds_until_closed(sock: socket.socket, timeout: float = 10) -> float:
    """Read (and drop) what the server sends until it closes the connection."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:  # closed with our bytes unread: a reset, as good as EOF
        pass
    return time.monotonic() - start


# -- raw sockets ----------------------------------------------------------------------

GARBAGE = {
    "nothing (idle)": b"",
    "random bytes": bytes(range(256)) * 4,
    "an HTTP request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "zero-length message": b"\x00\x00\x00\x00",
    "2**62-byte length header": b"\xff\xff\xff\xff" + (2**62).to_bytes(8, "big"),
    "negative length header": b"\x80\x00\x00\x00",
    "half-sent message": (100).to_bytes(4, "big") + b"0123456789",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", GARBAGE.values(), ids=list(GARBAGE))
def test_garbage_before_authentication_is_dropped_within_the_handshake_timeout(
    served: Served, payload: bytes, figures: Figures, request: pytest.FixtureRequest
) -> None:
    sock = _raw_socket(served.server.address)
    try:
        sock.sendall(payload)
        served.assert_intact()  # others are served while this connection hangs around
        dropped = _seconds_until_closed(sock)
    finally:
        sock.close()
    assert dropped < HANDSHAKE + 2
    served.assert_intact()
    served.assert_settled()
    figures.record(f"raw socket: {request.node.callspec.id}", "connection dropped", dropped)


@pytest.mark.timeout(30)
def test_100_idle_connections_do_not_stop_the_server_and_are_all_dropped(
    served: Served, figures: Figures
) -> None:
    socks = [_raw_socket(served.server.address) for _ in range(100)]
    try:
        start = time.monotonic()
        served.assert_intact()  # served while 100 unauthenticated threads wait
        for sock in socks:
            _seconds_until_closed(sock)
        dropped = time.monotonic() - start
    finally:
        for sock in socks:
            sock.close()
    assert dropped < HANDSHAKE + 5
    served.assert_intact()
    served.assert_settled()
    figures.record("100 idle raw connections", "all dropped, others served", dropped)


@pytest.mark.timeout(30)
def test_wrong_authkey_gets_authentication_error_and_server_keeps_serving(
    served: Served, figures: Figures
) -> None:
    start = time.monotonic()
    with pytest.raises(proxyshare.AuthenticationError, match="rejected the authkey") as info:
        proxyshare.connect(served.server.address, authkey=b"not the key")
    elapsed = time.monotonic() - start
    assert KEY.decode() not in str(info.value)
    served.assert_intact()
    served.assert_settled()
    figures.record("wrong authkey", "AuthenticationError", elapsed)


def _authenticated(address: Any) -> mpc.Connection:
    return mpc.Client(address, authkey=KEY)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "first_message",
    [b"not a pickle", pickle.dumps("a string"), pickle.dumps((P.HELLO.code, None))],
    ids=["not a pickle", "not a request", "short HELLO"],
)
def test_bad_first_message_after_authentication_is_refused(
    served: Served, first_message: bytes
) -> None:
    conn = _authenticated(served.server.address)
    try:
        conn.send_bytes(first_message)
        if conn.poll(10):  # either a stdlib-style error reply or the connection is closed
            try:
                status, _ = pickle.loads(conn.recv_bytes())
                assert status == "#TRACEBACK"
            except EOFError:
                pass
    finally:
        conn.close()
    served.assert_intact()
    served.assert_settled()


@pytest.mark.timeout(30)
def test_half_sent_first_message_after_authentication_is_dropped(served: Served) -> None:
    conn = _authenticated(served.server.address)
    try:
        os.write(conn.fileno(), (1000).to_bytes(4, "big") + b"partial")
        served.assert_intact()
        assert conn.poll(HANDSHAKE + 5)
        with pytest.raises(EOFError):
            conn.recv_bytes()
    finally:
        conn.close()
    served.assert_intact()
    served.assert_settled()


def _session(address: Any) -> mpc.Connection:
    conn = _authenticated(address)
    conn.send((P.HELLO.code, None, os.getpid(), "test-host", "raw"))
    status, info = pickle.loads(conn.recv_bytes())
    assert status == P.OK and info["protocol"] == P.PROTOCOL_VERSION
    return conn


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "message",
    [b"not a pickle", b"", pickle.dumps(42), pickle.dumps(()), pickle.dumps(([],)),
     pickle.dumps((999, None)), pickle.dumps((P.COUNTER_GET.code, ["unhashable"]))],
    ids=["not a pickle", "empty", "an int", "empty tuple", "unhashable opcode",
         "unknown opcode", "unhashable name"],
)  # fmt: skip
def test_garbage_inside_a_session_gets_an_error_reply_and_the_session_goes_on(
    served: Served, message: bytes
) -> None:
    conn = _session(served.server.address)
    try:
        conn.send_bytes(message)
        status, (error, remote_tb) = pickle.loads(conn.recv_bytes())
        assert status == P.ERROR
        assert isinstance(error, Exception) and "Traceback" in remote_tb
        conn.send_bytes(pickle.dumps((P.COUNTER_GET.code, "c")))
        assert pickle.loads(conn.recv_bytes()) == (P.OK, 41)
    finally:
        conn.close()
    served.assert_intact()
    served.assert_settled()


@pytest.mark.timeout(30)
def test_a_session_that_dies_mid_message_is_cleaned_up(served: Served) -> None:
    conn = _session(served.server.address)
    os.write(conn.fileno(), (1000).to_bytes(4, "big") + b"partial")
    served.assert_intact()
    conn.close()
    served.assert_intact()
    served.assert_settled()


@pytest.mark.timeout(30)
def test_a_malformed_hello_is_logged_and_does_not_disturb_the_server(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    conn = _authenticated(served.server.address)
    try:
        with caplog.at_level("INFO", logger="proxyshare.server"):
            conn.send((P.HELLO.code, None, "not a pid", "host", "thread"))
            assert conn.poll(10)
            with pytest.raises(EOFError):
                conn.recv_bytes()
    finally:
        conn.close()
    served.assert_intact()
    served.assert_settled()
    logged = [r for r in caplog.records if r.name == "proxyshare.server" and r.exc_info]
    assert logged, "the failure was not logged on proxyshare.server with its traceback"


# -- values ----------------------------------------------------------------------------

UNPICKLABLE = {
    "a lambda": lambda: None,
    "a threading.Lock": threading.Lock(),
    "a generator": (i for i in range(3)),
    "__reduce__ raises": workers.RefusesToPickle(),
    "a socket": socket.socket(),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", UNPICKLABLE.values(), ids=list(UNPICKLABLE))
def test_unpicklable_values_are_refused_in_the_client(served: Served, value: Any) -> None:
    with pytest.raises(proxyshare.UnshareableArgumentError, match="cannot be pickled"):
        served.dict["new"] = value
    with pytest.raises(proxyshare.UnshareableArgumentError):
        served.queue.put(value)
    served.assert_intact()


EXPLOSIONS = ["ValueError", "ImportError", "SystemExit", "KeyboardInterrupt", "unrebuildable"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", EXPLOSIONS)
def test_a_value_whose_unpickling_raises_in_the_server_gives_a_clear_error(
    served: Served, kind: str, figures: Figures
) -> None:
    start = time.monotonic()
    with pytest.raises(Exception) as info:  # the type depends on the row
        served.dict["new"] = workers.ExplodesWhenUnpickled(kind)
    elapsed = time.monotonic() - start
    error = info.value
    assert not isinstance(error, proxyshare.ServerUnavailableError)
    assert isinstance(error.__cause__, proxyshare.RemoteTraceback)
    assert "_explode" in error.__cause__.tb  # the server's traceback, down to the cause
    expected = {"ValueError": "refuses to be unpickled", "ImportError": "proxyshare_module"}
    assert expected.get(kind, kind if kind != "unrebuildable" else "TwoPartError") in (
        f"{type(error).__name__}: {error}"
    )
    served.assert_intact()  # the same connection keeps working
    assert "new" not in served.dict
    served.assert_settled()
    figures.record(f"value raises {kind} when unpickled", type(error).__name__, elapsed)


@pytest.mark.timeout(60)
def test_a_100_mb_value_is_handled_without_disturbing_the_server(
    served: Served, figures: Figures
) -> None:
    big = b"x" * (100 << 20)
    start = time.monotonic()
    served.dict["big"] = big
    assert served.dict["big"] == big
    assert served.dict.pop("big") == big
    elapsed = time.monotonic() - start
    served.assert_intact()
    figures.record("100 MB dict value set/get/pop", "stored and returned intact", elapsed)


@pytest.mark.timeout(60)
def test_a_value_over_the_servers_message_limit_is_refused_with_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    monkeypatch.setattr(_server, "MAX_MESSAGE", 10 << 20)
    with serve_in_thread(authkey=KEY) as (server, client):
        served = Served(server, client)
        start = time.monotonic()
        with pytest.raises(proxyshare.ProxyShareError, match="limit") as info:
            served.dict["big"] = b"x" * (100 << 20)
        elapsed = time.monotonic() - start
        assert not isinstance(info.value, proxyshare.ServerUnavailableError)
        served.assert_intact()
        assert "big" not in served.dict
    figures.record("100 MB value, server limit 10 MB", "refused in the client", elapsed)


# -- wrong argument types and counts ----------------------------------------------------

# (resource, method, args, kwargs, error, message fragment)
WRONG_CALLS: list[tuple[str, str, tuple[Any, ...], dict[str, Any], type[BaseException], str]] = [
    ("counter", "increment", ("1",), {}, TypeError, "must be an int"),
    ("counter", "increment", (1.5,), {}, TypeError, "must be an int"),
    ("counter", "increment", (True,), {}, TypeError, "must be an int"),
    ("counter", "increment", (1, 2), {}, TypeError, "positional argument"),
    ("counter", "decrement", (None,), {}, TypeError, "must be an int"),
    ("counter", "get", (1,), {}, TypeError, "positional argument"),
    ("counter", "set", ("x",), {}, TypeError, "must be an int"),
    ("counter", "set", (), {}, TypeError, "missing"),
    ("counter", "compare_and_set", (41, "x"), {}, TypeError, "must be an int"),
    ("counter", "compare_and_set", (41,), {}, TypeError, "missing"),
    ("counter", "get_and_set", ([],), {}, TypeError, "must be an int"),
    ("lock", "acquire", ("yes",), {}, TypeError, "blocking must be a bool"),
    ("lock", "acquire", (), {"timeout": "1"}, TypeError, "timeout must be a number"),
    ("lock", "acquire", (False, 1), {}, ValueError, "non-blocking"),
    ("lock", "acquire", (), {"timeout": -2}, ValueError, "non-negative"),
    ("lock", "acquire", (), {"color": 1}, TypeError, "unexpected keyword"),
    ("lock", "release", (1,), {}, TypeError, "positional argument"),
    ("lock", "locked", (1,), {}, TypeError, "positional argument"),
    ("lock", "owner", (1,), {}, TypeError, "positional argument"),
    ("dict", "__getitem__", ([1],), {}, TypeError, "unhashable"),
    ("dict", "__getitem__", ("missing",), {}, KeyError, "missing"),
    ("dict", "__setitem__", ([1], 1), {}, TypeError, "unhashable"),
    ("dict", "__delitem__", ({},), {}, TypeError, "unhashable"),
    ("dict", "__contains__", ([],), {}, TypeError, "unhashable"),
    ("dict", "get", ([],), {}, TypeError, "unhashable"),
    ("dict", "pop", ([],), {}, TypeError, "unhashable"),
    ("dict", "setdefault", ([],), {}, TypeError, "unhashable"),
    ("dict", "update", (5,), {}, TypeError, "not iterable"),
    ("dict", "increment", ("a", "x"), {}, TypeError, "must be an int"),
    ("dict", "increment", ("nested",), {}, TypeError, "its value is not an int"),
    ("dict", "increment", (), {}, TypeError, "missing"),
    ("dict", "compare_and_set", ([], 1, 2), {}, TypeError, "unhashable"),
    ("dict", "snapshot", (1,), {}, TypeError, "positional argument"),
    ("queue", "put", (1,), {"block": "x"}, TypeError, "block must be a bool"),
    ("queue", "get", (), {"timeout": "x"}, TypeError, "timeout must be a number"),
    ("queue", "get_many", (0,), {}, ValueError, ">= 1"),
    ("queue", "get_many", ("x",), {}, TypeError, "must be an int"),
    ("queue", "put_many", (5,), {}, TypeError, "not iterable"),
    ("semaphore", "acquire", (), {"timeout": "x"}, TypeError, "timeout must be a number"),
    ("semaphore", "release", (), {}, proxyshare.NotOwnerError, "holds no permit"),
    ("event", "wait", ("x",), {}, TypeError, "timeout must be a number"),
    ("barrier", "wait", ("x",), {}, TypeError, "timeout must be a number"),
    ("client", "counter", (5,), {}, TypeError, "non-empty str"),
    ("client", "counter", ("c2",), {"initial": "x"}, TypeError, "must be an int"),
    ("client", "lock", ("c",), {}, proxyshare.ResourceKindError, "already a counter"),
    ("client", "lock", ("l2",), {"lease": -1}, ValueError, "lease must be"),
    ("client", "queue", ("q2",), {"maxsize": "x"}, TypeError, "must be an int"),
    ("client", "semaphore", ("s2",), {"value": -1}, ValueError, ">= 1"),
    ("client", "barrier", ("b2",), {"parties": 0}, ValueError, "parties must be"),
    ("client", "barrier", ("b",), {"parties": 3}, ValueError, "already exists"),
    ("client", "delete", ([],), {}, TypeError, "unhashable"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("resource", "method", "args", "kwargs", "error", "fragment"),
    WRONG_CALLS,
    ids=[f"{r}.{m}{a!r}{k or ''}" for r, m, a, k, _, _ in WRONG_CALLS],
)
def test_wrong_argument_types_and_counts_give_a_clear_error_and_change_nothing(
    served: Served,
    resource: str,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[BaseException],
    fragment: str,
) -> None:
    target = served.client if resource == "client" else getattr(served, resource)
    with pytest.raises(error, match=fragment):
        getattr(target, method)(*args, **kwargs)
    served.assert_intact()


def _opcode_table() -> list[tuple[P.Op[Any], str, str]]:
    by_kind = {"counter": "c", "lock": "l", "dict": "d", "queue": "q", "semaphore": "s",
               "event": "e", "barrier": "b"}  # fmt: skip
    return [(op, op.kind, by_kind[op.kind]) for op in P.OPS.values() if op.kind in by_kind]


OPCODES = _opcode_table()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("opcode", "kind", "name"), OPCODES, ids=[f"op{o.code}-{k}" for o, k, _ in OPCODES]
)
def test_every_opcode_with_wrong_arity_kind_or_name_gets_a_clear_error(
    served: Served, opcode: P.Op[Any], kind: str, name: str
) -> None:
    ref = served.client.server_ref
    with pytest.raises(TypeError, match="positional argument"):
        ref.call(opcode, name, *["extra"] * 9)
    other = "c" if kind != "counter" else "d"
    with pytest.raises(proxyshare.ResourceKindError, match=f"is a .*, not a {kind}"):
        ref.call(opcode, other)
    with pytest.raises(proxyshare.ResourceNotFoundError, match=f"no {kind} named 'nope'"):
        ref.call(opcode, "nope")
    served.assert_intact()


MANAGER_OPS = [
    (P.OPEN, ("x",), TypeError),
    (P.OPEN, ("x", "no-such-kind", {}), ValueError),
    (P.OPEN, ("x", "counter", {"bogus": 1}), TypeError),
    (P.DELETE, (), TypeError),
    (P.STATUS, (None, 1, 2), TypeError),
    (P.NAMES, (None, 1, 2), TypeError),
    (P.PING, (None, 1, 2, 3), TypeError),
    (P.PIPELINE, (None, "not a list"), TypeError),
    (P.PIPELINE, (None, [()]), proxyshare.ProxyShareError),
    (P.PIPELINE, (None, [(P.LOCK_ACQUIRE.code, "l", True, None)]), proxyshare.ProxyShareError),
    (P.HELLO, (None, 1, "h", "t"), proxyshare.ProxyShareError),
    (P.Op(999, "manager", "bogus"), (None,), proxyshare.ProxyShareError),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("opcode", "args", "error"), MANAGER_OPS, ids=[f"{m[0].method}{m[1]!r}" for m in MANAGER_OPS]
)
def test_manager_requests_with_wrong_arguments_get_a_clear_error(
    served: Served, opcode: P.Op[Any], args: tuple[Any, ...], error: type[BaseException]
) -> None:
    with pytest.raises(error):
        served.client.server_ref.call(opcode, *args)
    served.assert_intact()
