"""``status()`` on Redis: the served backend's shape (``server``, ``clients``, ``resources``).

``server`` comes from ``INFO``, ``clients`` from ``CLIENT LIST`` (the
connections whose client name proxyshare set), and each resource from its
kind's describer (``@describes`` in the kind's module).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from proxyshare import _protocol as P
from proxyshare._backends.redis.ops.base import DESCRIBERS, Context, implements
from proxyshare._backends.redis.ops.registry import names
from proxyshare._backends.redis.sansio import Call, Run
from proxyshare._errors import ProxyShareError, ResourceNotFoundError, ServerUnavailableError

__all__ = ["CLIENT_NAME_TAG", "status"]

logger = logging.getLogger("proxyshare.redis")

#: Each proxyshare connection names itself ``proxyshare:<pid>:<host>``.
CLIENT_NAME_TAG = "proxyshare"


def _parse_info(raw: Any) -> dict[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    result = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(":")
            result[key] = value.strip()
    return result


@implements(P.STATUS)
def status(ctx: Context, _name: None = None) -> Run[dict[str, Any]]:
    info = _parse_info((yield Call("INFO", "server")))
    stats = _parse_info((yield Call("INFO", "stats")))
    clients_info = _parse_info((yield Call("INFO", "clients")))
    uptime = float(info.get("uptime_in_seconds", 0))
    now = time.time()
    server = {
        "backend": "redis",
        "address": ctx.address,
        "prefix": ctx.prefix,
        "version": info.get("redis_version"),
        "pid": int(info.get("process_id", 0)),
        "host": urlsplit(ctx.address).hostname or "",
        "started": now - uptime,
        "uptime": uptime,
        "operations": int(stats.get("total_commands_processed", 0)),
        "threads": None,
        "generic_connections": 0,
        "connected_clients": int(clients_info.get("connected_clients", 0)),
    }
    clients = yield from _clients(now)
    resources = []
    for name, kind in sorted((yield from names(ctx)).items()):
        describe = DESCRIBERS.get(kind)
        if describe is None:
            resources.append({"name": name, "kind": kind})
            continue
        try:
            fields = yield from describe(ctx, name)
        except ResourceNotFoundError:
            continue  # deleted since the names were read
        resources.append({"name": name, "kind": kind, **fields})
    return {"server": server, "clients": clients, "resources": resources}


def _clients(now: float) -> Run[list[dict[str, Any]]]:
    """proxyshare's connections, found by the client name each one sets."""
    try:
        listing = yield Call("CLIENT", "LIST")
    except ServerUnavailableError:
        raise
    except ProxyShareError as exc:
        # Hosted Redis often disables or forbids CLIENT LIST: status still works.
        logger.info("status: CLIENT LIST refused (%s); listing no clients", exc)
        return []
    clients = []
    text = listing.decode() if isinstance(listing, bytes) else str(listing)
    for line in text.splitlines():
        fields = dict(part.partition("=")[::2] for part in line.split())
        tag, _, rest = fields.get("name", "").partition(":")
        if tag != CLIENT_NAME_TAG:
            continue
        pid, _, host = rest.partition(":")
        clients.append(
            {
                "client": int(fields.get("id", 0)),
                "pid": int(pid) if pid.isdigit() else None,
                "host": host,
                "thread": None,
                "since": now - float(fields.get("age", 0)),
                "operations": None,
                "address": fields.get("addr"),
            }
        )
    return clients
