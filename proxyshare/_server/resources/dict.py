"""The served dict: a plain dict behind a mutex, plus atomic helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxyshare import _rules as rules
from proxyshare._server.resources.base import Resource, SessionLike

__all__ = ["DictResource"]


class DictResource(Resource):
    kind = "dict"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.data: dict[Any, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "size": len(self.data)}

    def dump_state(self) -> dict[Any, Any]:
        return dict(self.data)  # values are replaced, never changed in place: a shallow copy

    def load_state(self, state: Any, session_of: Callable[[int], SessionLike]) -> None:
        self.data = dict(state)

    def get(self, session: SessionLike, key: Any) -> Any:
        return self.data[key]

    def get_default(self, session: SessionLike, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, session: SessionLike, key: Any, value: Any) -> None:
        with self.mutex:
            self.data[key] = value

    def delete(self, session: SessionLike, key: Any) -> None:
        with self.mutex:
            del self.data[key]

    def len(self, session: SessionLike) -> int:
        return len(self.data)

    def contains(self, session: SessionLike, key: Any) -> bool:
        return key in self.data

    def snapshot(self, session: SessionLike) -> dict[Any, Any]:
        with self.mutex:
            return dict(self.data)

    def keys(self, session: SessionLike) -> list[Any]:
        with self.mutex:
            return list(self.data)

    def pop(
        self, session: SessionLike, key: Any, has_default: bool = False, default: Any = None
    ) -> Any:
        with self.mutex:
            if has_default:
                return self.data.pop(key, default)
            return self.data.pop(key)

    def setdefault(self, session: SessionLike, key: Any, default: Any = None) -> Any:
        with self.mutex:
            return self.data.setdefault(key, default)

    def update(self, session: SessionLike, items: dict[Any, Any]) -> None:
        if not isinstance(items, dict):
            raise TypeError(f"update() needs a dict, not {type(items).__name__}")
        # A plain copy first: a dict subclass's own iteration could fail half-way
        # through, leaving a change that no log (and no reply) accounts for.
        items = dict(items)
        with self.mutex:
            self.data.update(items)

    def clear(self, session: SessionLike) -> None:
        with self.mutex:
            self.data.clear()

    def increment(self, session: SessionLike, key: Any, n: int = 1, default: int = 0) -> int:
        rules.check_int(n, "increment(n)")
        rules.check_int(default, "increment(default)")
        with self.mutex:
            current = self.data.get(key, default)
            if isinstance(current, bool) or not isinstance(current, int):
                raise rules.cannot_increment(self.name, key)
            self.data[key] = current = current + n
            return current

    def compare_and_set(self, session: SessionLike, key: Any, expected: Any, new: Any) -> bool:
        """Set ``key`` to ``new`` if it is present and equal to ``expected``."""
        with self.mutex:
            if key in self.data and self.data[key] == expected:
                self.data[key] = new
                return True
            return False
