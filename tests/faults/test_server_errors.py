"""Every server-side exception is logged with its traceback and reaches the client as __cause__."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import proxyshare
from tests.faults import workers
from tests.faults.conftest import serve_in_thread

pytestmark = pytest.mark.matrix


@pytest.fixture
def client() -> Iterator[proxyshare.ShareManager]:
    with serve_in_thread() as (_server, client):
        client.counter("c", initial=1)
        client.dict("d")["a"] = "text"
        client.lock("l")
        client.semaphore("s")
        client.queue("q")
        client.barrier("b", parties=2)
        yield client


def _use_after_delete(mgr: proxyshare.ShareManager) -> None:
    counter = mgr.counter("c")
    mgr.delete("c")
    counter.increment()


# (failing call, error the client sees, where the server raised it)
FAILURES: dict[str, tuple[Callable[[proxyshare.ShareManager], Any], type[Exception], str]] = {
    "missing key": (lambda m: m.dict("d")["nope"], KeyError, "resources/dict.py"),
    "bad type": (lambda m: m.counter("c").increment("x"), TypeError, "check_int"),
    "increment a str": (lambda m: m.dict("d").increment("a"), TypeError, "increment"),
    "release unheld lock": (lambda m: m.lock("l").release(), proxyshare.NotOwnerError, "release"),
    "release unheld permit": (
        lambda m: m.semaphore("s").release(),
        proxyshare.NotOwnerError,
        "release",
    ),
    "other kind": (lambda m: m.lock("c"), proxyshare.ResourceKindError, "_op_open"),
    "deleted resource": (_use_after_delete, proxyshare.ResourceNotFoundError, "dispatch"),
    "queue empty": (lambda m: m.queue("q").get(timeout=0.01), queue.Empty, "get"),
    "barrier timeout": (
        lambda m: m.barrier("b", parties=2).wait(timeout=0.01),
        threading.BrokenBarrierError,
        "wait",
    ),
    "unpickling raises": (
        lambda m: m.dict("d").__setitem__("x", workers.ExplodesWhenUnpickled("ValueError")),
        ValueError,
        "_explode",
    ),
    "unpickling raises SystemExit": (
        lambda m: m.dict("d").__setitem__("x", workers.ExplodesWhenUnpickled("SystemExit")),
        proxyshare.ProxyShareError,
        "_explode",
    ),
    "lock re-acquired by its holder": (
        lambda m: (m.lock("l").acquire(), m.lock("l").acquire()),
        proxyshare.ProxyShareError,
        "_before_acquire",
    ),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failure", FAILURES.values(), ids=list(FAILURES))
def test_server_exception_is_logged_with_traceback_and_is_the_clients_cause(
    client: proxyshare.ShareManager,
    caplog: pytest.LogCaptureFixture,
    failure: tuple[Callable[[proxyshare.ShareManager], Any], type[Exception], str],
) -> None:
    call, error, where = failure
    with caplog.at_level(logging.INFO, logger="proxyshare.server"), pytest.raises(error) as info:
        call(client)
    remote = info.value.__cause__
    assert isinstance(remote, proxyshare.RemoteTraceback)
    assert remote.tb.startswith("Traceback (most recent call last):")
    assert where in remote.tb  # the server-side frames, not the client's
    raised = remote.tb.strip().splitlines()[-1].split(":")[0]  # e.g. "_queue.Empty"
    name = raised.rpartition(".")[2]
    assert name == type(info.value).__name__ or str(info.value).startswith(name)
    logged = [r for r in caplog.records if r.name == "proxyshare.server" and r.exc_info]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    text = caplog.handler.formatter.formatException(logged[0].exc_info)  # type: ignore[union-attr, arg-type]
    assert where in text
    assert remote.tb.strip().splitlines()[-1] in text  # the same error, both sides


@pytest.mark.timeout(30)
def test_a_pipeline_failure_is_logged_and_its_cause_carries_the_server_traceback(
    client: proxyshare.ShareManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="proxyshare.server"):
        pipe = client.pipeline()
        pipe.counter("c").increment(1)
        pipe.dict("d").increment("a")  # a str: fails
        with pytest.raises(proxyshare.PipelineError) as info:
            pipe.execute()
    assert info.value.index == 1 and info.value.results == [2]
    cause = info.value.__cause__
    assert isinstance(cause, TypeError)
    assert isinstance(cause.__cause__, proxyshare.RemoteTraceback)
    assert "increment" in cause.__cause__.tb
    assert [r for r in caplog.records if r.name == "proxyshare.server" and r.exc_info]
