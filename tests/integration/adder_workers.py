"""Worker functions for the adder tests (module level: picklable under spawn)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from tests.integration.shm_workers import _in_threads


def add_in_threads(adder: Any, n: int, threads: int = 1) -> int:
    """``threads`` threads of this process each add 1 to ``adder`` ``n`` times."""

    def body() -> None:
        for _ in range(n):
            adder.add()

    _in_threads(body, threads)
    return n * threads


def add_then_wait(adder: Any, n: int, ready: Any, leave: Any = None) -> None:
    """Add 1 ``n`` times, say so, then hold the slot until ``leave`` (or being killed)."""
    for _ in range(n):
        adder.add()
    ready.set()
    if leave is not None:
        leave.wait(60)
        return
    while True:
        time.sleep(1)


def add_until_killed(adder: Any, started: Any) -> None:
    """Add 1 in a tight loop for ever: killed somewhere in the middle of it."""
    adder.add()
    started.set()
    add = adder.add
    while True:
        add()


def add_and_report_pid(adder: Any, n: int) -> int:
    adder.add(n)
    return os.getpid()


def add_from_short_lived_processes(adder: Any, batch: int, batches: int) -> int:
    """Fork ``batch`` children at a time, ``batches`` times; each adds its number and exits.

    Run in a small pool worker rather than the test process: forking a small
    process is quick.  Returns what the children added; raises if one failed.
    """
    expected = 0
    for b in range(batches):
        pids = []
        for i in range(batch):
            n = b * batch + i + 1
            pid = os.fork()
            if pid == 0:  # the child: add once, then exit at once, without cleanup
                code = 1
                try:
                    adder.add(n)
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
            expected += n
        for pid in pids:
            code = _reap(pid, 60)
            if code != 0:
                raise RuntimeError(f"child {pid} failed to add (exit code {code})")
    return expected


def _reap(pid: int, timeout: float) -> int:
    """A forked child's exit code; SIGKILL it if it has not exited within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RuntimeError(f"child {pid} did not exit within {timeout} s")
        time.sleep(0.001)
