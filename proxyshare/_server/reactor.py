"""One thread that serves every ready session, and the workers it hands waits to.

Why not a thread per connection (the stdlib manager's way)?  With two or more
busy clients, their server threads take turns on the GIL, and a turn can cost
a wake-up on the other core, which on the 2-core VM we measure on costs more
than a request.  The 2-worker counter benchmark flipped between ~10 and ~25
µs/op from run to run.  One thread that takes whatever sockets ``epoll``
reports ready, answers each at once, and polls a little before it sleeps
(see ``_wire``) has no GIL hand-offs and, under load, never sleeps: 11-13
µs/op, run after run.  Without the polling it was slower than the threads
(26-31 µs/op): an ``epoll`` wake-up is not a "sync" one, so the scheduler
puts the woken thread on the other core more often than a ``recv`` wake-up.

That thread must never wait.  A lock or semaphore waiter parks in its FIFO
with no thread at all (see ``server``).  Any other request that must wait
(an empty queue, an unset event, a barrier, a message too large for one
read) goes to a :class:`Workers` thread with its connection, which leaves
the ``epoll`` set until the reply has gone out.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import os
import queue
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from proxyshare._wire import next_budget, spin_seconds

__all__ = ["IDLE_WORKER_SECONDS", "REACTOR_ENV", "Reactor", "Timer", "Workers"]

logger = logging.getLogger("proxyshare.server")

IDLE_WORKER_SECONDS = 2.0  # an idle worker thread exits after this
_MAX_EVENTS = 64  # per poll; without a limit Python allocates room for 1023 each call


class _Epoll:
    """Linux: a descriptor registered from another thread counts in a running poll."""

    notices_new_fds = True

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def register(self, fd: int, write: bool = False) -> None:
        self._epoll.register(fd, select.EPOLLOUT if write else select.EPOLLIN)

    def modify(self, fd: int, write: bool) -> None:
        self._epoll.modify(fd, select.EPOLLOUT if write else select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        self._epoll.unregister(fd)

    def poll(self, seconds: float) -> list[tuple[int, int]]:
        return self._epoll.poll(seconds, _MAX_EVENTS)

    def close(self) -> None:
        self._epoll.close()


class _Poll:
    """macOS and the BSDs: ``poll(2)``; a new descriptor needs the loop woken."""

    notices_new_fds = False

    def __init__(self) -> None:
        self._poll = select.poll()

    def register(self, fd: int, write: bool = False) -> None:
        self._poll.register(fd, select.POLLOUT if write else select.POLLIN)

    def modify(self, fd: int, write: bool) -> None:
        self._poll.modify(fd, select.POLLOUT if write else select.POLLIN)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, seconds: float) -> list[tuple[int, int]]:
        return self._poll.poll(seconds * 1000)

    def close(self) -> None:
        pass


REACTOR_ENV = "PROXYSHARE_REACTOR"


def _poller() -> _Epoll | _Poll:
    """epoll where the system has it, else poll(2); ``PROXYSHARE_REACTOR=poll``
    picks poll(2) anyway, so Linux CI can run the backend macOS and the BSDs use."""
    choice = os.environ.get(REACTOR_ENV, "").strip() or "auto"
    if choice == "auto":
        choice = "epoll" if hasattr(select, "epoll") else "poll"
    if choice == "epoll" and hasattr(select, "epoll"):
        return _Epoll()
    if choice == "poll":
        return _Poll()
    raise ValueError(f"{REACTOR_ENV}={choice!r}: expected auto, poll, or epoll (Linux only)")


class Timer:
    """A call scheduled on the loop; ``cancel()`` may come from any thread."""

    __slots__ = ("args", "fn", "reactor")

    def __init__(self, reactor: Reactor, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.reactor = reactor
        self.fn: Callable[..., None] | None = fn
        self.args = args

    def cancel(self) -> None:
        if self.fn is not None:
            self.fn = None
            self.reactor._cancelled += 1  # a count for compaction; races only delay it


class Reactor:
    """Calls ``on_ready(owner)`` for every attached file descriptor that is readable."""

    def __init__(
        self,
        on_ready: Callable[[Any], None],
        on_error: Callable[[Any], None],
        poller: Callable[[], _Epoll | _Poll] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self._poller = (poller or _poller)()
        self._owners: dict[int, Any] = {}
        self._on_ready = on_ready
        self._on_error = on_error  # on_ready raised (a bug): drop that owner, go on
        self._on_start = on_start  # run first on the loop's thread
        self._closed = False
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_ids = itertools.count()
        self._cancelled = 0  # cancelled timers still in the heap
        self._starting = threading.Lock()  # guards start/attach against close
        self._soon: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]]
        self._soon = collections.deque()  # call_soon()'s calls, from any thread
        self._wake_r, self._wake_w = os.pipe()  # written to wake the loop up
        os.set_blocking(self._wake_r, False)
        self._poller.register(self._wake_r)
        self.thread = threading.Thread(target=self._run, name="proxyshare-reactor", daemon=True)

    def attach(self, fd: int, owner: Any, *, write: bool = False) -> bool:
        """Watch ``fd`` until it is readable (or ``write``: writable); any thread may, for an
        fd not watched.  False once closed."""
        with self._starting:
            if self._closed:
                return False
            self._owners[fd] = owner  # before registering: an event may come at once
            self._poller.register(fd, write)
            self._wake_if_needed()
        return True

    def watch(self, fd: int, *, write: bool) -> None:
        """Switch an attached ``fd`` between waiting to read and waiting to write; any thread."""
        with self._starting:
            if self._closed or fd not in self._owners:
                return
            self._poller.modify(fd, write)
            self._wake_if_needed()

    def _wake_if_needed(self) -> None:
        if not self._poller.notices_new_fds and threading.current_thread() is not self.thread:
            os.write(self._wake_w, b"a")  # poll(2) polls again with the change included

    def detach(self, fd: int) -> None:
        """Stop watching ``fd``; only the reactor thread calls this."""
        del self._owners[fd]
        self._poller.unregister(fd)

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> Timer:
        """Run ``fn(*args)`` on the loop at ``time.monotonic()`` ``when``; loop thread only."""
        timers = self._timers
        if self._cancelled > 64 and self._cancelled * 2 > len(timers):
            # Mostly cancelled (e.g. acquires with long timeouts, granted early):
            # drop those, so the heap stays as large as the live timers, not the traffic.
            timers[:] = [entry for entry in timers if entry[2].fn is not None]
            heapq.heapify(timers)
            self._cancelled = 0
        timer = Timer(self, fn, args)
        heapq.heappush(timers, (when, next(self._timer_ids), timer))
        return timer

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop's thread, soon; any thread may call this."""
        self._soon.append((fn, args))
        if threading.current_thread() is not self.thread:
            with contextlib.suppress(OSError):  # closed: nobody will run it
                os.write(self._wake_w, b"s")

    def _run_soon(self) -> None:
        soon = self._soon
        while soon:
            fn, args = soon.popleft()
            try:
                fn(*args)
            except Exception:  # a bug: log it, keep serving
                logger.exception("a server callback failed")

    def _run_due_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            fn, args = timer.fn, timer.args
            if fn is None:
                self._cancelled -= 1
                continue
            timer.fn = None
            try:
                fn(*args)
            except Exception:  # a bug: log it, keep serving
                logger.exception("a server timer failed")

    def _sleep_seconds(self) -> float:
        if not self._timers:
            return 1.0  # close() wakes the loop through the pipe
        return max(0.0, min(1.0, self._timers[0][0] - time.monotonic()))

    def start(self) -> None:
        """Start the loop's thread, once."""
        with self._starting:
            if self.thread.ident is None and not self._closed:
                self.thread.start()

    def close(self) -> None:
        """Stop the loop, wait for its thread, free its descriptors."""
        with self._starting:
            if self._closed:
                return
            self._closed = True
        os.write(self._wake_w, b"x")
        if self.thread.ident is not None and self.thread is not threading.current_thread():
            self.thread.join(5)
        if not self.thread.is_alive():
            self._poller.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def orphans(self) -> list[Any]:
        """After ``close()``: the owners still attached, which no thread will serve.

        Empty while the loop's thread runs (it did not stop within ``close``'s wait).
        """
        if self.thread.is_alive():
            return []
        return list(self._owners.values())

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()  # the server's: resources raise MustWait here instead of waiting
        poll = self._poller.poll
        owners = self._owners
        on_ready = self._on_ready
        full = spin_seconds()
        budget = full
        now = time.perf_counter
        pause = os.sched_yield
        timers = self._timers
        soon = self._soon
        while not self._closed:  # not the server's stop: a stopping server still answers
            if timers:
                self._run_due_timers()
            if soon:
                self._run_soon()
            ready = poll(0)
            if not ready:
                # Poll before sleeping, as _wire's waits do: under load the
                # next request comes within microseconds, and a thread that
                # has not slept needs no wake-up.
                start = now()
                end = start + budget
                while budget and not ready and not soon and now() < end:
                    pause()
                    ready = poll(0)
                if not ready:
                    ready = poll(self._sleep_seconds())
                    if full:
                        budget = next_budget(budget, now() - start, full)
                else:
                    budget = full
            for fd, _events in ready:
                owner = owners.get(fd)
                if owner is None:
                    if fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                    continue
                try:
                    on_ready(owner)
                except Exception:
                    logger.exception("serving a connection failed; it is closed")
                    try:
                        self._on_error(owner)
                    except Exception:  # the loop must outlive any one connection
                        logger.exception("closing that connection failed too")


class Workers:
    """Threads for the calls that wait; as many as are waiting, plus a few idle ones.

    A thread that finds no work for ``IDLE_WORKER_SECONDS`` exits, so a burst of
    blocked callers does not leave hundreds of threads behind.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None]
        self._jobs = queue.SimpleQueue()  # None: exit
        self._lock = threading.Lock()
        self.idle = 0  # threads parked in _jobs.get with no job promised to them
        self.closed = False

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            spawn = self.idle == 0
            if not spawn:
                self.idle -= 1
            self._jobs.put((fn, args))
        if spawn:
            threading.Thread(target=self._run, name="proxyshare-worker", daemon=True).start()

    def close(self) -> None:
        """Let idle threads exit now; busy ones exit when their job is done."""
        with self._lock:
            self.closed = True
            for _ in range(self.idle):
                self._jobs.put(None)
            self.idle = 0

    def _run(self) -> None:
        jobs = self._jobs
        job = jobs.get()  # the one submit() put when it started this thread
        while job is not None:
            fn, args = job
            try:
                fn(*args)
            except Exception:  # a job's bug must not cost the pool a thread
                logger.exception("a server worker job failed")
            del fn, args, job
            with self._lock:
                if self.closed:
                    return
                self.idle += 1
            try:
                job = jobs.get(timeout=IDLE_WORKER_SECONDS)
            except queue.Empty:
                with self._lock:
                    try:
                        job = jobs.get_nowait()  # promised to us just as we timed out
                    except queue.Empty:
                        self.idle -= 1
                        return
