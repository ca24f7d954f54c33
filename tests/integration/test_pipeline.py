"""Pipelines: one round trip, applied atomically and in order, clear failures."""

from __future__ import annotations

import threading

import pytest

import proxyshare

pytestmark = pytest.mark.matrix


def _operations(manager: proxyshare.ShareManager) -> int:
    return int(manager.status()["server"]["operations"])


def test_results_come_back_in_order_from_one_round_trip(manager: proxyshare.ShareManager) -> None:
    manager.counter("hits"), manager.dict("stats"), manager.queue("jobs")
    before = _operations(manager)
    with manager.pipeline() as p:
        for _ in range(3):
            p.counter("hits").increment()
        p.dict("stats").increment("calls", 5)
        p.queue("jobs").put_nowait("job-1")
        p.counter("hits").get()
    assert p.results == [1, 2, 3, 5, None, 3]
    # the pipeline itself, then the STATUS request that reads the count
    assert _operations(manager) - before == 2


def test_execute_sends_what_is_queued_and_returns_the_results(
    manager: proxyshare.ShareManager,
) -> None:
    manager.counter("c")
    p = manager.pipeline()
    assert p.execute() == []
    p.counter("c").increment(2)
    assert len(p) == 1
    assert p.execute() == [2]
    assert len(p) == 0


def test_no_other_client_sees_a_state_between_the_operations(
    manager: proxyshare.ShareManager,
) -> None:
    a, b = manager.counter("a"), manager.counter("b")
    torn: list[tuple[int, int]] = []
    done = threading.Event()

    def writer() -> None:
        for _ in range(300):
            with manager.pipeline() as p:
                p.counter("a").increment()
                p.counter("b").increment()
        done.set()

    def reader() -> None:
        while not done.is_set():
            with manager.pipeline() as p:
                p.counter("a").get()
                p.counter("b").get()
            if p.results[0] != p.results[1]:
                torn.append((p.results[0], p.results[1]))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert torn == []
    assert a.get() == b.get() == 300


def test_a_failing_operation_names_its_index_keeps_earlier_ones_and_skips_later_ones(
    manager: proxyshare.ShareManager,
) -> None:
    counter = manager.counter("c")
    with pytest.raises(proxyshare.PipelineError) as info, manager.pipeline() as p:
        p.counter("c").increment()
        p.counter("c").increment("two")  # type: ignore[arg-type]
        p.counter("c").increment()
    error = info.value
    assert error.index == 1
    assert error.results == [1]
    assert isinstance(error.__cause__, TypeError)
    assert "operation 1" in str(error)
    assert counter.get() == 1


def test_a_missing_resource_fails_its_operation(manager: proxyshare.ShareManager) -> None:
    manager.counter("c")
    with pytest.raises(proxyshare.PipelineError) as info, manager.pipeline() as p:
        p.counter("c").increment()
        p.counter("nope").increment()
    assert info.value.index == 1
    assert isinstance(info.value.__cause__, proxyshare.ResourceNotFoundError)


def test_blocking_operations_are_refused(manager: proxyshare.ShareManager) -> None:
    manager.queue("jobs")
    refused = pytest.raises(proxyshare.PipelineError, match="blocking")
    with refused as info, manager.pipeline() as p:
        p.queue("jobs").get()
    assert info.value.index == 0


def test_nothing_is_sent_when_the_block_raises(manager: proxyshare.ShareManager) -> None:
    counter = manager.counter("c")
    with pytest.raises(RuntimeError), manager.pipeline() as p:
        p.counter("c").increment()
        raise RuntimeError("changed my mind")
    assert counter.get() == 0
    assert len(p) == 0
