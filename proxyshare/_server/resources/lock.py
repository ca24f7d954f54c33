"""The served lock: FIFO, owned by a session, optionally leased."""

from __future__ import annotations

import time
from typing import Any

from proxyshare import _rules as rules
from proxyshare._server.resources.base import SessionLike
from proxyshare._server.resources.permits import FifoPermits

__all__ = ["LockResource"]


class LockResource(FifoPermits):
    kind = "lock"

    def __init__(self, name: str, lease: float | None = None) -> None:
        super().__init__(name, 1)
        self.lease = rules.check_lease(lease)

    def options(self) -> dict[str, Any]:
        return {"lease": self.lease}

    def needs_ticks(self) -> bool:
        return self.lease is not None

    def _before_acquire(self, session: SessionLike, blocking: bool, timeout: float | None) -> None:
        if timeout is None and session in self.holders:
            raise rules.not_reentrant(self.name)

    def _expire(self) -> None:
        if self.lease is None or not self.holders:
            return
        ((session, times),) = self.holders.items()
        if time.time() - times[0] >= self.lease:
            self._take_back(session)

    def locked(self, session: SessionLike) -> bool:
        with self.mutex:
            self._expire()
            return self.available == 0

    def owner(self, session: SessionLike) -> dict[str, Any] | None:
        with self.mutex:
            self._expire()
            for holder, times in self.holders.items():
                info = holder.describe()
                return {"pid": info["pid"], "host": info["host"], "since": times[0]}
            return None

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            self._expire()
            return {**super().describe(), "locked": self.available == 0, "lease": self.lease}
