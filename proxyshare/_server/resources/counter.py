"""The served counter: a Python int (unbounded), every operation atomic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxyshare import _rules as rules
from proxyshare._server.resources.base import Resource, SessionLike

__all__ = ["CounterResource"]


class CounterResource(Resource):
    kind = "counter"

    def __init__(self, name: str, initial: int = 0) -> None:
        super().__init__(name)
        self.value = rules.check_int(initial, "initial")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "value": self.value}

    def dump_state(self) -> int:
        return self.value

    def load_state(self, state: Any, session_of: Callable[[int], SessionLike]) -> None:
        self.value = rules.check_int(state, "a stored counter value")

    def get(self, session: SessionLike) -> int:
        return self.value

    def add(self, session: SessionLike, n: int = 1) -> int:
        rules.check_int(n, "increment(n)")
        with self.mutex:
            self.value += n
            return self.value

    def sub(self, session: SessionLike, n: int = 1) -> int:
        rules.check_int(n, "decrement(n)")
        with self.mutex:
            self.value -= n
            return self.value

    def set(self, session: SessionLike, value: int) -> None:
        rules.check_int(value, "set(value)")
        with self.mutex:
            self.value = value

    def compare_and_set(self, session: SessionLike, expected: int, new: int) -> bool:
        rules.check_int(new, "compare_and_set(new)")
        with self.mutex:
            if self.value != expected:
                return False
            self.value = new
            return True

    def get_and_set(self, session: SessionLike, new: int) -> int:
        rules.check_int(new, "get_and_set(new)")
        with self.mutex:
            old, self.value = self.value, new
            return old
