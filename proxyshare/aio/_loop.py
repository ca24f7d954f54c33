"""What every asyncio backend checks before a call: the manager is open, on its own loop."""

from __future__ import annotations

import asyncio

from proxyshare._errors import ProxyShareError

__all__ = ["closed_error", "running_loop"]


def closed_error() -> ProxyShareError:
    return ProxyShareError(
        "this asyncio manager is closed: use it inside `async with aio.connect(...) as mgr:` "
        "or before `await mgr.aclose()`"
    )


def running_loop(bound: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The running event loop, which must be ``bound`` (the manager's) once it has one.

    A manager's connections and futures belong to one loop; another loop's
    call would hang on them or fail deep inside asyncio.
    """
    loop = asyncio.get_running_loop()
    if bound is not None and loop is not bound:
        raise ProxyShareError(
            "this asyncio manager belongs to another event loop: connect with "
            "aio.connect() in the event loop that uses it (e.g. in the ASGI lifespan, "
            "not at import time)"
        )
    return loop
