"""The served event: ``threading.Event`` across processes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from proxyshare import _rules as rules
from proxyshare._server.resources.base import (
    MustWait,
    Resource,
    SessionGone,
    SessionLike,
    deadline_after,
    no_waiting_here,
    time_slice,
)

__all__ = ["EventResource"]


class EventResource(Resource):
    """A ``threading.Event``.

    ``set()`` bumps a generation number, so a waiter wakes with True even if
    ``clear()`` follows at once (as with the stdlib event).
    """

    kind = "event"

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.flag = False
        self.generation = 0
        self.deleted = False
        self.waiting = 0
        self.changed = threading.Condition(self.mutex)

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {**super().describe(), "set": self.flag, "waiting": self.waiting}

    def dump_state(self) -> bool:
        return self.flag

    def load_state(self, state: Any, session_of: Callable[[int], SessionLike]) -> None:
        self.flag = bool(state)

    def set(self, session: SessionLike) -> None:
        with self.mutex:
            self.flag = True
            self.generation += 1
            self.changed.notify_all()

    def clear(self, session: SessionLike) -> None:
        with self.mutex:
            self.flag = False

    def is_set(self, session: SessionLike) -> bool:
        return self.flag

    def wait(self, session: SessionLike, timeout: float | None = None) -> bool:
        deadline = deadline_after(rules.check_timeout(True, timeout))
        with self.mutex:
            if self.deleted:
                raise rules.deleted_while_waiting(self.kind, self.name)
            if self.flag:
                return True
            seen = self.generation
            self.waiting += 1
            try:
                while self.generation == seen:
                    step = time_slice(deadline)
                    if step <= 0:
                        return False
                    if no_waiting_here():
                        raise MustWait
                    self.changed.wait(step)
                    if self.generation != seen:
                        break
                    if self.deleted:
                        raise rules.deleted_while_waiting(self.kind, self.name)
                    if not session.alive():
                        raise SessionGone
                return True
            finally:
                self.waiting -= 1

    def destroy(self) -> None:
        with self.mutex:
            self.deleted = True
            self.changed.notify_all()
