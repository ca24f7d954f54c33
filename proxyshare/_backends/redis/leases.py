"""Who holds what: owners, owner tokens, held leases and the renewer (no I/O of its own).

On Redis a lock or a semaphore permit is a *lease*: a key (or sorted-set
member) holding the owner's token, which expires unless renewed.  This
module keeps, per process, the leases its owners hold, and renews them from
one background thread::

    acquire (ops/owned.py) ── add(Holding) ──▶ Leases.holdings ◀── renewer thread
    release (ops/owned.py) ── pop() ─────────┘                     renews each lease every
                                                                   third of its length; gives
                                                                   back a dead owner's leases

An **owner** is whoever may release what it acquired: the calling thread
today (:class:`ThreadOwner`), an asyncio task with the asyncio client.  A
lease whose owner is no longer ``alive()`` is given back within
``RENEWER_TICK``, as the served backend releases what a closed connection
held.  A process that exits normally gives everything back; a killed one
leaves its leases to expire.

The renewer does its I/O through the ``Runner`` recorded in each holding
(a blocking ``RedisTransport``), running the renew and give-back operations
that ``ops/lock.py`` and ``ops/semaphore.py`` define beside their scripts.
All of this is per process and rebuilt after ``fork``: a child neither uses
its parent's tokens nor renews its parent's leases.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import os
import secrets
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from proxyshare._backends.redis.sansio import Run
from proxyshare._errors import NotOwnerError, ProxyShareError, ResourceNotFoundError

__all__ = [
    "DEFAULT_LEASE",
    "RENEWER_TICK",
    "Holding",
    "Leases",
    "Owner",
    "Runner",
    "ThreadOwner",
    "here",
    "parse_token",
    "this_thread",
]

logger = logging.getLogger("proxyshare.redis")

R = TypeVar("R")

DEFAULT_LEASE = 10.0  # seconds a dead holder keeps a lock or permit
RENEWER_TICK = 0.5  # how soon a lease of an owner that ended is given back
HOST = socket.gethostname()


# -- owners ------------------------------------------------------------------------------


class Owner(ABC):
    """Whoever acquired a lease and alone may release it.  Compared by identity."""

    __slots__ = ()

    @property
    @abstractmethod
    def ident(self) -> int:
        """A number that tells this owner apart within its process (shown in tokens)."""

    @abstractmethod
    def alive(self) -> bool:
        """False once the owner can no longer release what it holds."""


class ThreadOwner(Owner):
    """A thread: what the blocking transport's callers are."""

    __slots__ = ("thread",)

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread

    @property
    def ident(self) -> int:
        return self.thread.ident or 0

    def alive(self) -> bool:
        return self.thread.is_alive()


_this = threading.local()


def this_thread() -> ThreadOwner:
    """The calling thread as an owner (one object per thread, so ``is`` compares)."""
    owner: ThreadOwner | None = getattr(_this, "owner", None)
    if owner is None:
        owner = _this.owner = ThreadOwner(threading.current_thread())
    return owner


# -- held leases -----------------------------------------------------------------------


class Runner(Protocol):
    """Runs operations to completion, blocking (``RedisTransport`` is one)."""

    prefix: str
    registry: str

    def run(self, steps: Run[R]) -> R: ...

    def where(self) -> str: ...


class Holding:
    """One lock or permit an owner of this process holds, renewed by the renewer."""

    __slots__ = (
        "give_back_steps",
        "kind",
        "lease_ms",
        "name",
        "owner",
        "renew_steps",
        "renewed",
        "runner",
        "token",
    )

    def __init__(
        self,
        runner: Runner,
        name: str,
        kind: str,
        token: str,
        lease_ms: int,
        owner: Owner,
        renew: Callable[[Holding], Run[bool]],
        give_back: Callable[[Holding], Run[None]],
    ) -> None:
        self.runner = runner
        self.name = name
        self.kind = kind
        self.token = token
        self.lease_ms = lease_ms
        self.owner = owner
        self.renew_steps = renew
        self.give_back_steps = give_back
        self.renewed = time.monotonic()

    @property
    def key(self) -> tuple[Runner, str]:
        return (self.runner, self.name)

    @property
    def period(self) -> float:
        """Renew every third of the lease: two renewals may fail before it lapses."""
        return self.lease_ms / 3000.0

    def renew(self) -> bool:
        """Extend the lease; False if it is no longer ours (expired, deleted)."""
        return self.runner.run(self.renew_steps(self))

    def give_back(self) -> None:
        """Release on behalf of an owner or process that can no longer do it."""
        try:
            self.runner.run(self.give_back_steps(self))
        except (NotOwnerError, ResourceNotFoundError):
            return  # the lease already lapsed, or the resource was deleted: nothing to return
        except ProxyShareError as exc:
            logger.warning(
                "could not release %s %r at %s (%s): it stays taken until its lease lapses",
                self.kind,
                self.name,
                self.runner.where(),
                exc,
            )


def parse_token(token: bytes | str) -> dict[str, Any]:
    """``pid``, ``host``, ``since`` and ``thread`` of the owner a token names."""
    text = token.decode() if isinstance(token, bytes) else token
    pid, since, host, _nonce, thread, _seq = text.split("|")
    return {"pid": int(pid), "host": host, "since": float(since), "thread": int(thread)}


class Leases:
    """Everything about leases that belongs to one process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.nonce = secrets.token_hex(4)
        self.lock = threading.Lock()
        self.seq = 0
        # (runner, name) -> holdings, newest last
        self.holdings: dict[tuple[Runner, str], list[Holding]] = {}
        self.renewing = threading.Condition(self.lock)
        self.renewer: threading.Thread | None = None
        self.period = 0.0  # the renewer's current sleep, seconds
        self.idle = False  # the renewer waits for a first holding

    def token(self, owner: Owner) -> str:
        """A fresh owner token: who holds it, since when, and unique (see ``parse_token``)."""
        with self.lock:
            self.seq += 1
            seq = self.seq
        return f"{self.pid}|{time.time():.6f}|{HOST}|{self.nonce}|{owner.ident}|{seq}"

    def held(self, key: tuple[Runner, str], owner: Owner) -> list[Holding]:
        """What ``owner`` holds under ``key`` (a reused thread id inherits nothing)."""
        return [h for h in self.holdings.get(key, ()) if h.owner is owner]

    def add(self, holding: Holding) -> None:
        with self.lock:
            self.holdings.setdefault(holding.key, []).append(holding)
            if self.renewer is None:
                # A process that exits normally gives its leases back at once.
                multiprocessing.util.Finalize(None, _release_at_exit, exitpriority=10)
                self.renewer = threading.Thread(
                    target=self._renew_forever, name="proxyshare-redis-renewer", daemon=True
                )
                self.renewer.start()
            # Wake the renewer only if it is idle or sleeps too long for this
            # lease: waking it on every acquire would cost a renewal per acquire.
            if self.idle or holding.period < self.period:
                self.renewing.notify()

    def pop(self, key: tuple[Runner, str], owner: Owner) -> Holding | None:
        """Take ``owner``'s newest holding under ``key`` off the books."""
        with self.lock:
            held = self.holdings.get(key)
            if not held or held[-1].owner is not owner:
                return None
            holding = held.pop()
            if not held:
                del self.holdings[key]
            return holding

    def discard(self, holding: Holding) -> bool:
        with self.lock:
            held = self.holdings.get(holding.key)
            if held is None or holding not in held:
                return False
            held.remove(holding)
            if not held:
                del self.holdings[holding.key]
            return True

    def take_all(self) -> list[Holding]:
        with self.lock:
            holdings = [h for held in self.holdings.values() for h in held]
            self.holdings.clear()
        return holdings

    def _renew_forever(self) -> None:
        """Renew each lease every third of its length; give back dead owners' leases.

        Wakes at least every ``RENEWER_TICK`` seconds while anything is held,
        so a lease of an owner that ended is returned within that time (no
        Redis call is made for a tick with nothing due).
        """
        while True:
            with self.lock:
                self.idle = True
                while not self.holdings:
                    self.renewing.wait()
                self.idle = False
                current = [h for held in self.holdings.values() for h in held]
                self.period = min(RENEWER_TICK, *(h.period for h in current))
                self.renewing.wait(self.period)
                current = [h for held in self.holdings.values() for h in held]
            now = time.monotonic()
            for holding in current:
                if not holding.owner.alive() or now - holding.renewed >= holding.period:
                    self._renew(holding)

    def _renew(self, holding: Holding) -> None:
        if not holding.owner.alive():
            # As on the served backend, where the owner's connection closes: give it back.
            if self.discard(holding):
                holding.give_back()
            return
        try:
            kept = holding.renew()
            holding.renewed = time.monotonic()
        except ProxyShareError as exc:
            logger.warning("could not renew a lease at %s: %s", holding.runner.where(), exc)
            return
        if not kept and self.discard(holding):
            logger.warning(
                "lost a lease at %s (it expired or was deleted): the holder no longer owns it",
                holding.runner.where(),
            )


_leases: Leases | None = None
_leases_lock = threading.Lock()


def here() -> Leases:
    """This process's leases (made on first use, and again in a forked child)."""
    leases = _leases
    if leases is None:
        leases = _make()
    return leases


def _make() -> Leases:
    global _leases
    with _leases_lock:
        if _leases is None:
            _leases = Leases()
        return _leases


def _release_at_exit() -> None:
    """Give back this process's leases when it exits normally (not when killed)."""
    leases = _leases
    if leases is None or leases.pid != os.getpid():
        return
    for holding in leases.take_all():
        holding.give_back()


def _forget_parent() -> None:
    """A forked child must not use its parent's tokens or renew its leases."""
    global _leases, _leases_lock
    _leases = None
    _leases_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_parent)
