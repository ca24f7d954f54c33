"""The server's caps on open connections and on connections still in the handshake."""

from __future__ import annotations

import resource
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from proxyshare._server.admission import Admission, Ticket, default_max_connections

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Socket pairs (server end, peer end), closed afterwards."""
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for a, b in made:
        a.close()
        b.close()


def _connection(pairs: list[tuple[socket.socket, socket.socket]]) -> socket.socket:
    a, b = socket.socketpair()
    b.settimeout(5)
    pairs.append((a, b))
    return a


def _greet(client: Any, ticket: Ticket) -> None:
    """Stands in for the server's handshake."""


def _admit(admission: Admission, sock: socket.socket) -> Ticket | None:
    return admission.admit(sock.fileno(), _greet, sock)


def test_handshakes_settle_and_leave_the_count(pairs: Any) -> None:
    admission = Admission(lambda: 0, max_connections=10, max_handshakes=5)
    tickets = [_admit(admission, _connection(pairs)) for _ in range(3)]
    assert admission.in_handshake == 3
    assert all(t is not None and not t.inherited for t in tickets)
    assert admission.settle(tickets[0])  # type: ignore[arg-type]
    admission.release(tickets[1])  # type: ignore[arg-type]
    assert admission.in_handshake == 1


def test_one_handshake_over_the_cap_evicts_the_oldest_and_takes_its_thread(pairs: Any) -> None:
    admission = Admission(lambda: 0, max_connections=10, max_handshakes=2)
    socks = [_connection(pairs) for _ in range(3)]
    first, second = (_admit(admission, s) for s in socks[:2])
    third = _admit(admission, socks[2])
    assert first is not None and second is not None and third is not None
    assert first.evicted and not second.evicted
    assert pairs[0][1].recv(10) == b""  # the oldest's peer sees the connection end
    assert third.inherited and first.successor is third
    assert not admission.settle(first)  # its thread learns it was evicted
    assert admission.evicted == 1 and admission.in_handshake == 2


def test_over_max_connections_a_connection_is_refused(pairs: Any) -> None:
    established = [2]
    admission = Admission(lambda: established[0], max_connections=3, max_handshakes=5)
    assert _admit(admission, _connection(pairs)) is not None  # 2 served + 1 in the handshake
    assert _admit(admission, _connection(pairs)) is None
    assert admission.refused == 1
    established[0] = 1
    assert _admit(admission, _connection(pairs)) is not None


def test_a_handshake_older_than_the_timeout_is_evicted_by_the_next_arrival(
    pairs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    admission = Admission(lambda: 0, max_connections=10, max_handshakes=5, handshake_timeout=5)
    old = _admit(admission, _connection(pairs))
    assert old is not None
    old.since -= 6  # as if it had waited six seconds
    new = _admit(admission, _connection(pairs))
    assert old.evicted and new is not None and new.inherited
    assert admission.in_handshake == 1


def test_run_greets_a_ticket_then_its_successors_on_the_same_thread(pairs: Any) -> None:
    admission = Admission(lambda: 0, max_connections=10, max_handshakes=1)
    greeted: list[Ticket] = []

    def greet(client: Any, ticket: Ticket) -> None:
        greeted.append(ticket)
        if len(greeted) == 1:  # while the first handshake runs, a second arrives
            second.append(admission.admit(sock2.fileno(), greet, sock2))
        admission.release(ticket)

    sock1, sock2 = _connection(pairs), _connection(pairs)
    second: list[Ticket | None] = []
    first = admission.admit(sock1.fileno(), greet, sock1)
    assert first is not None
    admission.run(first)
    assert greeted == [first, second[0]] and second[0] is not None and second[0].inherited
    assert first.done and second[0].done and admission.in_handshake == 0


@pytest.mark.parametrize("caps", [{"max_connections": 0}, {"max_handshakes": -1}])
def test_caps_must_be_positive(caps: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="positive int"):
        Admission(lambda: 0, **caps)


def test_the_default_connection_cap_stays_under_the_open_file_limit() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = default_max_connections()
    assert 64 <= cap <= 65536
    if soft != resource.RLIM_INFINITY and soft > 128:
        assert cap < soft


def test_a_greet_that_fails_is_logged_and_its_successor_still_runs(
    pairs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admission = Admission(lambda: 0, max_connections=10, max_handshakes=1)
    ran: list[str] = []

    def broken(client: Any, ticket: Ticket) -> None:
        admission.admit(sock2.fileno(), working, sock2)  # evicts this one: it inherits
        raise RuntimeError("a bug")

    def working(client: Any, ticket: Ticket) -> None:
        ran.append("successor")
        admission.release(ticket)

    sock1, sock2 = _connection(pairs), _connection(pairs)
    first = admission.admit(sock1.fileno(), broken, sock1)
    assert first is not None
    with caplog.at_level("ERROR", logger="proxyshare.server"):
        admission.run(first)
    assert ran == ["successor"]
    assert any("a handshake failed" in r.getMessage() for r in caplog.records)
