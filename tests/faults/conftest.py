"""Fixtures for the fault suite, and the table of measured figures.

Tests record what they measured with the ``figures`` fixture; the table
(scenario, what was injected, outcome, time to recover) is printed at the end
of the run, so a CI log carries the numbers the suite asserts on.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from proxyshare._server import ShareServer
from tests.support import free_port, kill_hard

_FIGURES: list[tuple[str, str, str, str]] = []


class Figures:
    """Collects rows of the report table."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario

    def record(self, injected: str, outcome: str, seconds: float | None = None) -> None:
        recover = "-" if seconds is None else f"{seconds * 1000:.1f} ms"
        _FIGURES.append((self.scenario, injected, outcome, recover))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    module = request.node.module.__name__.rpartition(".")[2]
    return Figures(module.removeprefix("test_").replace("_", " "))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault suite: measured figures")
    widths = [max(len(row[i]) for row in _FIGURES) for i in range(4)]
    header = ("scenario", "injected", "outcome", "recovered in")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    write(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in _FIGURES:
        write(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


# -- servers -----------------------------------------------------------------------


@contextlib.contextmanager
def serve_in_thread(
    address: object = None, authkey: bytes | None = None
) -> Iterator[tuple[ShareServer, proxyshare.ShareManager]]:
    """A ``ShareServer`` in a thread of this process (so logs and globals are reachable).

    Yields the server and a client manager connected to it.  Do not fork
    children that outlive it: they would inherit its sockets.
    """
    key = authkey or secrets.token_hex(16).encode()
    server = proxyshare.ShareManager(address=address, authkey=key).get_server()
    thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
    thread.start()
    try:
        client = proxyshare.connect(server.address, authkey=key)
        yield server, client
    finally:
        # Stop the server before this process's clients hang up.  The other way
        # round, the reactor may read a lock holder's EOF while the server is not
        # yet stopping, release the lock as for any client that left, and grant
        # it to a waiter: a test expecting that waiter's connection to end would
        # read the grant instead, whenever the scheduler ran the reactor first.
        server.stop()
        thread.join(10)
        close_all_channels()
        if thread.is_alive():
            raise AssertionError("the server thread did not stop within 10 s")


@pytest.fixture
def tcp_address() -> tuple[str, int]:
    return ("127.0.0.1", free_port())


@pytest.fixture
def tcp_manager(tcp_address: tuple[str, int]) -> Iterator[proxyshare.ShareManager]:
    """An embedded server on an explicit TCP address (so it can be restarted there)."""
    mgr = proxyshare.ShareManager(address=tcp_address, authkey=secrets.token_hex(16).encode())
    mgr.start()
    try:
        yield mgr
    finally:
        close_all_channels()
        if mgr._process.is_alive():
            mgr.shutdown()
        else:
            kill_hard(mgr._process)


# -- processes -------------------------------------------------------------------


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def server_load(mgr: proxyshare.ShareManager) -> tuple[int, int]:
    """(server threads, connected clients) as ``status`` reports them."""
    status = mgr.status()
    return status["server"]["threads"], len(status["clients"])


def settled(mgr: proxyshare.ShareManager, baseline: tuple[int, int], timeout: float) -> float:
    """Seconds until ``server_load`` is back to ``baseline``: the same clients, and no
    more server threads than then.

    Not "the same threads": a baseline read just after this process's first
    call may count the server thread that did that connection's handshake,
    which exits on its own schedule after the session has started (and
    after the first replies).  Waiting for exactly that count then failed
    whenever the thread was gone by the end.  A thread left behind by each
    of the test's clients still shows.  On timeout the error says what is
    left over, so a failure in a flake hunt's log can be diagnosed from it.
    """
    last: list[tuple[int, int]] = []

    def back() -> bool:
        last[:] = [server_load(mgr)]
        threads, clients = last[0]
        return threads <= baseline[0] and clients == baseline[1]

    try:
        return poll_until(back, timeout)
    except AssertionError:
        clients = mgr.status()["clients"]
        raise AssertionError(
            f"server load (threads, clients) still {last[0]}, baseline {baseline}, "
            f"after {timeout}s; clients: {clients}"
        ) from None


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.005) -> float:
    """Seconds until ``predicate()`` was true; AssertionError after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {predicate}")
        time.sleep(interval)
    return time.monotonic() - start


def reap(procs: list[Any]) -> None:
    for proc in procs:
        if proc.is_alive():
            kill_hard(proc)
        else:
            proc.join(1)
