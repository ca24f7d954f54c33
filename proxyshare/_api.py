"""What every manager offers, whatever the backend: the type ``connect()`` returns.

``ShareManager`` (served, with ``shared_memory=True``) and ``RedisManager``
meet it; mypy checks both.  It sits above the proxies and the pipeline it
names, so nothing below imports it.
"""

from __future__ import annotations

import builtins
from typing import Any, Protocol

from proxyshare._pipeline import Pipeline
from proxyshare._proxies import Barrier, Counter, Dict, Event, Lock, Queue, Semaphore

__all__ = ["Manager"]


class Manager(Protocol):
    """The resource API every backend's manager offers (``proxyshare.connect()``'s type)."""

    def counter(self, name: str, initial: int = 0, *, shared_memory: bool = False) -> Counter: ...

    def lock(
        self, name: str, *, lease: float | None = None, shared_memory: bool = False
    ) -> Lock: ...

    def dict(self, name: str) -> Dict: ...

    def queue(self, name: str, maxsize: int = 0) -> Queue: ...

    def semaphore(self, name: str, value: int = 1) -> Semaphore: ...

    def event(self, name: str) -> Event: ...

    def barrier(self, name: str, parties: int) -> Barrier: ...

    def delete(self, name: str) -> bool: ...

    def names(self) -> builtins.dict[str, str]: ...

    def status(self) -> builtins.dict[str, Any]: ...

    def pipeline(self) -> Pipeline: ...
