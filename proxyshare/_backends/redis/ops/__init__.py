"""The Redis implementation of each row of ``_protocol``'s table, one module per kind.

    registry.py   open (get-or-create), delete, names, ping; what Redis does not offer
    status.py     status(): INFO, CLIENT LIST and each resource's describer
    counter.py  lock.py  semaphore.py  dict.py  queue.py  event.py
    owned.py      what a lock and a semaphore share (leases, waiting for one)
    base.py       @implements, the Context an operation runs in, keys, Lua preludes

Each operation is a sans-IO generator (see ``sansio.py``) registered with
``@implements(op)``; each Lua script sits beside the operation that runs it,
with a header naming its KEYS and ARGV.  Importing this package registers
them all: :data:`IMPLEMENTATIONS` maps an op code to its implementation, and
:data:`UNSUPPORTED` to the reason this backend does not offer it.
"""

from __future__ import annotations

from proxyshare._backends.redis.ops import (  # noqa: F401 (imported to register their operations)
    counter,
    dict,
    event,
    lock,
    queue,
    registry,
    semaphore,
    status,
)
from proxyshare._backends.redis.ops.base import IMPLEMENTATIONS, UNSUPPORTED, Implementation

__all__ = ["IMPLEMENTATIONS", "UNSUPPORTED", "Implementation"]
