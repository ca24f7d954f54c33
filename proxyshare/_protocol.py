"""The lean wire format spoken between proxies and the server.

After the stdlib's HMAC handshake, a proxyshare client sends ``HELLO`` and the
connection becomes a *session*: from then on every message is one pickled
tuple ``(opcode, name, *args)`` and every reply one pickled pair
``(OK, result)`` or ``(ERROR, (exception, server_traceback_text))``.
No ``(ident, method, args, kwds)`` tuples, no proxy tokens, no refcounts.

The opcodes are small ints grouped by resource kind.  Both sides import this
module, so it stays free of anything but constants.
"""

from __future__ import annotations

import pickle

PROTOCOL_VERSION = 1
PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL

OK = 0
ERROR = 1

# -- session / manager-level operations (name may be None) ------------------
HELLO = 0  # (HELLO, None, pid, host, thread_name) -> server info dict
OPEN = 1  # (OPEN, name, kind, options) -> options the resource was created with
DELETE = 2  # (DELETE, name) -> bool
STATUS = 3  # (STATUS, None) -> status dict
NAMES = 4  # (NAMES, None) -> {name: kind}
PIPELINE = 5  # (PIPELINE, None, [request, ...]) -> [result, ...]
PING = 6  # (PING, None, payload) -> payload; the round-trip floor

# -- counter --------------------------------------------------------------
COUNTER_GET = 10
COUNTER_ADD = 11
COUNTER_SUB = 12
COUNTER_SET = 13
COUNTER_CAS = 14
COUNTER_SWAP = 15

# -- lock -----------------------------------------------------------------
LOCK_ACQUIRE = 20  # (op, name, blocking, timeout) -> bool
LOCK_RELEASE = 21
LOCK_LOCKED = 22
LOCK_OWNER = 23

# -- dict -----------------------------------------------------------------
DICT_GET = 30  # raises KeyError
DICT_SET = 31
DICT_DEL = 32
DICT_LEN = 33
DICT_CONTAINS = 34
DICT_SNAPSHOT = 35
DICT_POP = 36  # (op, name, key, has_default, default)
DICT_SETDEFAULT = 37
DICT_UPDATE = 38
DICT_CLEAR = 39
DICT_INCR = 40
DICT_CAS = 41
DICT_GET_DEFAULT = 42
DICT_KEYS = 43

# -- queue ----------------------------------------------------------------
QUEUE_PUT = 50  # (op, name, item, block, timeout)
QUEUE_GET = 51  # (op, name, block, timeout)
QUEUE_PUT_MANY = 52
QUEUE_GET_MANY = 53  # (op, name, max_items, timeout)
QUEUE_SIZE = 54
QUEUE_CLOSE = 55
QUEUE_INFO = 56  # -> (qsize, maxsize, closed)

# -- semaphore ------------------------------------------------------------
SEM_ACQUIRE = 60
SEM_RELEASE = 61
SEM_VALUE = 62

# -- event ----------------------------------------------------------------
EVENT_SET = 70
EVENT_CLEAR = 71
EVENT_IS_SET = 72
EVENT_WAIT = 73

# -- barrier --------------------------------------------------------------
BARRIER_WAIT = 80
BARRIER_ABORT = 81
BARRIER_N_WAITING = 82
BARRIER_RESET = 83
BARRIER_INFO = 84

KINDS = ("counter", "lock", "dict", "queue", "semaphore", "event", "barrier")
