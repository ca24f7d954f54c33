"""proxyshare for asyncio: the same named resources, every method a coroutine.

    from proxyshare import aio

    async with aio.connect("127.0.0.1:50000", authkey=key) as mgr:
        hits = await mgr.counter("hits")
        await hits.increment()
        async with await mgr.lock("guard"):      # owned by this task
            ...

The sync and asyncio clients see the same resources.  A lock or permit
belongs to the *task* that acquired it; cancelling a task that waits (in
``acquire``, ``get``, ``wait``, ...) leaves nothing held or taken and never
disturbs what other tasks hold.  The event loop never blocks: no blocking
socket call and no thread per call.

Layout: ``_manager`` (``connect``, ``AsyncManager``, ``Pipeline``),
``_proxies`` (the async proxies, one operation of the table each),
``_served`` (the connection pool and task ownership), ``_connection`` (one
session on the event loop: frames, deadlines, the CANCEL protocol, error
mapping), ``_handshake`` (the multiprocessing HMAC handshake, for asyncio).
"""

from __future__ import annotations

from proxyshare.aio._manager import AsyncManager, Pipeline, connect
from proxyshare.aio._proxies import Barrier, Counter, Dict, Event, Lock, Queue, Semaphore

__all__ = [
    "AsyncManager",
    "Barrier",
    "Counter",
    "Dict",
    "Event",
    "Lock",
    "Pipeline",
    "Queue",
    "Semaphore",
    "connect",
]
