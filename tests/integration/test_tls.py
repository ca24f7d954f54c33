"""TLS on the wire: clients, pool workers, what an eavesdropper sees, and clear failures.

Certificates are made at test time (trustme).  Servers run in a thread of
the test process (``tls_server``); pool workers are separate processes that
reach them by address, as they would reach a remote server.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import pickle
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import proxyshare
from proxyshare import _protocol as P
from proxyshare._address import TlsAddress
from proxyshare._client import close_all_channels
from proxyshare._tls import HELLO_WAIT
from tests.support import START_METHODS, increment_many, locked_read_modify_write, wait_until
from tests.tls_support import Certs, client_for, make_certs, raw_tls_context, tls_server

pytestmark = pytest.mark.matrix  # ssl differs by Python: see noxfile.py

FAIL_WITHIN = 4.0  # seconds: every misconfiguration is reported well inside this


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


# -- it works ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_every_kind_of_resource_works_over_tls(certs: Certs) -> None:
    with tls_server(certs) as server:
        assert isinstance(server.address, TlsAddress)
        client = client_for(server, certs)
        assert repr(client).endswith(f"tls://127.0.0.1:{server.address.port}>")
        counter = client.counter("hits")
        assert [counter.increment() for _ in range(100)][-1] == 100
        d = client.dict("d")
        d["big"] = b"x" * (3 << 20)  # several TLS records each way
        assert d["big"] == b"x" * (3 << 20)
        lock = client.lock("guard")
        with lock:
            assert lock.owner() is not None
        queue = client.queue("q")
        queue.put_many(list(range(1000)))
        assert queue.get_many(1000) == list(range(1000))
        with client.pipeline() as pipe:
            pipe.counter("hits").increment()
            pipe.counter("hits").get()
        assert pipe.results == [101, 101]
        assert client.status()["server"]["operations"] > 0


@pytest.mark.timeout(60)
def test_a_blocking_acquire_is_granted_over_tls(certs: Certs) -> None:
    """A waiter parked in the reactor is answered through its SSL connection."""
    with tls_server(certs) as server:
        client = client_for(server, certs)
        lock = client.lock("guard")
        assert lock.acquire()
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(lock.acquire(timeout=30)))
        waiter.start()
        wait_until(lambda: client.status()["resources"][0]["waiters"], timeout=10)
        lock.release()
        waiter.join(30)
        assert got == [True]


@pytest.mark.timeout(60)
def test_mutual_tls_serves_a_client_with_a_certificate_from_its_ca(certs: Certs) -> None:
    with tls_server(certs, mutual=True) as server:
        client = client_for(server, certs, mutual=True)
        assert client.counter("c").increment() == 1


@pytest.mark.timeout(60)
def test_the_environment_names_the_tls_files(certs: Certs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYSHARE_TLS_CA", str(certs.ca))
    monkeypatch.setenv("PROXYSHARE_TLS_CERT", str(certs.client_cert))
    monkeypatch.setenv("PROXYSHARE_TLS_KEY", str(certs.client_key))
    with tls_server(certs, mutual=True) as server:
        client = proxyshare.connect(server.address, authkey=bytes(server.authkey))
        assert client.counter("c").increment() == 1
        tls = client.server_ref.tls
        assert (tls.ca, tls.cert, tls.key) == tuple(
            str(p) for p in (certs.ca, certs.client_cert, certs.client_key)
        )


@pytest.mark.timeout(60)
def test_the_hostname_is_verified_and_a_listed_name_works(certs: Certs) -> None:
    with tls_server(certs, cert=certs.localhost_cert, key=certs.localhost_key) as server:
        port = server.address.port
        client = proxyshare.connect(
            f"tls://localhost:{port}", authkey=bytes(server.authkey), tls_ca=certs.ca
        )
        assert client.counter("c").increment() == 1
        with pytest.raises(proxyshare.AuthenticationError, match="not valid for the name"):
            proxyshare.connect(
                f"tls://127.0.0.1:{port}", authkey=bytes(server.authkey), tls_ca=certs.ca
            )


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_2_is_accepted_and_nothing_older(certs: Certs) -> None:
    with tls_server(certs) as server:
        host, port = server.address
        context = raw_tls_context(certs)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            assert tls.version() == "TLSv1.2"
        old = raw_tls_context(certs)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with contextlib.suppress(ssl.SSLError, ValueError):
            old.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            pytest.raises(ssl.SSLError) as refused,
            old.wrap_socket(raw, server_hostname=host),
        ):
            pass
        if refused.value.reason == "NO_PROTOCOLS_AVAILABLE":
            pytest.skip("this OpenSSL cannot offer TLS 1.1 at all")
        assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"  # the server said no
        assert client_for(server, certs).counter("still").increment() == 1


# -- pool workers -----------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
@pytest.mark.parametrize("method", START_METHODS)
def test_proxies_pickled_into_pool_workers_keep_using_tls(
    certs: Certs, method: str, mutual: bool
) -> None:
    with tls_server(certs, mutual=mutual) as server:
        client = client_for(server, certs, mutual=mutual)
        counter, lock, d = client.counter("hits"), client.lock("guard"), client.dict("totals")
        context = multiprocessing.get_context(method)
        with cf.ProcessPoolExecutor(2, mp_context=context) as pool:
            futures = [pool.submit(increment_many, counter, 50) for _ in range(4)]
            futures += [pool.submit(locked_read_modify_write, lock, d, "k", 20) for _ in range(2)]
            for future in futures:
                future.result(timeout=60)
        assert counter.get() == 200
        assert d["k"] == 40


def test_a_pickled_proxy_carries_the_file_paths_and_no_key_material(certs: Certs) -> None:
    with tls_server(certs, mutual=True) as server:
        counter = client_for(server, certs, mutual=True).counter("c")
        data = pickle.dumps(counter)
        for path in (certs.ca, certs.client_cert, certs.client_key):
            assert str(path).encode() in data
        for path in (certs.client_key, certs.client_cert, certs.ca):
            assert path.read_bytes().strip().splitlines()[1] not in data  # no PEM content
        assert b"PRIVATE KEY" not in data
        copy = pickle.loads(data)
        assert copy == counter and copy._transport.tls == counter._transport.tls


# -- what the network sees -------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_a_raw_socket_sees_no_clear_text_challenge(certs: Certs) -> None:
    """Before TLS the server sends nothing but, after a pause, the plain notice "use TLS"."""
    with tls_server(certs) as server:
        with socket.create_connection(tuple(server.address), timeout=10) as raw:
            notice = len(P.TLS_REQUIRED).to_bytes(4, "big") + P.TLS_REQUIRED
            start = time.monotonic()
            data = b""
            while len(data) < len(notice):
                chunk = raw.recv(4096)
                if not chunk:
                    break
                data += chunk
            waited = time.monotonic() - start
        assert data == notice
        assert b"CHALLENGE" not in data
        assert waited >= HELLO_WAIT * 0.8  # a TLS client's hello comes first, so it never sees it
        assert client_for(server, certs).counter("c").increment() == 1


class Recorder:
    """A TCP relay that keeps every byte that crosses it, both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = {"to server": bytearray(), "to client": bytearray()}
        self.thread = threading.Thread(target=self._relay, daemon=True)
        self.thread.start()

    def _relay(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target)
            ends = {client: (server, "to server"), server: (client, "to client")}
            open_ends = {client, server}
            while open_ends:
                readable, _, _ = select.select(list(open_ends), [], [], 10)
                if not readable:
                    break
                for sock in readable:
                    data = sock.recv(65536)
                    other, direction = ends[sock]
                    if not data:
                        open_ends.discard(sock)
                        with contextlib.suppress(OSError):
                            other.shutdown(socket.SHUT_WR)
                        continue
                    self.seen[direction] += data
                    other.sendall(data)
            client.close()
            server.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.mark.timeout(60)
def test_an_eavesdropper_sees_neither_the_handshake_nor_the_values(certs: Certs) -> None:
    secret_value = "the-value-nobody-on-the-wire-may-read"
    with tls_server(certs) as server:
        recorder = Recorder(tuple(server.address))
        try:
            client = proxyshare.connect(
                f"tls://localhost:{recorder.port}", authkey=bytes(server.authkey), tls_ca=certs.ca
            )
            d = client.dict("secrets-dict")
            d["k"] = secret_value
            assert d["k"] == secret_value
            close_all_channels()
        finally:
            recorder.close()
    sent, received = bytes(recorder.seen["to server"]), bytes(recorder.seen["to client"])
    assert sent[:1] == b"\x16" and received[:1] == b"\x16"  # TLS handshake records, first
    for clear in (b"CHALLENGE", b"WELCOME", secret_value.encode(), b"secrets-dict"):
        assert clear not in sent and clear not in received
    assert bytes(server.authkey) not in sent + received


# -- failing clearly -----------------------------------------------------------------------------

# (case, server: "tls" | "mutual" | "plain" | "localhost-only", connect kwargs, error, message)
FAILURES: list[tuple[str, str, Callable[[Certs], dict[str, Any]], type[Exception], str]] = [
    (
        "a plain client, a TLS server",
        "tls",
        lambda c: {"scheme": ""},
        proxyshare.AuthenticationError,
        "speaks TLS: connect to tls://",
    ),
    (
        "a TLS client, a plain server",
        "plain",
        lambda c: {"tls_ca": c.ca},
        proxyshare.AuthenticationError,
        "does not speak TLS",
    ),
    (
        "an untrusted certificate",
        "tls",
        lambda c: {},
        proxyshare.AuthenticationError,
        "certificate verify failed: .* pass tls_ca=",
    ),
    (
        "a CA that did not sign the certificate",
        "tls",
        lambda c: {"tls_ca": c.other_ca},
        proxyshare.AuthenticationError,
        "certificate verify failed: .*did not sign it.* pass tls_ca=",
    ),
    (
        "a wrong hostname",
        "localhost-only",
        lambda c: {"tls_ca": c.ca},
        proxyshare.AuthenticationError,
        "certificate verify failed: .* not valid for the name '127.0.0.1'",
    ),
    (
        "no client certificate under mutual TLS",
        "mutual",
        lambda c: {"tls_ca": c.ca},
        proxyshare.AuthenticationError,
        "requires a client certificate .* pass tls_cert=FILE and tls_key=FILE",
    ),
    (
        "a client certificate from another CA under mutual TLS",
        "mutual",
        lambda c: {"tls_ca": c.ca, "tls_cert": c.stranger_cert, "tls_key": c.stranger_key},
        proxyshare.AuthenticationError,
        "refused this client's certificate",
    ),
]


@contextlib.contextmanager
def _server_for(kind: str, certs: Certs) -> Iterator[Any]:
    if kind == "plain":
        with tls_server(None) as server:
            yield server
    elif kind == "localhost-only":
        with tls_server(certs, cert=certs.localhost_cert, key=certs.localhost_key) as server:
            yield server
    else:
        with tls_server(certs, mutual=kind == "mutual") as server:
            yield server


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("server_kind", "options", "error", "message"),
    [row[1:] for row in FAILURES],
    ids=[row[0] for row in FAILURES],
)
def test_a_misconfiguration_fails_within_seconds_saying_what_to_fix(
    certs: Certs,
    server_kind: str,
    options: Callable[[Certs], dict[str, Any]],
    error: type[Exception],
    message: str,
) -> None:
    with _server_for(server_kind, certs) as server:
        host, port = server.address
        kwargs = options(certs)
        scheme = kwargs.pop("scheme", "tls://")
        start = time.monotonic()
        with pytest.raises(error, match=message):
            proxyshare.connect(f"{scheme}{host}:{port}", authkey=bytes(server.authkey), **kwargs)
        elapsed = time.monotonic() - start
        assert elapsed < FAIL_WITHIN
        if server_kind == "plain":  # the server keeps serving whoever is right
            assert proxyshare.connect(server.address, authkey=bytes(server.authkey))
        elif server_kind == "localhost-only":
            assert proxyshare.connect(
                f"tls://localhost:{port}", authkey=bytes(server.authkey), tls_ca=certs.ca
            )
        else:
            assert client_for(server, certs, mutual=server_kind == "mutual").counter("ok")


@pytest.mark.timeout(30)
def test_tls_files_for_an_address_that_is_not_tls_are_refused(certs: Certs) -> None:
    with pytest.raises(proxyshare.ProxyShareError, match="not a tls:// address"):
        proxyshare.connect("127.0.0.1:1", authkey=b"k", tls_ca=certs.ca)


@pytest.mark.timeout(30)
def test_an_embedded_server_does_not_serve_tls_and_says_what_does(certs: Certs) -> None:
    with pytest.raises(proxyshare.ProxyShareError, match="proxyshare serve --tls-cert"):
        proxyshare.ShareManager("tls://127.0.0.1:0", authkey=b"k").start()


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604])
def test_a_server_key_readable_by_others_is_refused(
    certs: Certs, tmp_path: Path, mode: int
) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(certs.server_key.read_bytes())
    key.chmod(mode)
    manager = proxyshare.ShareManager(("127.0.0.1", 0), authkey=b"k")
    with pytest.raises(proxyshare.ProxyShareError, match=r"readable by other users .*chmod 600"):
        manager.get_server(tls_cert=certs.server_cert, tls_key=key)


@pytest.mark.timeout(30)
def test_a_client_key_readable_by_others_is_refused(certs: Certs, tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_bytes(certs.client_key.read_bytes())
    key.chmod(0o644)
    with (
        tls_server(certs, mutual=True) as server,
        pytest.raises(proxyshare.ProxyShareError, match="chmod 600"),
    ):
        proxyshare.connect(
            server.address,
            authkey=bytes(server.authkey),
            tls_ca=certs.ca,
            tls_cert=certs.client_cert,
            tls_key=key,
        )


@pytest.mark.timeout(30)
def test_a_missing_ca_file_is_named_in_the_error(certs: Certs, tmp_path: Path) -> None:
    with (
        tls_server(certs) as server,
        pytest.raises(proxyshare.ProxyShareError, match=r"cannot read the TLS CA file .*nope\.pem"),
    ):
        proxyshare.connect(
            server.address, authkey=bytes(server.authkey), tls_ca=tmp_path / "nope.pem"
        )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("wait", ["lock.acquire", "queue.get"])
def test_an_interrupted_wait_over_tls_cancels_only_itself(certs: Certs, wait: str) -> None:
    """The cancel and its acknowledgement travel through SSL, whose decrypted bytes
    epoll cannot see: the client keeps its other lock, nothing is taken later."""
    import signal

    class Deadline(Exception):
        pass

    def interrupt(signum: int, frame: Any) -> None:
        raise Deadline

    with tls_server(certs) as server:
        client = client_for(server, certs)
        kept, busy, q = client.lock("kept"), client.lock("busy"), client.queue("q")
        assert kept.acquire()
        taken, free = threading.Event(), threading.Event()

        def hold() -> None:
            busy.acquire()
            taken.set()
            free.wait(30)
            busy.release()

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert taken.wait(10)
        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        try:
            with pytest.raises(Deadline):
                busy.acquire() if wait == "lock.acquire" else q.get()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        free.set()
        holder.join(10)
        assert kept.locked() and kept.owner()["pid"] == os.getpid()  # type: ignore[index]
        assert not busy.locked()  # the released lock went to no cancelled waiter
        q.put("x")
        assert q.get(timeout=5) == "x"
        kept.release()
