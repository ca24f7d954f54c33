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
from tests.support import wait_until

pytestmark = pytest.mark.matrix


@pytest.mark.timeout(60)
def test_a_call_from_a_signal_handler_during_a_call_is_refused_clearly(
    manager: proxyshare.ShareManager,
) -> None:
    hits, stop = manager.counter("hits"), manager.event("stop")
    hits.increment()
    seen: list[BaseException] = []
    handled = threading.Event()
    main = threading.get_ident()

    def handler(signum: int, frame: Any) -> None:
        try:
            hits.increment()
        except proxyshare.ProxyShareError as exc:
            seen.append(exc)
        finally:
            handled.set()

    def interrupt_the_wait() -> None:
        # Signal the main thread only once the server shows it waiting, so the
        # handler runs inside that call (a timer could fire before or after it);
        # then end the wait.  Its own thread, so its own connection.
        try:
            wait_until(lambda: _resource(manager, "stop")["waiting"] == 1, timeout=20)
            signal.pthread_kill(main, signal.SIGUSR1)
            handled.wait(20)
        finally:
            stop.set()

    # SIGUSR1, not SIGALRM: pytest-timeout's alarm stays armed.
    previous = signal.signal(signal.SIGUSR1, handler)
    interrupter = threading.Thread(target=interrupt_the_wait, daemon=True)
    try:
        interrupter.start()
        assert stop.wait(40) is True  # ended by the interrupter, after the handler ran
    finally:
        stop.set()
        interrupter.join(30)
        signal.signal(signal.SIGUSR1, previous)
    assert handled.is_set() and not interrupter.is_alive()
    assert len(seen) == 1 and "signal handler" in str(seen[0])
    assert hits.increment() == 2  # the connection is still in step


def _resource(manager: proxyshare.ShareManager, name: str) -> dict[str, Any]:
    (found,) = [r for r in manager.status()["resources"] if r["name"] == name]
    return dict(found)


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
