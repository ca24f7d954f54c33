"""Recovery: the state a state dir holds, rebuilt in memory, reading only.

::

    snapshot.<s>                 each resource: create(name, options), load_state(state)
    log.<s>, log.<s+1>, ...      every record applied again, in order
    then                         queue items still in flight go back to the front

A record is ``(session id, what, name, *args)``; ``what`` is

* the code of a row of the table of operations that ``mutates``: the
  resource method it names runs again with the same arguments.  Every such
  method is deterministic given the state, and the state is the same, so the
  outcome is too (an op that failed was never logged);
* ``OPEN`` / ``DELETE``: ``name`` is created (``args``: kind, options) or deleted;
* ``PIPELINE``: ``args[0]`` is the list of requests that were applied together;
* a method name, for a change the server made on its own: ``"ack"``, ``"requeue"``.

The session id names the client connection of the run that wrote the log;
only queues care (what is in flight for whom).  Replaying never waits: a
record that would have to is damage, as is any record that fails.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyshare import _protocol as P
from proxyshare._server.resources import KINDS, QueueResource, Resource
from proxyshare._server.resources.base import waiting_forbidden
from proxyshare._server.state.errors import StateDamaged
from proxyshare._server.state.files import Listing, StateDir
from proxyshare._server.state.log import damaged, read_log
from proxyshare._server.state.snapshot import read_snapshot

__all__ = ["SERVER_METHODS", "Recovery", "ReplaySession", "recover"]

logger = logging.getLogger("proxyshare.state")

#: Changes the server records on its own (not requests), by resource method.
SERVER_METHODS = frozenset({"ack", "requeue"})

_METHODS: dict[int, tuple[str, str]] = {
    op.code: (op.kind, op.method) for op in P.OPS.values() if op.mutates and op.kind in KINDS
}


class ReplaySession:
    """A client connection of the run that wrote the log, known by its id."""

    __slots__ = ("id",)

    def __init__(self, sid: int) -> None:
        self.id = sid

    def alive(self) -> bool:
        return True

    def awaits_ack(self, resource: Resource) -> None:
        pass  # acknowledged (or not) by the records that follow

    def describe(self) -> dict[str, Any]:
        return {"client": self.id, "pid": None, "host": None, "thread": None}

    def hold(self, resource: Resource) -> None:
        pass

    def reply_early(self, result: Any, resource: Any) -> bool:
        return False


@dataclass
class Recovery:
    """The restored resources, what was read, and the generation to write next."""

    resources: dict[str, Resource] = field(default_factory=dict)
    listing: Listing = field(default_factory=Listing)
    next_generation: int = 1
    report: dict[str, Any] = field(default_factory=dict)


def recover(state_dir: StateDir) -> Recovery:
    """Rebuild the state ``state_dir`` holds; raise ``StateDamaged`` if it does not check out."""
    started = time.monotonic()
    listing = state_dir.listing()
    out = Recovery(listing=listing)
    sessions: dict[int, ReplaySession] = {}

    def session_of(sid: int) -> ReplaySession:
        session = sessions.get(sid)
        if session is None:
            session = sessions[sid] = ReplaySession(sid)
        return session

    base = max(listing.snapshots, default=0)
    if base:
        _load_snapshot(listing.snapshots[base], base, out.resources, session_of)
    chain = _log_chain(state_dir, listing, base)
    records = 0
    torn = None
    with waiting_forbidden():
        for generation in chain:
            path = listing.logs[generation]
            contents = read_log(path, path.read_bytes(), generation, generation == chain[-1])
            for offset, record in contents.records:
                try:
                    _apply(out.resources, session_of, record)
                except StateDamaged:
                    raise
                except Exception as exc:  # any failure means the log is not what was applied
                    raise damaged(
                        path, offset, f"a record cannot be replayed ({type(exc).__name__}: {exc})"
                    ) from None
            records += len(contents.records)
            if contents.torn is not None:
                offset, size = contents.torn
                torn = {"file": str(path), "offset": offset, "bytes": size}
                logger.warning(
                    "dropped a torn record at the end of %s (offset %d, %d bytes written): the "
                    "server stopped while writing it, before any reply depended on it",
                    path,
                    offset,
                    size,
                )
    requeued = sum(
        resource.requeue_all()
        for resource in out.resources.values()
        if isinstance(resource, QueueResource)
    )
    generations = [*listing.snapshots, *listing.logs]
    out.next_generation = max(generations, default=0) + 1
    out.report = {
        "snapshot": str(listing.snapshots[base]) if base else None,
        "logs": [str(listing.logs[g]) for g in chain],
        "records": records,
        "resources": len(out.resources),
        "kinds": dict(Counter(r.kind for r in out.resources.values())),
        "torn_tail": torn,
        "requeued_items": requeued,
        "seconds": time.monotonic() - started,
    }
    return out


def _load_snapshot(
    path: Path, generation: int, resources: dict[str, Resource], session_of: Any
) -> None:
    for name, kind, options, state in read_snapshot(path, path.read_bytes(), generation):
        cls = KINDS.get(kind)
        if cls is None or not cls.durable or name in resources:
            raise damaged(path, None, f"it holds {name!r} as an unknown or repeated kind {kind!r}")
        try:
            resource = cls.create(name, options)
            resource.load_state(state, session_of)
        except Exception as exc:  # e.g. a value a newer kind would accept
            raise damaged(
                path, None, f"{kind} {name!r} cannot be restored ({type(exc).__name__}: {exc})"
            ) from None
        resources[name] = resource


def _log_chain(state_dir: StateDir, listing: Listing, base: int) -> list[int]:
    """The logs to replay after snapshot ``base``: ``base``, ``base + 1``, ... with no gap.

    Generation 1 starts from nothing, so its snapshot (empty) may be missing:
    a crash can come between creating ``log.1`` and writing ``snapshot.1``.
    """
    first = max(base, 1)
    chain = sorted(g for g in listing.logs if g >= first)
    if not base and chain and chain[0] != 1:
        path = state_dir.file("snapshot", chain[0])
        raise damaged(path, None, "this snapshot is missing, and the logs after it need it")
    if not chain and base:
        chain = [base]  # reported as missing below
    for expected, generation in enumerate(chain, first):
        if generation != expected or expected not in listing.logs:
            path = state_dir.file("log", expected)
            raise damaged(
                path,
                None,
                f"this log is missing, and the state needs it (generations {chain})",
            )
    return chain


def _apply(resources: dict[str, Resource], session_of: Any, record: tuple[Any, ...]) -> None:
    sid, what, name, *args = record
    session = session_of(sid)
    if what == P.OPEN.code:
        kind, options = args
        cls = KINDS[kind]
        if name in resources or not cls.durable:
            raise ValueError(f"{name!r} is created twice, or as a kind that is not kept")
        resources[name] = cls.create(name, options)
    elif what == P.DELETE.code:
        del resources[name]
    elif what == P.PIPELINE.code:
        for request in args[0]:
            _apply(resources, session_of, (sid, *request))
    else:
        resource = resources[name]
        if isinstance(what, str) and what in SERVER_METHODS:
            method = what
        else:
            kind, method = _METHODS[what]
            if resource.kind != kind:
                raise TypeError(f"{name!r} is a {resource.kind}, not a {kind}")
        getattr(resource, method)(session, *args)
