"""The report of ``proxyshare status --json``: a stable, documented schema.

The server answers ``mgr.status()`` with plain data (see
``ShareServer._op_status``); :meth:`StatusReport.from_status` validates it
into these models and ``status --json`` prints ``model_dump_json()``.  Scripts
can rely on this shape::

    StatusReport
     ├── schema_version   int, 1 (bumped only on an incompatible change)
     ├── address          str | null — where the CLI connected
     ├── server           ServerStatus: pid, host, started, uptime, operations, ...
     ├── clients          [ClientStatus]: client, pid, host, thread, since, operations
     └── resources        [ResourceStatus]: name, kind, value | size, locked,
                          holders [Holder], waiters [Holder], + kind-specific fields

Times are seconds since the epoch (``since``, ``started``) or seconds
(``uptime``).  Fields common to every backend are typed; kind- and
backend-specific fields (a queue's ``maxsize``, a barrier's ``parties``, a
Redis backend's extras, kinds added later such as ``shm_counter``) are
accepted and passed through unchanged, so a newer server never breaks an
older ``status``.

This module imports pydantic; ``import proxyshare`` must never import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "ClientStatus",
    "Holder",
    "ResourceStatus",
    "ServerStatus",
    "StatusReport",
    "render_status",
    "state_summary",
]

SCHEMA_VERSION = 1

# Unknown fields are kept (and dumped): kind- and backend-specific data.
_OPEN = ConfigDict(extra="allow", coerce_numbers_to_str=True)


class Holder(BaseModel):
    """A client holding a lock or semaphore permit, or waiting for one."""

    model_config = _OPEN

    pid: int | None = Field(default=None, description="process id of the client")
    host: str | None = Field(default=None, description="host name of the client")
    thread: str | None = Field(default=None, description="thread name inside that process")
    client: int | None = Field(default=None, description="server-side id of the connection")
    since: float | None = Field(
        default=None, description="when it was granted (epoch seconds); absent for waiters"
    )


class ResourceStatus(BaseModel):
    """One named resource.

    Which of the optional fields are set depends on ``kind``: ``value`` for
    counters and semaphores (free permits), ``size`` for dicts and queues,
    ``locked``/``holders``/``waiters`` for locks (``holders``/``waiters`` for
    semaphores too).  Other kind-specific fields are passed through.
    """

    model_config = _OPEN

    name: str = Field(description="the resource's name")
    kind: str = Field(
        description="counter, lock, dict, queue, semaphore, event, barrier, or a later kind"
    )
    value: Any = Field(default=None, description="current value (counter, semaphore, ...)")
    size: int | None = Field(default=None, description="number of items (dict, queue)")
    locked: bool | None = Field(default=None, description="whether a lock is held")
    holders: list[Holder] = Field(default_factory=list, description="who holds it")
    waiters: list[Holder] = Field(
        default_factory=list, description="who waits for it, first come first"
    )


class ClientStatus(BaseModel):
    """One connected client connection (one thread of one process)."""

    model_config = _OPEN

    client: int | None = Field(default=None, description="server-side id of the connection")
    pid: int | None = Field(default=None, description="process id of the client")
    host: str | None = Field(default=None, description="host name of the client")
    thread: str | None = Field(default=None, description="thread name inside that process")
    since: float | None = Field(default=None, description="connected since (epoch seconds)")
    operations: int | None = Field(
        default=0, description="requests served on this connection (None: not counted)"
    )


class ServerStatus(BaseModel):
    """The server process."""

    model_config = _OPEN

    pid: int | None = Field(default=None, description="process id of the server")
    host: str | None = Field(default=None, description="host name of the server")
    started: float | None = Field(default=None, description="start time (epoch seconds)")
    uptime: float = Field(default=0.0, description="seconds since start")
    operations: int = Field(default=0, description="requests served since start, all clients")
    threads: int | None = Field(
        default=None,
        description="busy threads in the server process (idle pool threads not counted)",
    )
    generic_connections: int | None = Field(
        default=None, description="open connections using the stdlib manager protocol"
    )
    state: dict[str, Any] | None = Field(
        default=None,
        description="the state dir (serve --state-dir): dir, fsync, format, generation, "
        "log_bytes, snapshot_bytes, compactions, failed, and restored: what the server "
        "found at start (snapshot, logs, records, resources, kinds, torn_tail, "
        "requeued_items, seconds)",
    )


class StatusReport(BaseModel):
    """What ``proxyshare status --json`` prints."""

    model_config = _OPEN

    schema_version: int = Field(default=SCHEMA_VERSION, description="version of this schema")
    address: str | None = Field(default=None, description="address the report was taken from")
    server: ServerStatus = Field(default_factory=ServerStatus)
    clients: list[ClientStatus] = Field(default_factory=list)
    resources: list[ResourceStatus] = Field(default_factory=list)

    @classmethod
    def from_status(cls, raw: Mapping[str, Any], address: str | None = None) -> StatusReport:
        """Validate what ``mgr.status()`` returned (any backend)."""
        data = dict(raw)
        if address is not None:
            data["address"] = address
        return cls.model_validate(data)

    def locks_and_waits(self) -> list[tuple[ResourceStatus, str, Holder]]:
        """Every (resource, "holder" | "waiter", who) pair, in resource order."""
        rows: list[tuple[ResourceStatus, str, Holder]] = []
        for resource in self.resources:
            rows.extend((resource, "holder", h) for h in resource.holders)
            rows.extend((resource, "waiter", w) for w in resource.waiters)
        return rows


# -- the plain form (rich), built here and printed by _cli --------------------


def render_status(report: StatusReport, now: float | None = None) -> Any:
    """A rich renderable: a summary line, then resources, holders/waiters, clients."""
    import time

    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = time.time() if now is None else now
    server = report.server
    where = f" at {report.address}" if report.address else ""
    summary = Text(
        f"server pid {_dash(server.pid)} on {_dash(server.host)}{where}, "
        f"up {_duration(server.uptime)}\n"
        f"{server.operations:,} operations served, "
        f"{len(report.clients)} client connection(s), {len(report.resources)} resource(s)"
    )
    if server.state is not None:
        summary.append(f"\n{state_summary(server.state)}")
    parts: list[Any] = [summary]

    resources = Table(title="Resources", title_justify="left")
    for column in ("name", "kind", "value / size", "details"):
        resources.add_column(column)
    for r in sorted(report.resources, key=lambda r: (r.kind, r.name)):
        resources.add_row(r.name, r.kind, _value_or_size(r), _details(r))
    parts.append(resources if report.resources else Text("no resources"))

    rows = report.locks_and_waits()
    if rows:
        holders = Table(title="Lock holders and waiters", title_justify="left")
        for column in ("resource", "role", "pid", "host", "thread", "since"):
            holders.add_column(column)
        for resource, role, who in rows:
            since = "-" if who.since is None else f"{_duration(now - who.since)} ago"
            holders.add_row(
                resource.name, role, _dash(who.pid), _dash(who.host), _dash(who.thread), since
            )
        parts.append(holders)

    if report.clients:
        clients = Table(title="Clients", title_justify="left")
        for column in ("client", "pid", "host", "thread", "connected", "operations"):
            clients.add_column(column)
        for c in report.clients:
            connected = "-" if c.since is None else f"{_duration(now - c.since)} ago"
            clients.add_row(
                _dash(c.client), _dash(c.pid), _dash(c.host), _dash(c.thread), connected,
                _dash(None if c.operations is None else f"{c.operations:,}"),
            )  # fmt: skip
        parts.append(clients)
    else:
        parts.append(Text("no clients connected"))
    return Group(*parts)


def state_summary(state: Mapping[str, Any]) -> str:
    """One line: where the state is kept, and what the server restored at start."""
    line = f"state dir {state.get('dir')} (fsync {state.get('fsync')})"
    if state.get("failed"):
        return f"{line}: FAILED: {state['failed']}"
    restored = state.get("restored") or {}
    if not restored.get("snapshot") and not restored.get("logs"):
        return f"{line}: new, nothing to restore"
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted((restored.get("kinds") or {}).items()))
    line += (
        f": restored {restored.get('resources', 0)} resource(s)"
        f"{f' ({kinds})' if kinds else ''} from "
        f"{'a snapshot and ' if restored.get('snapshot') else ''}"
        f"{restored.get('records', 0):,} log record(s) in "
        f"{float(restored.get('seconds') or 0) * 1e3:.0f} ms"
    )
    if restored.get("requeued_items"):
        line += f"; {restored['requeued_items']} queue item(s) in flight went back to the front"
    torn = restored.get("torn_tail")
    if torn:
        where = f"{torn.get('file')} (offset {torn.get('offset')})"
        line += f"; dropped a torn record at the end of {where}"
    return line


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _value_or_size(r: ResourceStatus) -> str:
    if r.value is not None:
        return repr(r.value) if not isinstance(r.value, int) else f"{r.value:,}"
    if r.size is not None:
        return f"{r.size:,} item(s)"
    return ""


_SKIP_DETAILS = {"name", "kind", "value", "size", "holders", "waiters", "locked"}


def _details(r: ResourceStatus) -> str:
    bits: list[str] = []
    if r.locked is not None:
        bits.append("locked" if r.locked else "free")
    if r.holders and r.kind != "lock":
        bits.append(f"{len(r.holders)} held")
    if r.waiters:
        bits.append(f"{len(r.waiters)} waiting")
    extra = r.model_extra or {}
    for key, value in extra.items():
        if key not in _SKIP_DETAILS and value is not None:
            bits.append(f"{key}={value}")
    return ", ".join(bits)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s"
