"""The same resource API on Redis: ``proxyshare.connect("redis://host:port/db")``.

One concern per module::

    url.py         parsing, redaction, the password from PROXYSHARE_REDIS_PASSWORD
    codec.py       how dict keys, values and queue items are stored
    sansio.py      the commands an operation yields (run a script, a blocking pop, ...)
    ops/           one implementation per row of _protocol's table, each Lua script
                   beside the operation it implements
    leases.py      owners, owner tokens, held leases and their renewer (per process)
    transport.py   RedisTransport: the one call path, its blocking driver, error translation
    manager.py     RedisManager: the resource API (what connect() returns for a Redis URL)

The proxies are the plain ``proxyshare.Counter``, ``Lock``, ... holding a
``RedisTransport``: same methods, same return values, same errors as on the
served backend, and the same argument rules (``proxyshare._rules``).

Differences from the served backend (also in the README):

* Locks and semaphore permits are *leases*: the holder's process renews them
  from a background thread.  An owner that ends or a process that exits
  normally gives them back at once (within ``leases.RENEWER_TICK`` for a
  thread), but a killed holder's lease only expires within its lease time
  (default 10 s), where the served backend releases at once on disconnect.
  A holder that stalls for longer than its lease (or loses Redis for that
  long) loses the lock, and its ``release()`` raises ``NotOwnerError``.  The
  served ``lease=`` is a maximum hold time; here it is how long a silent
  holder is trusted.
* Waiters are woken by blocking list pops and pub/sub, capped at the lease's
  remaining time to live; they are not served first come, first served.
* Counters and ``Dict.increment`` values are 64-bit signed integers
  (``OverflowError`` outside).  Dict keys and values are compared by their
  encoding (see ``codec.py``).
* An item taken by a getter that dies before it returns is lost (the served
  queue puts it back).  Barriers and pipelines are not available.

Importing this package imports neither ``redis`` nor anything heavy; redis-py
is imported on the first call.
"""

from __future__ import annotations

from proxyshare._backends.redis.manager import RedisManager
from proxyshare._backends.redis.transport import RedisTransport

__all__ = ["RedisManager", "RedisTransport"]
