"""The adder's server side: it makes the file, reports the total and its slots, removes it.

Clients claim slots, add, sum and reset in their own processes
(``proxyshare._backends.shm.adder``; the file: ``adder_layout``).  None of
that reaches the server, which stays the registry of names and kinds, shows
the adder in ``status`` and removes its file on delete and at shutdown, like
the other shared-memory resources (``shm``).
"""

from __future__ import annotations

from typing import Any

from proxyshare import _rules as rules
from proxyshare._backends.shm import adder_layout as A
from proxyshare._errors import ProxyShareError
from proxyshare._rules import deleted_while_waiting
from proxyshare._server.resources.base import SessionLike
from proxyshare._server.resources.shm import _ShmResource

__all__ = ["AdderResource"]


class AdderResource(_ShmResource):
    kind = "adder"
    file_kind = "adder"

    def __init__(self, name: str, slots: int = A.CAPACITY) -> None:
        slots = rules.check_int(slots, "slots")
        if not 1 <= slots <= A.MAX_CAPACITY:
            raise ValueError(f"slots must be between 1 and {A.MAX_CAPACITY}, not {slots}")
        if not A.available():
            raise ProxyShareError(
                "adders need open-file-description locks (F_OFD_SETLK, Linux 3.15 or "
                "later), which the server's platform lacks: use a served counter"
            )
        super().__init__(name, A.file_size(slots))
        A.init(self.mm, slots)

    def mark_closed(self) -> None:
        super().mark_closed()
        A.mark_gone(self.mm)  # an owner checks its own slot at each add

    def describe(self) -> dict[str, Any]:
        with self.mutex:  # destroy() closes the mapping under it
            if self.closed:
                value, in_use, used, capacity = None, 0, 0, 0
            else:
                value = A.total(self.mm)
                in_use = A.in_use(self.mm, self.probe_fd)  # the server holds no slot
                used, capacity = A.used(self.mm), A.capacity(self.mm)
            return {
                **super().describe(),
                "value": value,
                "slots_in_use": in_use,  # held by live threads now
                "slots": used,  # ever claimed: what the file uses, 64 bytes each
                "max_slots": capacity,
            }

    # Requests by opcode (proxyshare's Adder runs these in the caller; see _protocol).

    def get(self, session: SessionLike) -> int:
        with self.mutex:
            if self.closed:  # deleted while this request was on its way
                raise deleted_while_waiting("adder", self.name)
            return A.total(self.mm)

    def add(self, session: SessionLike, n: int = 1) -> None:
        raise self._in_the_caller("add")

    def reset(self, session: SessionLike) -> int:
        raise self._in_the_caller("reset")

    def _in_the_caller(self, method: str) -> ProxyShareError:
        return ProxyShareError(
            f"adder {self.name!r}: {method}() runs in the calling process, on shared memory, "
            f"and is never served: call it on mgr.adder({self.name!r}) on the server's host"
        )
