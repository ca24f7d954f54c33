"""The served barrier: ``threading.Barrier`` whose parties can die."""

from __future__ import annotations

import threading
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

__all__ = ["BarrierResource"]


class _Round:
    """One filling of the barrier; waiters keep a reference to their own round."""

    __slots__ = ("broken", "passed", "waiters")

    def __init__(self) -> None:
        self.waiters: list[SessionLike] = []
        self.passed = False
        self.broken = False

    def settled(self) -> bool:
        return self.passed or self.broken


class BarrierResource(Resource):
    """A ``threading.Barrier`` (no ``action``) whose parties can die.

    A waiting party whose client disconnects breaks the barrier, so the others
    get ``threading.BrokenBarrierError`` instead of waiting forever.
    """

    kind = "barrier"

    def __init__(self, name: str, parties: int) -> None:
        parties = rules.check_parties(parties)
        super().__init__(name)
        self.parties = parties
        self.broken = False
        self.deleted = False
        self.round = _Round()
        self.changed = threading.Condition(self.mutex)

    def options(self) -> dict[str, Any]:
        return {"parties": self.parties}

    def check_options(self, options: dict[str, Any]) -> None:
        parties = options.get("parties", self.parties)
        if parties != self.parties:
            raise ValueError(
                f"barrier {self.name!r} already exists with parties={self.parties}, "
                f"not {parties}: use another name or delete it first"
            )

    def describe(self) -> dict[str, Any]:
        with self.mutex:
            return {
                **super().describe(),
                "parties": self.parties,
                "n_waiting": len(self.round.waiters),
                "waiters": [s.describe() for s in self.round.waiters],
                "broken": self.broken,
            }

    def _break(self) -> None:
        self.broken = True
        self.round.broken = True
        self.round = _Round()
        self.changed.notify_all()

    def wait(self, session: SessionLike, timeout: float | None = None) -> int:
        """Block until ``parties`` callers arrived; return this caller's arrival index."""
        deadline = deadline_after(rules.check_timeout(True, timeout))
        with self.mutex:
            if self.deleted:
                raise rules.deleted_while_waiting(self.kind, self.name)
            if self.broken:
                raise threading.BrokenBarrierError
            current = self.round
            index = len(current.waiters)
            if index + 1 < self.parties and no_waiting_here():
                raise MustWait  # before taking a place
            current.waiters.append(session)
            if len(current.waiters) == self.parties:
                current.passed = True
                self.round = _Round()
                self.changed.notify_all()
                return index
            while not current.settled():
                step = time_slice(deadline)
                if step <= 0:
                    self._break()  # as the stdlib does: a timeout breaks it for everyone
                    raise threading.BrokenBarrierError
                self.changed.wait(step)
                if current.settled():
                    break
                if not session.alive():
                    self._break()  # a party died: the others must not wait forever
                    raise SessionGone
            if current.passed:
                return index
            if self.deleted:
                raise rules.deleted_while_waiting(self.kind, self.name)
            raise threading.BrokenBarrierError

    def abort(self, session: SessionLike) -> None:
        with self.mutex:
            self._break()

    def reset(self, session: SessionLike) -> None:
        """Back to empty and unbroken; current waiters get ``BrokenBarrierError``."""
        with self.mutex:
            if self.round.waiters:
                self.round.broken = True
                self.round = _Round()
                self.changed.notify_all()
            self.broken = False

    def n_waiting(self, session: SessionLike) -> int:
        return len(self.round.waiters)

    def info(self, session: SessionLike) -> tuple[int, int, bool]:
        with self.mutex:
            return (self.parties, len(self.round.waiters), self.broken)

    def destroy(self) -> None:
        with self.mutex:
            self.deleted = True
            self._break()
