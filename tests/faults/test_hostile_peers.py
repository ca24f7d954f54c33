"""Hostile peers: connections that never authenticate cost the server nothing lasting.

A thousand idle or half-open connections (plain or TLS) must not stop
service to clients with the key, and a peer that sends garbage during the
TLS handshake leaves no thread, descriptor or slot behind.  The servers run
in a thread of this process (``tls_server``), so their admission counters,
threads and descriptors can be read directly.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare._client import Channel, close_all_channels
from proxyshare._server import ShareServer
from proxyshare._server import server as _server
from tests.faults.conftest import Figures, poll_until
from tests.tls_support import (
    Certs,
    make_certs,
    open_descriptors,
    open_files_limit,
    raw_tls_context,
    tls_server,
)

PEERS = 1000
HANDSHAKE = 1.0  # seconds; lowered from 10 so abandoned handshakes end quickly


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def short_handshakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_server, "HANDSHAKE_TIMEOUT", HANDSHAKE)


def _client_hello() -> bytes:
    """The first flight of a real TLS client, for peers that stop halfway through it."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = _client_hello()


class Service:
    """A server, a client holding state on it, and the baseline to come back to."""

    def __init__(self, server: ShareServer, certs: Certs | None) -> None:
        self.server = server
        self.certs = certs
        self.client = self.connect()
        self.counter = self.client.counter("c", initial=41)
        self.threads = threading.active_count()
        self.descriptors = open_descriptors()

    def connect(self) -> Any:
        tls = {} if self.certs is None else {"tls_ca": self.certs.ca}
        return proxyshare.connect(self.server.address, authkey=bytes(self.server.authkey), **tls)

    def new_client_gets_in(self) -> float:
        """Seconds for a brand-new connection (another thread) to be served."""
        result: list[Any] = []

        def run() -> None:
            start = time.monotonic()
            try:
                assert self.connect().counter("c").get() >= 41
                result.append(time.monotonic() - start)
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(30)
        if not result or isinstance(result[0], BaseException):
            raise AssertionError(f"a new client was not served: {result}")
        seconds: float = result[0]
        return seconds

    def settled(self) -> bool:
        """Back to the baseline: no handshake pending, no extra thread or descriptor."""
        return (
            self.server.admission.in_handshake == 0
            and threading.active_count() <= self.threads + 1  # + an idle server worker
            and open_descriptors() <= self.descriptors
        )


@contextlib.contextmanager
def service(certs: Certs | None, **caps: Any) -> Iterator[Service]:
    with open_files_limit(2 * PEERS + 1024), tls_server(certs, **caps) as server:
        yield Service(server, certs)


def _open(address: Any, payload: bytes) -> socket.socket:
    sock = socket.create_connection(tuple(address), timeout=30)
    if payload:
        sock.sendall(payload)
    return sock


# Plain: the HMAC answer's header and a few of its bytes; TLS: half a ClientHello.
HALF = {"plain": struct.pack("!i", 20) + b"12345", "tls": HELLO[: len(HELLO) // 2]}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("behaviour", ["idle", "half-open"])
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_1000_idle_or_half_open_connections_do_not_stop_service(
    certs: Certs, kind: str, behaviour: str, figures: Figures
) -> None:
    with service(certs if kind == "tls" else None) as svc:
        limit = svc.server.admission.max_handshakes
        payload = b"" if behaviour == "idle" else HALF[kind]
        socks: list[socket.socket] = []
        try:
            start = time.monotonic()
            for _ in range(PEERS):
                socks.append(_open(svc.server.address, payload))
            opened = time.monotonic() - start
            assert svc.counter.increment() == 42  # the connected client is served
            seconds = svc.new_client_gets_in()  # and so is a new one
            assert seconds < 5
            assert svc.server.admission.in_handshake <= limit
            assert threading.active_count() <= svc.threads + limit + 8
        finally:
            for sock in socks:
                sock.close()
        assert svc.counter.get() == 42
        poll_until(svc.settled, timeout=HANDSHAKE + 20)
    figures.record(
        f"{PEERS} {behaviour} {kind} connections (opened in {opened:.1f} s)",
        "all dropped; a new client served in",
        seconds,
    )


def _tls_then(payload: bytes) -> Callable[[Any, Certs], socket.socket]:
    """A peer that completes TLS, then sends ``payload`` instead of the HMAC answer."""

    def open_(address: Any, certs: Certs) -> socket.socket:
        raw = socket.create_connection(tuple(address), timeout=10)
        tls = raw_tls_context(certs).wrap_socket(raw, server_hostname="localhost")
        if payload:
            tls.sendall(payload)
        return tls

    return open_


def _plain(payload: bytes, reset: bool = False) -> Callable[[Any, Certs], socket.socket]:
    def open_(address: Any, certs: Certs) -> socket.socket:
        sock = _open(address, payload)
        if reset:  # close with a RST instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return sock

    return open_


GARBAGE: dict[str, Callable[[Any, Certs], socket.socket]] = {
    "random bytes": _plain(bytes(range(256)) * 8),
    "an HTTP request": _plain(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    "half a ClientHello, then a reset": _plain(HELLO[:40], reset=True),
    "a ClientHello, then garbage": _plain(HELLO + bytes(range(256))),
    "a ClientHello with its length mangled": _plain(HELLO[:3] + b"\xff\xff" + HELLO[5:]),
    "TLS, then garbage instead of the HMAC answer": _tls_then(b"\x00\x00\x00\x14garbage!"),
    "TLS, then silence": _tls_then(b""),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("peer", GARBAGE.values(), ids=list(GARBAGE))
def test_garbage_during_the_tls_handshake_costs_the_server_nothing_lasting(
    certs: Certs, peer: Callable[[Any, Certs], socket.socket], figures: Figures
) -> None:
    with service(certs) as svc:
        socks = []
        try:
            for _ in range(50):
                socks.append(peer(svc.server.address, certs))
            assert svc.counter.increment() == 42
            svc.new_client_gets_in()
        finally:
            for sock in socks:
                sock.close()
        settled = poll_until(svc.settled, timeout=HANDSHAKE + 20)
        assert svc.counter.get() == 42
    figures.record(f"50 TLS peers: {_name_of(peer)}", "dropped; nothing left", settled)


def _name_of(peer: Callable[..., Any]) -> str:
    return next(name for name, value in GARBAGE.items() if value is peer)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_connections_over_the_cap_are_refused_at_once_and_service_recovers(
    certs: Certs, kind: str
) -> None:
    tls_certs = certs if kind == "tls" else None
    with service(tls_certs, max_connections=3) as svc:
        server = svc.server
        files = None if tls_certs is None else svc.client.server_ref.tls
        key = bytes(server.authkey)
        channels = [Channel(server.address, key, tls=files) for _ in range(2)]  # 3 with svc's
        try:
            start = time.monotonic()
            with pytest.raises(proxyshare.ServerUnavailableError, match="connection limit"):
                Channel(server.address, key, tls=files)
            assert time.monotonic() - start < 3
            assert server.admission.refused >= 1
            assert svc.counter.increment() == 42  # those in are served
            channels.pop().close()
            poll_until(lambda: len(server.sessions) == 2, timeout=10)
            channels.append(Channel(server.address, key, tls=files))
        finally:
            for channel in channels:
                channel.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_a_new_connection_over_the_handshake_cap_evicts_the_oldest(certs: Certs, kind: str) -> None:
    with service(certs if kind == "tls" else None, max_handshakes=3) as svc:
        idle = [_open(svc.server.address, b"") for _ in range(3)]
        try:
            poll_until(lambda: svc.server.admission.in_handshake == 3, timeout=10)
            svc.new_client_gets_in()  # takes the oldest idle connection's place
            idle[0].settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                data = idle[0].recv(4096)
                while data:  # a TLS server may have sent its "use TLS" notice first
                    data = idle[0].recv(4096)
            assert svc.server.admission.evicted >= 1
        finally:
            for sock in idle:
                sock.close()
        poll_until(svc.settled, timeout=HANDSHAKE + 20)


@pytest.mark.timeout(60)
def test_caps_that_are_not_positive_are_refused() -> None:
    manager = proxyshare.ShareManager(("127.0.0.1", 0), authkey=b"k")
    for caps in ({"max_connections": 0}, {"max_handshakes": -1}):
        with pytest.raises(ValueError, match="positive int"):
            manager.get_server(**caps)
    close_all_channels()
