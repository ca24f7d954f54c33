"""The served semaphore: FIFO permits, each owned by the session that took it."""

from __future__ import annotations

from typing import Any

from proxyshare import _rules as rules
from proxyshare._server.resources.base import SessionLike
from proxyshare._server.resources.permits import FifoPermits

__all__ = ["SemaphoreResource"]


class SemaphoreResource(FifoPermits):
    kind = "semaphore"
    noun = "permit"

    def __init__(self, name: str, value: int = 1) -> None:
        value = rules.check_semaphore_value(value)
        super().__init__(name, value)
        self.initial = value

    def options(self) -> dict[str, Any]:
        return {"value": self.initial}

    def value(self, session: SessionLike) -> int:
        with self.mutex:
            return self.available

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {**super().describe(), "value": self.available, "initial": self.initial}
