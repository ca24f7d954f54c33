"""One web app, several worker processes, one shared state: a plain ASGI app.

Every worker of ``uvicorn --workers 4`` (or of gunicorn with uvicorn workers)
is its own process, so an in-process limiter would let through four times the
limit, and a counter in a global would count a quarter of the requests.  Here
the workers share, through a proxyshare server:

* a **global rate limiter**: at most ``EXAMPLE_RATE_LIMIT`` requests per
  ``EXAMPLE_RATE_WINDOW`` seconds, across all workers (429 beyond);
* **request counters**: per path and status, and per worker process;
* a **lock-protected section**: ``POST /orders`` hands out order numbers with a
  read-modify-write that only the lock makes safe (no gap, no duplicate).

Run it with a server started by ``proxyshare serve``::

    proxyshare serve --address unix:/tmp/ps.sock &        # prints its key file
    export PROXYSHARE_ADDRESS=unix:/tmp/ps.sock PROXYSHARE_AUTHKEY_FILE=...
    uvicorn examples.webapp:app --workers 4

or let gunicorn's master start the server (see ``examples/gunicorn_conf.py``)::

    gunicorn examples.webapp:app -c examples/gunicorn_conf.py \\
        -k uvicorn_worker.UvicornWorker -w 4

Each worker connects in the ASGI lifespan startup (one manager per process
and event loop) and closes in the shutdown.  Endpoints: ``GET /`` (limited,
counted), ``POST /orders``, ``GET /stats`` (not limited).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from proxyshare import aio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

LIMIT = int(os.environ.get("EXAMPLE_RATE_LIMIT", "100"))
WINDOW = float(os.environ.get("EXAMPLE_RATE_WINDOW", "1"))


class Shared:
    """This worker's handles on the shared resources (made in the lifespan startup)."""

    mgr: aio.AsyncManager
    windows: aio.Dict  # rate-limit window number -> requests seen in it
    requests: aio.Dict  # "GET / 200" -> count
    served_by: aio.Dict  # worker pid -> requests it served
    orders: aio.Dict  # "last" -> the last order number handed out
    orders_lock: aio.Lock
    workers: aio.Counter  # workers started so far


shared = Shared()


async def startup() -> None:
    mgr = await aio.connect()  # PROXYSHARE_ADDRESS and the key, from the environment
    shared.mgr = mgr
    shared.windows = await mgr.dict("webapp:rate-windows")
    shared.requests = await mgr.dict("webapp:requests")
    shared.served_by = await mgr.dict("webapp:served-by")
    shared.orders = await mgr.dict("webapp:orders")
    shared.orders_lock = await mgr.lock("webapp:orders-lock")
    shared.workers = await mgr.counter("webapp:workers")
    await shared.workers.increment()


async def shutdown() -> None:
    await shared.mgr.aclose()


async def allowed() -> bool:
    """The global fixed-window limiter: one atomic increment per request, whatever worker."""
    window = int(time.time() // WINDOW)
    seen = await shared.windows.increment(window)
    if seen == 1:  # the first request of a window clears the one before the last
        await shared.windows.pop(window - 2, None)
    return seen <= LIMIT


async def next_order() -> int:
    """Read, add one, write back: only safe because the lock serialises it across workers."""
    async with shared.orders_lock:
        last = await shared.orders.get("last", 0)
        await shared.orders.set("last", last + 1)
        return int(last + 1)


async def handle(method: str, path: str) -> tuple[int, dict[str, Any]]:
    if path == "/stats":
        return 200, {
            "requests": await shared.requests.snapshot(),
            "served_by": await shared.served_by.snapshot(),
            "workers": await shared.workers.get(),
            "last_order": await shared.orders.get("last", 0),
            "limit": LIMIT,
        }
    if path == "/orders" and method == "POST":
        return 200, {"order": await next_order()}
    if path == "/" and method == "GET":
        if not await allowed():
            return 429, {"error": f"over the limit of {LIMIT} requests per {WINDOW:g} s"}
        return 200, {"hello": "world"}
    return 404, {"error": f"no route for {method} {path}"}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    status, body = await handle(method, path)
    if path != "/stats":
        await shared.requests.increment(f"{method} {path} {status}")
        await shared.served_by.increment(os.getpid())
    payload = json.dumps({**body, "worker": os.getpid()}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:  # the server prints it and stops: no silent half-start
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
