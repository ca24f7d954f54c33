"""What runs inside the benchmark's worker processes.

Every scenario's worker body lives here, at module level, so that spawn and
forkserver workers can import it by name.  This module imports nothing heavy
(no pydantic, no rich): a worker's start-up cost is part of what proxyshare
promises to keep small.

A timed task looks like this in each of the W workers::

    timed(kind, ops, *args)
      ├─ BODIES[kind](ops, *args)   set up and warm up: connect, first call
      ├─ barrier.wait()             all W workers start together
      ├─ t0 ─ loop of ops operations ─ t1
      └─ return (t0, t1, done)

The parent takes the wall time as ``max(t1) - min(t0)``: pool start-up and
connection handshakes are outside it.  ``time.perf_counter`` is the system's
monotonic clock on Linux and macOS, so readings compare across processes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from multiprocessing import connection as mpc
from multiprocessing import managers
from typing import Any

__all__ = [
    "BODIES",
    "BaseManagerCounter",
    "BenchBaseManager",
    "FloorServer",
    "aio_setup_calls",
    "hold_lock",
    "init_worker",
    "probe_use",
    "timed",
]

BARRIER_TIMEOUT = 120.0  # seconds; generous, a busy machine starts workers slowly
FLOOR_MESSAGE = b"ping0123"  # small fixed message, like a lean request

Loop = Callable[[], int]

# Objects a worker can only get through inheritance (initializer=): the start
# barrier, the mp.Value and mp.Queue of the initializer scenarios.
_state: dict[str, Any] = {}


def init_worker(barrier: Any, shared: dict[str, Any]) -> None:
    """Pool initializer: keep the inherited barrier and shared objects."""
    _state["barrier"] = barrier
    _state.update(shared)


def timed(kind: str, ops: int, *args: Any) -> tuple[float, float, int]:
    """Set up ``kind``'s loop, wait for the other workers, run it, time it."""
    barrier = _state["barrier"]
    try:
        loop = BODIES[kind](ops, *args)
    except BaseException:
        barrier.abort()  # the others stop waiting at once (BrokenBarrierError)
        raise
    barrier.wait(BARRIER_TIMEOUT)
    t0 = time.perf_counter()
    done = loop()
    t1 = time.perf_counter()
    return t0, t1, done


# -- worker bodies: (ops, *args) -> timed loop ----------------------------------


def _initializer(ops: int) -> Loop:
    value = _state["value"]
    lock = value.get_lock()

    def loop() -> int:
        for _ in range(ops):
            with lock:
                value.value += 1
        return ops

    return loop


def _initializer_nolock(ops: int) -> Loop:
    # The classic mistake: the Value has a lock, but ``+=`` is a read and a
    # write, each locked on its own, so increments between them are lost.
    value = _state["value"]

    def loop() -> int:
        for _ in range(ops):
            value.value += 1
        return ops

    return loop


def _counter(ops: int, counter: Any) -> Loop:
    counter.get()  # connect now, outside the timing
    increment = counter.increment

    def loop() -> int:
        for _ in range(ops):
            increment()
        return ops

    return loop


def aio_setup_calls(tasks: int) -> int:
    """Requests ``_aio_counter`` makes before the timing: the open, then one get per
    task, which ride in two requests when there are several (one alone, the rest in
    one batch: see ``proxyshare.aio._served``)."""
    return 1 + (1 if tasks == 1 else 2)


def _aio_counter(ops: int, address: Any, authkey: bytes, name: str, tasks: int) -> Loop:
    """``tasks`` tasks of one event loop share ``ops`` increments through ``proxyshare.aio``."""
    import asyncio

    from proxyshare import aio

    loop = asyncio.new_event_loop()
    mgr = loop.run_until_complete(aio.connect(address, authkey=authkey))
    try:
        counter = loop.run_until_complete(mgr.counter(name))

        async def warm_up() -> None:  # connections open before the timing, as for the others
            await asyncio.gather(*(counter.get() for _ in range(tasks)))

        loop.run_until_complete(warm_up())
    except BaseException:
        loop.run_until_complete(mgr.aclose())
        loop.close()
        raise
    shares = [ops // tasks + (1 if i < ops % tasks else 0) for i in range(tasks)]

    async def hammer(n: int) -> None:
        increment = counter.increment
        for _ in range(n):
            await increment()

    async def everyone() -> None:
        await asyncio.gather(*(hammer(n) for n in shares))

    def run() -> int:
        try:
            loop.run_until_complete(everyone())
        finally:
            loop.run_until_complete(mgr.aclose())
            loop.close()
        return ops

    return run


def _lock_dict(ops: int, lock: Any, d: Any, key: str) -> Loop:
    d.get(key)

    def loop() -> int:
        for _ in range(ops):
            with lock:
                d[key] = d[key] + 1
        return ops

    return loop


def _dict_increment(ops: int, d: Any, key: str) -> Loop:
    d.get(key)
    increment = d.increment

    def loop() -> int:
        for _ in range(ops):
            increment(key)
        return ops

    return loop


def _pipeline(ops: int, manager: Any, name: str, batch: int) -> Loop:
    manager.counter(name).get()

    def loop() -> int:
        left = ops
        while left:
            n = min(batch, left)
            with manager.pipeline() as p:
                counter = p.counter(name)
                for _ in range(n):
                    counter.increment()
            left -= n
        return ops

    return loop


def _adder(ops: int, adder: Any) -> Loop:
    adder.add(0)  # claim this process's slot now, outside the timing
    add = adder.add

    def loop() -> int:
        for _ in range(ops):
            add()
        return ops

    return loop


def _shm_lock(ops: int, lock: Any, counter: Any) -> Loop:
    counter.get()

    def loop() -> int:
        for _ in range(ops):
            with lock:
                counter.set(counter.get() + 1)
        return ops

    return loop


def _syncmanager(ops: int, value: Any, lock: Any) -> Loop:
    value.get()  # connects this worker's proxy
    with lock:
        pass

    def loop() -> int:
        for _ in range(ops):
            with lock:
                value.value += 1
        return ops

    return loop


def _syncmanager_nolock(ops: int, value: Any) -> Loop:
    value.get()

    def loop() -> int:
        for _ in range(ops):
            value.value += 1
        return ops

    return loop


def _basemanager(ops: int, counter: Any) -> Loop:
    counter.get()
    increment = counter.increment

    def loop() -> int:
        for _ in range(ops):
            increment()
        return ops

    return loop


def _redis(ops: int, url: str, key: str) -> Loop:
    import redis

    client = redis.Redis.from_url(url)
    client.ping()

    def loop() -> int:
        for _ in range(ops):
            client.incr(key)
        client.close()
        return ops

    return loop


def _floor(ops: int, address: Any, authkey: bytes) -> Loop:
    conn = mpc.Client(address, authkey=authkey)
    conn.send_bytes(FLOOR_MESSAGE)
    conn.recv_bytes()

    def loop() -> int:
        send, recv = conn.send_bytes, conn.recv_bytes
        good = 0
        for _ in range(ops):
            send(FLOOR_MESSAGE)
            if recv() == FLOOR_MESSAGE:
                good += 1
        conn.close()
        return good

    return loop


def _queue_put(ops: int, queue: Any) -> Loop:
    queue.qsize()

    def loop() -> int:
        put = queue.put
        for i in range(ops):
            put(i)
        return ops

    return loop


def _queue_inherited(ops: int) -> Loop:
    return _queue_put_mp(ops, _state["queue"])


def _queue_put_mp(ops: int, queue: Any) -> Loop:
    # multiprocessing.Queue has no cheap qsize() on every platform: no warm-up.
    def loop() -> int:
        put = queue.put
        for i in range(ops):
            put(i)
        return ops

    return loop


BODIES: dict[str, Callable[..., Loop]] = {
    "initializer": _initializer,
    "initializer-nolock": _initializer_nolock,
    "counter": _counter,
    "aio-counter": _aio_counter,
    "lock-dict": _lock_dict,
    "dict-increment": _dict_increment,
    "pipeline": _pipeline,
    "shm-lock": _shm_lock,
    "adder": _adder,
    "syncmanager": _syncmanager,
    "syncmanager-nolock": _syncmanager_nolock,
    "basemanager": _basemanager,
    "redis": _redis,
    "floor": _floor,
    "queue-put": _queue_put,
    "queue-inherited": _queue_inherited,
}


# -- the transport floor: raw multiprocessing.connection ping-pong -------------


class FloorServer:
    """Echoes small messages over ``multiprocessing.connection``, a thread per client.

    Runs in its own process (``serve``), like a proxyshare server, so that a
    client in the bench process does not share a GIL with it.
    """

    @staticmethod
    def serve(address: Any, authkey: bytes, ready: Any) -> None:
        with mpc.Listener(address, authkey=authkey, backlog=128) as listener:
            ready.send(listener.address)
            ready.close()
            while True:
                conn = listener.accept()
                threading.Thread(target=FloorServer._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: mpc.Connection) -> None:
        send, recv = conn.send_bytes, conn.recv_bytes
        try:
            while True:
                send(recv())
        except (EOFError, OSError):
            conn.close()


# -- a bare stdlib BaseManager with a trivial counter: the stdlib's floor ------


class BaseManagerCounter:
    """The least a stdlib manager can serve: an integer behind a lock."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()  # one server thread per connection

    def increment(self) -> int:
        with self._lock:
            self._value += 1
            return self._value

    def get(self) -> int:
        return self._value


class BaseManagerCounterProxy(managers.BaseProxy):
    _exposed_ = ("increment", "get")

    def increment(self) -> int:
        call: Any = self._callmethod  # typeshed says it returns None
        return int(call("increment"))

    def get(self) -> int:
        call: Any = self._callmethod
        return int(call("get"))


class BenchBaseManager(managers.BaseManager):
    """``BaseManager`` plus one registered type: no proxyshare code involved."""


BenchBaseManager.register("Counter", BaseManagerCounter, BaseManagerCounterProxy)


# -- capability probes -------------------------------------------------------


def probe_use(kind: str, obj: Any) -> int:
    """Use a shared object passed as a ``submit`` argument, once."""
    if kind == "mp-value":
        with obj.get_lock():
            obj.value += 1
            return int(obj.value)
    if kind == "syncmanager-value":
        obj.value += 1
        return int(obj.value)
    if kind == "redis-client":
        return int(obj.incr("proxyshare-bench:probe"))
    if kind == "adder":
        obj.add()
        return int(obj.get())
    return int(obj.increment())


def hold_lock(lock: Any, ready: Any) -> None:
    """Acquire ``lock``, say so, and wait to be killed."""
    lock.acquire()
    ready.set()
    while True:
        time.sleep(1)


def pid() -> int:
    return os.getpid()
