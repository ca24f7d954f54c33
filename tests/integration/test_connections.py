"""One connection per (process, thread, server): reused, never shared after fork."""

from __future__ import annotations

import multiprocessing
import os
import threading

import pytest

import proxyshare
from proxyshare._client import ServerRef
from tests.integration import workers
from tests.support import wait_until

pytestmark = pytest.mark.matrix


def _my_clients(manager: proxyshare.ShareManager, pid: int) -> list[dict[str, object]]:
    return [c for c in manager.status()["clients"] if c["pid"] == pid]


def test_calls_from_one_thread_reuse_one_connection(manager: proxyshare.ShareManager) -> None:
    counter = manager.counter("c")
    channel = counter._transport.channel()
    for _ in range(50):
        counter.increment()
    assert counter._transport.channel() is channel
    assert len(_my_clients(manager, os.getpid())) == 1


def test_proxies_to_the_same_server_share_the_connection(manager: proxyshare.ShareManager) -> None:
    a, b = manager.counter("a"), manager.dict("b")
    assert a._transport.channel() is b._transport.channel()
    again = ServerRef(manager.address, bytes(manager._authkey))
    assert again.channel() is a._transport.channel()


def test_each_thread_gets_its_own_connection_and_it_closes_with_the_thread(
    manager: proxyshare.ShareManager,
) -> None:
    counter = manager.counter("c")
    counter.increment()
    before = len(_my_clients(manager, os.getpid()))
    seen: list[object] = []
    go_on = threading.Event()

    def work() -> None:
        counter.increment()
        seen.append(counter._transport.channel())
        go_on.wait(10)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: len(seen) == 3, timeout=10)
    assert len({id(ch) for ch in seen}) == 3
    assert len(_my_clients(manager, os.getpid())) == before + 3
    go_on.set()
    for t in threads:
        t.join(10)
    seen.clear()  # drop the last references: the thread-locals went with the threads
    wait_until(lambda: len(_my_clients(manager, os.getpid())) == before, timeout=10)
    assert counter.get() == 4


def test_a_forked_child_opens_its_own_connection(manager: proxyshare.ShareManager) -> None:
    counter = manager.counter("c")
    counter.increment()  # the parent's connection exists before the fork
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child_pid = pool.apply(workers.increment_and_report_pid, (counter, 100))
    assert child_pid != os.getpid()
    assert counter.increment() == 102  # the parent's connection was not disturbed
    assert len(_my_clients(manager, os.getpid())) == 1


def test_tcp_connections_disable_nagle_and_keep_alive_on_both_ends() -> None:
    import socket

    from tests.faults.conftest import serve_in_thread
    from tests.support import free_port

    with serve_in_thread(address=("127.0.0.1", free_port())) as (server, client):
        client.counter("c").increment()
        sock = client.server_ref.channel()._wire.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        (session,) = server.sessions.values()
        served = session.wire.sock
        assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert served.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
