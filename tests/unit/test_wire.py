"""Framing and the poll-then-sleep wait of ``_wire`` on plain socket pairs."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from proxyshare import _wire
from proxyshare._wire import SPIN_ENV, FramedSocket, Pollers, next_budget, spin_seconds

pytestmark = [pytest.mark.matrix, pytest.mark.timeout(30)]

FULL = _wire._SPIN


@pytest.fixture
def pair() -> Iterator[tuple[FramedSocket, FramedSocket]]:
    a, b = socket.socketpair()
    ends = FramedSocket(a), FramedSocket(b)
    try:
        yield ends
    finally:
        for end in ends:
            end.close()


def _send_later(wire: FramedSocket, payload: bytes, delay: float) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)  # the delay is what the test is about, not a wait for state
        wire.send_bytes(payload)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("size", [0, 1, 100, 16 * 1024 - 1, 16 * 1024, 64 * 1024, 1 << 20])
@pytest.mark.parametrize("polling", [True, False], ids=["polling", "sleeping"])
def test_messages_of_every_size_arrive_whole(
    pair: tuple[FramedSocket, FramedSocket], size: int, polling: bool
) -> None:
    left, right = pair
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    sender = _send_later(left, payload, 0)
    got = right.recv_view(None, Pollers(1) if polling else None)
    assert bytes(got) == payload
    sender.join(10)


def test_a_slow_peer_turns_polling_off_and_a_fast_one_turns_it_back_on(
    pair: tuple[FramedSocket, FramedSocket],
) -> None:
    if not FULL:
        pytest.skip(f"polling is off in this environment ({SPIN_ENV})")
    left, right = pair
    pollers = Pollers(1)
    budgets = []
    for _ in range(6):  # replies 20 ms late: polling for them only burns CPU
        _send_later(left, b"late", 0.02)
        assert bytes(right.recv_view(None, pollers)) == b"late"
        budgets.append(right._spin)
    assert budgets[0] == FULL / 2
    assert budgets[-1] == 0.0
    left.send_bytes(b"prompt")  # already there: the wait was short, so poll again
    assert bytes(right.recv_view(None, pollers)) == b"prompt"
    assert right._spin == FULL


def test_with_no_free_polling_slot_a_wait_sleeps_and_still_gets_its_message(
    pair: tuple[FramedSocket, FramedSocket],
) -> None:
    left, right = pair
    pollers = Pollers(1)
    held = pollers.take()
    assert held is not None and pollers.take() is None
    try:
        _send_later(left, b"x", 0.01)
        assert bytes(right.recv_view(None, pollers)) == b"x"
    finally:
        held.release()
    assert pollers.take() is not None


def test_the_peer_closing_while_we_poll_is_eof(pair: tuple[FramedSocket, FramedSocket]) -> None:
    left, right = pair
    left.close()
    with pytest.raises(EOFError):
        right.recv_view(None, Pollers(1))


def test_polling_slots_are_fresh_in_a_forked_child() -> None:
    pollers = Pollers(2)
    held = [pollers.take(), pollers.take()]
    assert None not in held and pollers.take() is None
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    child = ctx.Process(target=_take_in_child, args=(pollers, result))
    child.start()
    try:
        assert result.get(timeout=20) is True
    finally:
        child.join(20)
        if child.is_alive():
            child.kill()
    for slot in held:
        assert slot is not None
        slot.release()


def _take_in_child(pollers: Pollers, result: multiprocessing.Queue[bool]) -> None:
    result.put(pollers.take() is not None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 50e-6), ("  ", 50e-6), ("0", 0.0), ("20", 20e-6), ("12.5", 12.5e-6), ("10000", 0.01)],
)
def test_spin_setting_is_read_in_microseconds(text: str, seconds: float) -> None:
    assert spin_seconds({SPIN_ENV: text}) == pytest.approx(seconds)
    assert spin_seconds({}) == pytest.approx(50e-6)


@pytest.mark.parametrize("text", ["abc", "-1", "10001", "nan", "inf", "1e9"])
def test_a_bad_spin_setting_names_the_variable_and_the_range(text: str) -> None:
    with pytest.raises(ValueError, match=rf"{SPIN_ENV}=.*from 0 to 10000"):
        spin_seconds({SPIN_ENV: text})


def test_the_budget_is_full_after_a_prompt_message_and_halves_to_zero_after_late_ones() -> None:
    full = 50e-6
    assert next_budget(0.0, 60e-6, full) == full  # would have been caught: poll again
    budgets = [full]
    for _ in range(5):
        budgets.append(next_budget(budgets[-1], 1.0, full))
    assert budgets == [full, full / 2, full / 4, full / 8, full / 16, 0.0]
