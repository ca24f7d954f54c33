"""Parent death: the embedded server does not outlive the process that started it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from tests.faults import workers
from tests.faults.conftest import Figures, poll_until, process_gone
from tests.support import START_METHODS, kill_hard

pytestmark = pytest.mark.matrix


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool_workers", [0, 2], ids=["alone", "with a fork pool"])
@pytest.mark.parametrize("server_method", START_METHODS)
def test_embedded_server_exits_within_5s_when_its_parent_is_sigkilled(
    server_method: str, pool_workers: int, figures: Figures, request: pytest.FixtureRequest
) -> None:
    ctx = multiprocessing.get_context("spawn")  # a clean parent: nothing inherited from pytest
    here, there = ctx.Pipe(duplex=False)
    parent = ctx.Process(
        target=workers.start_manager_and_report, args=(server_method, there, pool_workers)
    )
    pids: list[int] = []
    try:
        parent.start()
        there.close()
        assert here.poll(60), "the parent never reported its server"
        server_pid, pool_pids = here.recv()
        pids = [server_pid, *pool_pids]
        assert not process_gone(server_pid)
        killed_at = time.monotonic()
        os.kill(parent.pid, signal.SIGKILL)  # only the parent: its pool workers live on
        gone = poll_until(lambda: process_gone(server_pid), timeout=5)
        figures.record(f"parent SIGKILLed: {request.node.callspec.id}", "server exited", gone)
        assert time.monotonic() - killed_at < 5
    finally:
        for pid in pids:  # first: they hold the parent's sentinel pipe open
            if not process_gone(pid):
                kill_hard(pid)
        kill_hard(parent)
