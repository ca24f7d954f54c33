"""Timeouts of parked lock waiters: answered on time, and no pile-up of stale timers."""

from __future__ import annotations

import threading
import time

import pytest

from tests.faults.conftest import serve_in_thread

pytestmark = pytest.mark.timeout(60)


def test_acquires_granted_before_their_timeout_leave_no_timers_behind() -> None:
    """2 threads x 1,500 contended acquire(timeout=60): timers stay as few as the waiters."""
    with serve_in_thread() as (server, client):
        errors: list[BaseException] = []
        granted = [0, 0]

        def hammer(slot: int) -> None:
            try:
                lock = client.lock("l")
                for _ in range(1_500):
                    if lock.acquire(timeout=60):
                        granted[slot] += 1
                        lock.release()
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(50)
        assert not errors and granted == [1_500, 1_500]
        assert next(server.reactor._timer_ids) > 300  # many acquires did park with a timer
        live = [entry for entry in server.reactor._timers if entry[2].fn is not None]
        assert live == []  # every wait was answered: no timer left to fire
        assert len(server.reactor._timers) <= 200  # cancelled ones were compacted away


def test_a_parked_acquire_times_out_on_time_and_the_connection_goes_on() -> None:
    with serve_in_thread() as (_server, client):
        lock = client.lock("l")
        assert lock.acquire()
        result: list[object] = []

        def waiter() -> None:
            other = client.lock("l")
            start = time.monotonic()
            result.append(other.acquire(timeout=0.3))
            result.append(time.monotonic() - start)
            result.append(client.counter("c").increment())  # same thread, same session

        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(20)
        assert result[0] is False
        assert 0.3 <= float(result[1]) < 5  # type: ignore[arg-type]
        assert result[2] == 1
        lock.release()
