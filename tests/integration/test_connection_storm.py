"""Many clients connecting at the same moment all get in (``bench --clients 64``)."""

from __future__ import annotations

import threading

import pytest

import proxyshare

CLIENTS = 64


@pytest.mark.timeout(60)
def test_many_clients_connecting_at_once_all_get_in(manager: proxyshare.ShareManager) -> None:
    # The server accepts from a short backlog; a unix-socket connect with a
    # timeout is non-blocking underneath, and Linux answers a full backlog with
    # EAGAIN at once.  Each thread opens its own connection, all at once.
    counter = manager.counter("storm")
    start = threading.Barrier(CLIENTS)
    errors: list[BaseException] = []

    def client() -> None:
        start.wait(30)
        try:
            counter.increment()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert counter.get() == CLIENTS
