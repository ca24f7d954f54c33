"""The asyncio client behind a blocking face, so the contract cases run on it unchanged.

Calls run on one event loop in a thread of its own.  Each calling thread gets
one task there that runs all its calls: asyncio locks and permits belong to
the task, so a test thread keeps what it acquired from one call to the next,
and another thread is another owner -- as with the sync client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

CALL_SECONDS = 30.0  # a contract call that takes longer has hung: fail, never wait on


class LoopThread:
    """An event loop on a daemon thread, with one task per calling thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="contract-aio", daemon=True
        )
        self._thread.start()
        self._inboxes: dict[int, asyncio.Queue[Any]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._lock = threading.Lock()

    def run(self, make: Callable[[], Any]) -> Any:
        """``make()`` in this thread's task; its result, awaited if it is awaitable."""
        done: cf.Future[Any] = cf.Future()
        inbox = self._inbox()
        self.loop.call_soon_threadsafe(inbox.put_nowait, (make, done))
        return done.result(CALL_SECONDS)

    def close(self) -> None:
        """End every task, then the loop and its thread."""
        asyncio.run_coroutine_threadsafe(self._end_workers(), self.loop).result(CALL_SECONDS)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CALL_SECONDS)
        self.loop.close()

    async def _end_workers(self) -> None:
        for inbox in self._inboxes.values():
            inbox.put_nowait(None)
        await asyncio.gather(*self._workers)

    def _inbox(self) -> asyncio.Queue[Any]:
        ident = threading.get_ident()
        with self._lock:
            inbox = self._inboxes.get(ident)
            if inbox is None:
                started = asyncio.run_coroutine_threadsafe(self._start_worker(), self.loop)
                inbox = self._inboxes[ident] = started.result(CALL_SECONDS)
        return inbox

    async def _start_worker(self) -> asyncio.Queue[Any]:
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        self._workers.append(self.loop.create_task(_worker(inbox)))
        return inbox


async def _worker(inbox: asyncio.Queue[Any]) -> None:
    while (item := await inbox.get()) is not None:
        make, done = item
        try:
            result = make()
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            done.set_exception(exc)
        else:
            done.set_result(result)


class Blocking:
    """An aio manager or proxy whose coroutine methods block and return their result.

    Proxies it returns are wrapped too.  The dict syntax maps onto the aio
    names where the aio API has one (``del d[k]``: ``delete``, ``k in d``:
    ``contains``); ``d[k]`` has none, so it is a ``TypeError`` here.
    """

    def __init__(self, target: Any, runner: LoopThread) -> None:
        self._target = target
        self._runner = runner

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._wrap(self._runner.run(lambda: attr(*args, **kwargs)))

        return call

    def _wrap(self, result: Any) -> Any:
        if type(result).__module__.startswith("proxyshare.aio"):
            return Blocking(result, self._runner)
        return result

    def __delitem__(self, key: Any) -> None:
        self.delete(key)

    def __contains__(self, key: Any) -> bool:
        return bool(self.contains(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        self.set(key, value)


def blocking_manager(
    runner: LoopThread, connect: Callable[[], Awaitable[Any]]
) -> tuple[Blocking, Callable[[], None]]:
    """An aio manager opened with ``connect()`` on ``runner``, and how to close it."""
    manager = runner.run(connect)
    return Blocking(manager, runner), lambda: runner.run(manager.aclose)
