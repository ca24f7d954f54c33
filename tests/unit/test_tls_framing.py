"""Framing over TLS (``_tls.TLSFramedSocket``) on socket pairs, and the files a client names."""

from __future__ import annotations

import pickle
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxyshare._address import TlsAddress, format_address, parse_address
from proxyshare._client import ServerRef
from proxyshare._errors import ProxyShareError
from proxyshare._tls import TLSFiles, TLSFramedSocket, client_context, client_files, server_context
from proxyshare._wire import INCOMPLETE, Pollers
from tests.tls_support import Certs, make_certs

pytestmark = [pytest.mark.timeout(30), pytest.mark.matrix]  # differs by Python: see noxfile.py

_HEADER = struct.Struct("!i")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def pair(certs: Certs) -> Iterator[tuple[TLSFramedSocket, TLSFramedSocket]]:
    """(client end, server end), TLS-handshaken over a socket pair."""
    a, b = socket.socketpair()
    client_ssl = client_context(TLSFiles(ca=str(certs.ca))).wrap_socket(
        a, server_hostname="localhost", do_handshake_on_connect=False
    )
    server_ssl = server_context(certs.server_cert, certs.server_key).wrap_socket(
        b, server_side=True, do_handshake_on_connect=False
    )
    done = threading.Thread(target=server_ssl.do_handshake)
    done.start()
    client_ssl.do_handshake()
    done.join(10)
    ends = TLSFramedSocket(client_ssl, None), TLSFramedSocket(server_ssl, None)
    try:
        yield ends
    finally:
        for end in ends:
            end.close()


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


@pytest.mark.parametrize("size", [0, 1, 100, 16 * 1024 - 5, 16 * 1024, 64 * 1024, 1 << 20])
@pytest.mark.parametrize("polling", [True, False], ids=["polling", "sleeping"])
def test_messages_of_every_size_arrive_whole(
    pair: tuple[TLSFramedSocket, TLSFramedSocket], size: int, polling: bool
) -> None:
    left, right = pair
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sender = threading.Thread(target=left.send_bytes, args=(payload,))
    sender.start()
    assert bytes(right.recv_view(None, Pollers(1) if polling else None)) == payload
    sender.join(10)
    right.send_bytes(b"and back")
    assert left.recv_bytes() == b"and back"


def test_recv_ready_never_waits_and_hands_over_what_it_could_not_finish(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    client, server = pair
    assert server.recv_ready() is None  # nothing yet
    client.send_bytes(b"small")
    deadline = time.monotonic() + 5
    while (got := server.recv_ready()) is None:
        assert time.monotonic() < deadline
    assert isinstance(got, memoryview) and bytes(got) == b"small"
    big = b"x" * (200 * 1024)  # many TLS records
    sender = threading.Thread(target=client.send_bytes, args=(big,))
    sender.start()
    while (have := server.recv_ready()) is None:
        assert time.monotonic() < deadline
    assert have is INCOMPLETE  # one read's worth at most: the rest is read blocking
    assert bytes(server.recv_view()) == big
    sender.join(10)


def test_recv_ready_says_eof_when_the_peer_closes(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    client, server = pair
    client.close()
    deadline = time.monotonic() + 5
    with pytest.raises(EOFError):  # poll until the close has arrived
        while server.recv_ready() is None:
            assert time.monotonic() < deadline


def test_two_messages_in_one_record_both_arrive_the_second_reported_buffered(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    """A reactor gets no socket event for the second: ``buffered()`` must say it is there."""
    client, server = pair
    client._stream.sendall(_frame(b"one") + _frame(b"two"))
    deadline = time.monotonic() + 5
    while (first := server.recv_ready()) is None:
        assert time.monotonic() < deadline
    assert isinstance(first, memoryview) and bytes(first) == b"one"
    assert server.buffered()
    second = server.recv_ready()
    assert isinstance(second, memoryview) and bytes(second) == b"two"
    assert not server.buffered()


def test_bytes_left_inside_ssl_after_a_message_are_the_next_message(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    """A blocking read that ends mid-record leaves the next message buffered, whole."""
    client, server = pair
    body = b"y" * 1000
    client._stream.sendall(_HEADER.pack(len(body)) + body[:10])  # one record
    client._stream.sendall(body[10:] + _frame(b"next"))  # another, with the next message in it
    assert bytes(server.recv_view()) == body
    assert server.buffered()
    assert bytes(server.recv_view()) == b"next"


def test_readable_reports_bytes_held_inside_ssl(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    client, server = pair
    client.send_bytes(b"0123456789")
    one = bytearray(1)
    server.sock.recv_into(memoryview(one), 1)  # reads the record, keeps the rest inside SSL
    assert server.pending() > 0
    assert server.readable(0)
    assert server.peer_closed()  # a waiting client sends nothing: this one broke the protocol


def test_peer_closed_is_false_while_the_peer_waits_and_true_once_it_closes(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    client, server = pair
    assert not server.peer_closed()
    client.close()
    deadline = time.monotonic() + 5
    while not server.peer_closed():
        assert time.monotonic() < deadline


def test_send_some_never_blocks_and_the_same_bytes_offered_again_finish_the_frame(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    """OpenSSL takes a write whole or reports "want write"; then the session's outbox
    offers it the same bytes again, and the peer reads every frame intact."""
    client, server = pair
    frame = memoryview(_frame(b"z" * 8000))
    sent_whole = 0
    while (sent := server.send_some(frame)) == len(frame):  # until the socket is full
        sent_whole += 1
        assert sent_whole < 10_000
    assert sent == 0
    received: list[bytes] = []

    def read() -> None:
        for _ in range(sent_whole + 1):
            received.append(client.recv_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 20
    while server.send_some(frame) == 0:  # the frame OpenSSL was offered, offered again
        assert time.monotonic() < deadline
        select.select([], [server.sock.fileno()], [], 0.05)  # writable, or a moment passed
    reader.join(20)
    assert received == [b"z" * 8000] * (sent_whole + 1)


def test_a_read_times_out_and_a_shutdown_wakes_a_blocked_read(
    pair: tuple[TLSFramedSocket, TLSFramedSocket],
) -> None:
    _client, server = pair
    server.set_recv_timeout(0.2)
    start = time.monotonic()
    with pytest.raises(BlockingIOError):  # as SO_RCVTIMEO makes a plain socket's read fail
        server.recv_bytes()
    assert 0.15 < time.monotonic() - start < 5
    server.set_recv_timeout(None)
    errors: list[BaseException] = []
    started = threading.Event()

    def blocked() -> None:
        started.set()
        try:
            server.recv_bytes()
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=blocked)
    reader.start()
    started.wait(10)  # blocked or about to be: the shutdown must work either way
    server.sock.shutdown(socket.SHUT_RDWR)
    reader.join(10)
    assert not reader.is_alive()
    assert errors and isinstance(errors[0], (EOFError, OSError))


# -- addresses and what a reference carries --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tls://example.org:50000", ("example.org", 50000)),
        ("tls://127.0.0.1:1", ("127.0.0.1", 1)),
        ("tls://[::1]:50000", ("::1", 50000)),
    ],
)
def test_tls_addresses_parse_to_a_tls_address_and_format_back(
    text: str, expected: tuple[str, int]
) -> None:
    address = parse_address(text)
    assert isinstance(address, TlsAddress) and tuple(address) == expected
    assert format_address(address) == text
    assert parse_address(address) == address and isinstance(parse_address(address), TlsAddress)
    assert pickle.loads(pickle.dumps(address)) == address
    assert not isinstance(parse_address(expected), TlsAddress)


@pytest.mark.parametrize("text", ["tls://", "tls://host", "tls://:50000", "tls://h:99999"])
def test_bad_tls_addresses_are_refused_naming_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"tls://host:port|port"):
        parse_address(text)


def test_a_tls_reference_pickles_its_paths_and_differs_from_a_plain_one(tmp_path: Path) -> None:
    files = TLSFiles(ca=str(tmp_path / "ca.pem"))
    ref = ServerRef("tls://h:1", b"key", files)
    plain = ServerRef("h:1", b"key")
    copy = pickle.loads(pickle.dumps(ref))
    assert copy == ref and copy.tls == files and isinstance(copy.address, TlsAddress)
    assert ref != plain and hash(ref) != hash(plain)
    assert ServerRef("tls://h:1", b"key").tls == TLSFiles()  # the system's CAs
    with pytest.raises(ValueError, match="not a tls:// address"):
        ServerRef("h:1", b"key", files)


def test_client_files_come_from_arguments_then_the_environment(tmp_path: Path) -> None:
    env = {"PROXYSHARE_TLS_CA": "env-ca.pem", "PROXYSHARE_TLS_CERT": str(tmp_path / "c.pem")}
    files = client_files(ca=tmp_path / "ca.pem", environ=env)
    assert files.ca == str(tmp_path / "ca.pem")  # absolute, from the argument
    assert files.cert == str(tmp_path / "c.pem") and files.key is None
    assert client_files(environ={"PROXYSHARE_TLS_CA": "rel.pem"}).ca == str(
        Path("rel.pem").resolve()
    )
    with pytest.raises(ProxyShareError, match="without its certificate"):
        client_files(key=tmp_path / "k.pem", environ={})


def test_contexts_require_tls_1_2_and_verify_the_hostname(certs: Certs) -> None:
    client = client_context(TLSFiles(ca=str(certs.ca)))
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    assert client is client_context(TLSFiles(ca=str(certs.ca)))  # made once per process
    server = server_context(certs.server_cert, certs.server_key, certs.ca)
    assert server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server.verify_mode == ssl.CERT_REQUIRED  # mutual TLS
    assert server_context(certs.server_cert, certs.server_key).verify_mode == ssl.CERT_NONE


def test_a_certificate_and_key_that_do_not_match_are_refused_naming_both(certs: Certs) -> None:
    with pytest.raises(ProxyShareError, match=r"server\.pem.*client\.key.*cannot be used"):
        server_context(certs.server_cert, certs.client_key)
