"""The one table of operations, and the lean wire format that carries them.

Every operation a proxy can ask for is one :class:`Op` row below: its wire
code, the kind of resource it applies to, the resource method that runs it,
its arguments, and what it may do (wait, be batched, change state).  The
rest of the package reads this table instead of keeping lists of its own:

* the server dispatches a request to ``resource.<method>(session, *args)``
  and refuses, in a pipeline, what ``blocks`` (unless ``block_flag`` is false);
* the Redis and shared-memory backends register one implementation per row
  (a test checks that none is missing);
* durable state logs exactly the rows that ``mutate``;
* the sync and asyncio proxies name the rows they send.

On the wire (after the stdlib's HMAC handshake and ``HELLO``) a request is
one pickled tuple ``(code, name, *args)`` and a reply one pickled pair
``(OK, result)`` or ``(ERROR, (exception, server_traceback_text))``.  No
``(ident, method, args, kwds)`` tuples, no proxy tokens, no refcounts.

**Cancelling.**  A client whose call is interrupted (Ctrl-C, a signal
handler that raises, a cancelled asyncio task) sends ``(CANCEL, None, seq)``
where ``seq`` counts the session's requests (1 for the first).  The server
answers the cancelled request if it had not yet (an error), undoes what it
did if it can (an acquire that was granted is released, items a get took go
back to the front of the queue), then replies ``(ACK, seq)``.  The client
reads and drops frames until that ACK: the session is in step again and
keeps everything else it holds.

Both sides import this module, so it stays free of anything but the table.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = [
    "ERROR",
    "KINDS",
    "OK",
    "OPS",
    "PICKLE_PROTOCOL",
    "PROTOCOL_VERSION",
    "Op",
    "ack_frame",
    "ops_of",
]

PROTOCOL_VERSION = 1
PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL

OK = 0
ERROR = 1
ACK = 2  # the reply to CANCEL: (ACK, seq)

R = TypeVar("R")

#: The resource kinds a name can be opened as (the shared-memory and adder
#: kinds live in their backends, see ``ShareServer.KINDS``).
KINDS = ("counter", "lock", "dict", "queue", "semaphore", "event", "barrier")


@dataclass(frozen=True)
class Op(Generic[R]):
    """One operation: a row of the table.  ``R`` is what it returns.

    ``kind`` is ``"manager"`` for operations on the server itself (``name``
    may then be None).  ``method`` is the server-side resource method that
    runs it (see ``proxyshare._server.resources``).
    """

    code: int
    kind: str
    method: str
    args: tuple[str, ...] = ()
    blocks: bool = False  # may wait for another client
    block_flag: str | None = None  # the argument that, when false, makes it never wait
    mutates: bool = False  # changes state that durable storage must keep
    pipeline: bool = True  # may run inside mgr.pipeline() (if it cannot wait there)
    fails_fast_in_pipeline: bool = False  # in a pipeline it raises instead of waiting
    undoable: bool = False  # a CANCEL that comes after it completed undoes it

    @property
    def block_flag_at(self) -> int | None:
        """Index of ``block_flag`` in a request tuple ``(code, name, *args)``."""
        return None if self.block_flag is None else 2 + self.args.index(self.block_flag)

    def never_waits(self, request: tuple[Any, ...]) -> bool:
        """Whether ``request`` cannot wait: a non-blocking op, or ``block=False``."""
        if not self.blocks:
            return True
        at = self.block_flag_at
        return at is not None and len(request) > at and request[at] is False

    def wait_limit(self, request: tuple[Any, ...], deadline: float) -> float | None:
        """How long a reply to ``request`` may take: ``deadline`` seconds for a call
        that cannot wait, its own timeout plus ``deadline`` for one that may, or
        None (no limit) for one that waits forever."""
        if self.never_waits(request):
            return deadline
        at = 2 + self.args.index("timeout")
        timeout = request[at] if len(request) > at else None
        if timeout is None or timeout == -1:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            return deadline  # refused at once by the server
        if not 0 <= timeout <= 86_400 * 365:  # NaN, inf, negative: refused at once too
            return deadline
        return float(timeout) + deadline

    def allowed_in_pipeline(self, request: tuple[Any, ...]) -> bool:
        """Whether ``request`` may run in a pipeline, which holds mutexes and must not wait."""
        return self.pipeline and (self.fails_fast_in_pipeline or self.never_waits(request))

    def __repr__(self) -> str:
        return f"<Op {self.kind}.{self.method} ({self.code})>"


_MANAGER: dict[str, Any] = {"kind": "manager", "pipeline": False}

# -- session / manager-level operations (name may be None) -----------------------------
HELLO: Op[dict[str, Any]] = Op(0, method="hello", args=("pid", "host", "thread"), **_MANAGER)
OPEN: Op[dict[str, Any]] = Op(1, method="open", args=("kind", "options"), mutates=True, **_MANAGER)
DELETE: Op[bool] = Op(2, method="delete", mutates=True, **_MANAGER)
STATUS: Op[dict[str, Any]] = Op(3, method="status", **_MANAGER)
NAMES: Op[dict[str, str]] = Op(4, method="names", **_MANAGER)
PIPELINE: Op[list[Any]] = Op(5, method="pipeline", args=("requests",), **_MANAGER)
PING: Op[Any] = Op(6, method="ping", args=("payload",), **_MANAGER)
CANCEL: Op[None] = Op(7, method="cancel", args=("seq",), **_MANAGER)  # see the docstring

# -- counter ------------------------------------------------------------------------------
COUNTER_GET: Op[int] = Op(10, "counter", "get")
COUNTER_ADD: Op[int] = Op(11, "counter", "add", ("n",), mutates=True)
COUNTER_SUB: Op[int] = Op(12, "counter", "sub", ("n",), mutates=True)
COUNTER_SET: Op[None] = Op(13, "counter", "set", ("value",), mutates=True)
COUNTER_CAS: Op[bool] = Op(14, "counter", "compare_and_set", ("expected", "new"), mutates=True)
COUNTER_SWAP: Op[int] = Op(15, "counter", "get_and_set", ("new",), mutates=True)

# -- lock (ownership is the session's: nothing to make durable) ---------------------------
_WAITS: dict[str, Any] = {"blocks": True}
LOCK_ACQUIRE: Op[bool] = Op(
    20, "lock", "acquire", ("blocking", "timeout"), block_flag="blocking", undoable=True, **_WAITS
)
LOCK_RELEASE: Op[None] = Op(21, "lock", "release")
LOCK_LOCKED: Op[bool] = Op(22, "lock", "locked")
LOCK_OWNER: Op[dict[str, Any] | None] = Op(23, "lock", "owner")

# -- dict ---------------------------------------------------------------------------------
DICT_GET: Op[Any] = Op(30, "dict", "get", ("key",))  # KeyError if absent
DICT_SET: Op[None] = Op(31, "dict", "set", ("key", "value"), mutates=True)
DICT_DEL: Op[None] = Op(32, "dict", "delete", ("key",), mutates=True)
DICT_LEN: Op[int] = Op(33, "dict", "len")
DICT_CONTAINS: Op[bool] = Op(34, "dict", "contains", ("key",))
DICT_SNAPSHOT: Op[dict[Any, Any]] = Op(35, "dict", "snapshot")
DICT_POP: Op[Any] = Op(36, "dict", "pop", ("key", "has_default", "default"), mutates=True)
DICT_SETDEFAULT: Op[Any] = Op(37, "dict", "setdefault", ("key", "default"), mutates=True)
DICT_UPDATE: Op[None] = Op(38, "dict", "update", ("items",), mutates=True)
DICT_CLEAR: Op[None] = Op(39, "dict", "clear", mutates=True)
DICT_INCR: Op[int] = Op(40, "dict", "increment", ("key", "n", "default"), mutates=True)
DICT_CAS: Op[bool] = Op(41, "dict", "compare_and_set", ("key", "expected", "new"), mutates=True)
DICT_GET_DEFAULT: Op[Any] = Op(42, "dict", "get_default", ("key", "default"))
DICT_KEYS: Op[list[Any]] = Op(43, "dict", "keys")

# -- queue --------------------------------------------------------------------------------
QUEUE_PUT: Op[None] = Op(
    50, "queue", "put", ("item", "block", "timeout"), block_flag="block", mutates=True, **_WAITS
)
QUEUE_GET: Op[Any] = Op(
    51, "queue", "get", ("block", "timeout"), block_flag="block", mutates=True, undoable=True,
    **_WAITS,
)  # fmt: skip
QUEUE_PUT_MANY: Op[None] = Op(
    52, "queue", "put_many", ("items", "block", "timeout"), block_flag="block", mutates=True,
    fails_fast_in_pipeline=True, **_WAITS,
)  # fmt: skip
QUEUE_GET_MANY: Op[list[Any]] = Op(
    53, "queue", "get_many", ("max_items", "timeout"), mutates=True, undoable=True, **_WAITS
)
QUEUE_SIZE: Op[int] = Op(54, "queue", "qsize")
QUEUE_CLOSE: Op[None] = Op(55, "queue", "close", mutates=True)
QUEUE_INFO: Op[tuple[int, int, bool]] = Op(56, "queue", "info")  # (qsize, maxsize, closed)

# -- semaphore ----------------------------------------------------------------------------
SEM_ACQUIRE: Op[bool] = Op(
    60, "semaphore", "acquire", ("blocking", "timeout"), block_flag="blocking", undoable=True,
    **_WAITS,
)  # fmt: skip
SEM_RELEASE: Op[None] = Op(61, "semaphore", "release")
SEM_VALUE: Op[int] = Op(62, "semaphore", "value")

# -- event --------------------------------------------------------------------------------
EVENT_SET: Op[None] = Op(70, "event", "set", mutates=True)
EVENT_CLEAR: Op[None] = Op(71, "event", "clear", mutates=True)
EVENT_IS_SET: Op[bool] = Op(72, "event", "is_set")
EVENT_WAIT: Op[bool] = Op(73, "event", "wait", ("timeout",), **_WAITS)

# -- barrier (its definition is kept; a round in progress is not) --------------------------
BARRIER_WAIT: Op[int] = Op(80, "barrier", "wait", ("timeout",), **_WAITS)
BARRIER_ABORT: Op[None] = Op(81, "barrier", "abort")
BARRIER_N_WAITING: Op[int] = Op(82, "barrier", "n_waiting")
BARRIER_RESET: Op[None] = Op(83, "barrier", "reset")
BARRIER_INFO: Op[tuple[int, int, bool]] = Op(84, "barrier", "info")  # (parties, n_waiting, broken)


def ack_frame(seq: int) -> bytes:
    """The exact bytes of the reply to ``(CANCEL, None, seq)``.

    Fixed, so a client recognises it without unpickling the frames before it
    (the cancelled request's reply may name classes it would have to import).
    """
    return pickle.dumps((ACK, seq), 5)


def _collect() -> dict[int, Op[Any]]:
    table: dict[int, Op[Any]] = {}
    for value in list(globals().values()):
        if isinstance(value, Op):
            if value.code in table:
                raise RuntimeError(f"two operations share code {value.code}")
            table[value.code] = value
    return dict(sorted(table.items()))


#: Every operation by its wire code.
OPS: dict[int, Op[Any]] = _collect()


def ops_of(kind: str) -> list[Op[Any]]:
    """The operations of one resource kind, in table order."""
    return [op for op in OPS.values() if op.kind == kind]
