"""The client call path under misuse: nested calls, unreadable replies, closed channels."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from tests.integration import workers

pytestmark = pytest.mark.matrix


@pytest.mark.timeout(30)
def test_a_call_from_a_signal_handler_during_a_call_is_refused_clearly(
    manager: proxyshare.ShareManager,
) -> None:
    hits, stop = manager.counter("hits"), manager.event("stop")
    hits.increment()
    seen: list[BaseException] = []

    def handler(signum: int, frame: Any) -> None:
        try:
            hits.increment()
        except proxyshare.ProxyShareError as exc:
            seen.append(exc)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        assert stop.wait(1) is False  # the handler ran while this call was waiting
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(seen) == 1 and "signal handler" in str(seen[0])
    assert hits.increment() == 2  # the connection is still in step


def test_a_reply_that_cannot_be_unpickled_here_keeps_the_connection_and_locks(
    manager: proxyshare.ShareManager,
) -> None:
    d, lock = manager.dict("d"), manager.lock("held")
    d["thing"] = workers.FailsToUnpickleIn(os.getpid())  # fine in the server
    with lock:
        with pytest.raises(proxyshare.ProxyShareError, match="could not be unpickled"):
            d["thing"]
        assert lock.owner()["pid"] == os.getpid()  # type: ignore[index]
    assert "thing" in d


def test_channels_closed_from_another_thread_are_replaced_not_reused(
    manager: proxyshare.ShareManager,
) -> None:
    counter = manager.counter("c")
    counter.increment()
    closer = threading.Thread(target=close_all_channels)
    closer.start()
    closer.join(10)
    # a socket opened now may reuse the old descriptor number
    spare = socket.socket()
    try:
        assert counter.increment() == 2
    finally:
        spare.close()


def test_leaving_a_with_block_keeps_the_original_error_when_the_lock_is_gone(
    manager: proxyshare.ShareManager,
) -> None:
    lock = manager.lock("l")
    with pytest.raises(RuntimeError) as info, lock:
        manager.delete("l")  # the lock vanishes while held
        manager.lock("l")
        raise RuntimeError("the real problem")
    notes = getattr(info.value, "__notes__", [])
    assert any("no longer held" in note for note in notes)


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="3.11+ prints notes with the traceback")
def test_on_python_3_10_the_note_is_also_logged_as_no_traceback_shows_it(
    manager: proxyshare.ShareManager, caplog: pytest.LogCaptureFixture
) -> None:
    lock = manager.lock("l")
    with (
        caplog.at_level(logging.WARNING, logger="proxyshare"),
        pytest.raises(RuntimeError, match="the real problem") as info,
        lock,
    ):
        manager.delete("l")
        manager.lock("l")
        raise RuntimeError("the real problem")
    (record,) = [r for r in caplog.records if "no longer held" in r.getMessage()]
    assert "the real problem" in record.getMessage()
    assert info.value.__notes__ == [record.getMessage().split(" (while handling")[0]]


def test_a_server_that_cannot_start_says_why() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = taken.getsockname()
        with pytest.raises(proxyshare.ProxyShareError, match="Address already in use"):
            proxyshare.ShareManager(address=address, authkey=b"k").start()


def test_only_the_pickle_serializer_is_accepted() -> None:
    with pytest.raises(ValueError, match="not supported"):
        proxyshare.ShareManager(serializer="xmlrpclib")
