"""The server side: what runs in the server process, and only there.

    server      ShareServer: accept, handshake, dispatch by the table of operations,
                the registry of names, pipelines, status, release on disconnect
    session     one client connection (one thread of one client process)
    reactor     the one I/O thread (epoll, poll(2) elsewhere) and its worker pool
    resources/  the objects held by name, one module per kind
    state/      durable state: the state dir, its log and snapshots, recovery

Nothing on the client path imports this package: a process that only
connects, or only unpickles proxies, never loads it.
"""

from __future__ import annotations

from proxyshare._server.server import ShareServer

__all__ = ["ShareServer"]
