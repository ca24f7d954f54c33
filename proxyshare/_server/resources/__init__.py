"""The objects the server holds by name, one module per kind.

    base       Resource, and how a call that must wait says so (MustWait, Parked)
    counter    a Python int (unbounded)
    permits    FIFO ownership, shared by
    lock         the lock (optionally leased) and
    semaphore    the semaphore
    dict       a dict with atomic helpers
    queue      a closable FIFO queue
    event      threading.Event
    barrier    threading.Barrier whose parties can die
    shm        the shared-memory files of the same-host fast path
    adder      the adder's file (its clients add without the server)

``KINDS`` maps each kind a name can be opened as to its class; the server's
dispatch pairs it with the table of operations in ``proxyshare._protocol``.
"""

from __future__ import annotations

from proxyshare._server.resources.adder import AdderResource
from proxyshare._server.resources.barrier import BarrierResource
from proxyshare._server.resources.base import Resource
from proxyshare._server.resources.counter import CounterResource
from proxyshare._server.resources.dict import DictResource
from proxyshare._server.resources.event import EventResource
from proxyshare._server.resources.lock import LockResource
from proxyshare._server.resources.queue import QueueResource
from proxyshare._server.resources.semaphore import SemaphoreResource
from proxyshare._server.resources.shm import ShmCounterResource, ShmLockResource

__all__ = [
    "KINDS",
    "AdderResource",
    "BarrierResource",
    "CounterResource",
    "DictResource",
    "EventResource",
    "LockResource",
    "QueueResource",
    "Resource",
    "SemaphoreResource",
    "ShmCounterResource",
    "ShmLockResource",
]

#: Every kind a name can be opened as: the served ones, then the fast path's files.
KINDS: dict[str, type[Resource]] = {
    cls.kind: cls
    for cls in (
        CounterResource,
        LockResource,
        DictResource,
        QueueResource,
        SemaphoreResource,
        EventResource,
        BarrierResource,
        ShmCounterResource,
        ShmLockResource,
        AdderResource,
    )
}
