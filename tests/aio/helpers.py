"""Helpers for the asyncio client's tests: plain ``asyncio.run``, always bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import proxyshare
from proxyshare import aio

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run ``coro`` in a fresh event loop; fail (never hang) after ``timeout`` s."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def connect(manager: proxyshare.ShareManager, **options: Any) -> Any:
    """``aio.connect()`` to the server of a running ``ShareManager``."""
    ref = manager.server_ref
    return aio.connect(ref.address, authkey=ref.authkey, **options)


async def eventually(predicate: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(0.01)


async def resource(mgr: aio.AsyncManager, name: str) -> dict[str, Any]:
    """The status entry of resource ``name``."""
    status = await mgr.status()
    (found,) = [r for r in status["resources"] if r["name"] == name]
    return dict(found)


def connect_redis(url: str, prefix: str) -> Any:
    """``aio.connect(url)`` under a key prefix of its own (what a test needs)."""
    from proxyshare.aio._manager import _Connecting
    from proxyshare.aio._redis import RedisAsyncTransport

    return _Connecting(RedisAsyncTransport(url, prefix))
