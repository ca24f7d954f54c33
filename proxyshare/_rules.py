"""The one rulebook: what an argument must be, and how each refusal reads.

Every backend (the server's resources, shared memory, Redis, the asyncio
client) checks its arguments with these functions, so the same call with
the same argument has the same outcome, and the same words, everywhere.
The contract suite (``tests/contract``) runs each rule on every backend.

The rules, decided once:

* **names**: a non-empty ``str``.
* **integers** (counter values, increments, sizes): an ``int`` and not a
  ``bool``; backends that store 64 bits (shared memory, Redis) also raise
  ``OverflowError`` outside the signed 64-bit range.
* **timeouts**: ``None`` (or ``-1``, as ``threading``) waits forever; else a
  finite number of seconds ``>= 0`` (NaN, ``inf``, negative numbers, bools
  and strings are refused).  A non-blocking lock or semaphore acquire
  refuses a timeout (as ``threading.Lock``); a non-blocking queue call
  ignores it (as ``queue.Queue``).
* **leases**: ``None`` (the backend's default) or a finite number of seconds
  ``> 0``.
* **semaphore value**: ``>= 1``.  Permits are owned by whoever acquired them,
  so a semaphore that starts empty could never be acquired.
* **queue maxsize**: an ``int``; ``<= 0`` means unbounded (as ``queue.Queue``).
* **barrier parties**, **get_many's max_items**: ``>= 1``.
* **fsync policy** of a state dir: ``"always"``, ``"everysec"`` or ``"no"``.
"""

from __future__ import annotations

import math
import threading

from proxyshare._errors import (
    NotOwnerError,
    ProxyShareError,
    ResourceKindError,
    ResourceNotFoundError,
)

__all__ = [
    "FSYNC_POLICIES",
    "INT64_MAX",
    "INT64_MIN",
    "cannot_increment",
    "check_fsync",
    "check_int",
    "check_lease",
    "check_max_items",
    "check_maxsize",
    "check_name",
    "check_parties",
    "check_queue_timeout",
    "check_semaphore_value",
    "check_timeout",
    "deleted_while_waiting",
    "not_owner",
    "not_reentrant",
    "queue_closed",
    "queue_closed_and_empty",
    "wrong_kind",
]

FSYNC_POLICIES = ("always", "everysec", "no")
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_TIMEOUT_MAX = threading.TIMEOUT_MAX


def check_name(name: object) -> str:
    """A resource name: a non-empty ``str``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a resource name must be a non-empty str, not {name!r}")
    return name


def check_fsync(policy: object) -> str:
    """A state dir's fsync policy: one of ``FSYNC_POLICIES``."""
    if policy not in FSYNC_POLICIES:
        raise ValueError(
            f"invalid fsync policy {policy!r}: use always (sync before every reply), "
            "everysec (once a second, the default) or no (leave it to the OS)"
        )
    return str(policy)


def check_int(value: object, what: str, *, bits64: bool = False) -> int:
    """An ``int`` (not a ``bool``); with ``bits64``, one that fits a signed 64-bit slot."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int, not {type(value).__name__} ({value!r})")
        value = int(value)  # an int subclass (IntEnum): store the plain int
    if bits64 and not INT64_MIN <= value <= INT64_MAX:
        raise OverflowError(
            f"{what}={value} does not fit in 64 bits (signed: {INT64_MIN}..{INT64_MAX}) on "
            "this backend; the value is unchanged (a served counter holds any int)"
        )
    return value


def _seconds(value: object, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{what} must be a number of seconds or None, not {type(value).__name__} ({value!r})"
        )
    seconds = float(value)
    # NaN first: no deadline compares with it (it once stopped every timer of a server).
    if math.isnan(seconds) or seconds < 0 or (positive and seconds == 0):
        sign = "positive" if positive else "non-negative"
        raise ValueError(f"{what} must be a {sign} number of seconds (or None), not {value}")
    if seconds > _TIMEOUT_MAX:
        raise ValueError(f"{what}={value} is too large: use None for no limit")
    return seconds


def check_timeout(blocking: object, timeout: object, flag: str = "blocking") -> float | None:
    """A lock-style ``(blocking, timeout)``: seconds to wait, or None (forever).

    ``flag`` is the caller's name for ``blocking``.
    """
    if not isinstance(blocking, (bool, int)):
        raise TypeError(f"{flag} must be a bool, not {type(blocking).__name__} ({blocking!r})")
    if timeout is None or (type(timeout) is int and timeout == -1):
        return None
    seconds = _seconds(timeout, "timeout")
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    return seconds


def check_queue_timeout(block: object, timeout: object) -> float | None:
    """A ``queue.Queue``-style ``(block, timeout)``: the timeout is ignored when not blocking."""
    if not isinstance(block, (bool, int)):
        raise TypeError(f"block must be a bool, not {type(block).__name__} ({block!r})")
    if not block or timeout is None:
        return None
    return _seconds(timeout, "timeout")


def check_lease(lease: object) -> float | None:
    """None (the backend's default), or a finite number of seconds > 0."""
    if lease is None:
        return None
    return _seconds(lease, "lease", positive=True)


def check_semaphore_value(value: object) -> int:
    permits = check_int(value, "semaphore value")
    if permits < 1:
        raise ValueError(
            f"semaphore value must be >= 1, not {permits}: a proxyshare semaphore's permits "
            "are owned by the callers that acquire them; to signal between processes use "
            "mgr.event() or mgr.queue()"
        )
    return permits


def check_maxsize(maxsize: object) -> int:
    """A queue bound; ``<= 0`` means unbounded, as for ``queue.Queue``."""
    return check_int(maxsize, "maxsize")


def check_parties(parties: object) -> int:
    return _at_least_one(parties, "parties")


def check_max_items(max_items: object) -> int:
    return _at_least_one(max_items, "max_items")


def _at_least_one(value: object, what: str) -> int:
    number = check_int(value, what)
    if number < 1:
        raise ValueError(f"{what} must be >= 1, not {number}")
    return number


# -- refusals, one wording each -----------------------------------------------------


def not_owner(kind: str, name: str) -> NotOwnerError:
    """``release()`` by a caller that holds nothing of ``name`` (or whose lease ran out)."""
    noun = "lock" if kind == "lock" else "permit"
    return NotOwnerError(
        f"{kind} {name!r} cannot be released by this caller: it holds no {noun} (a {kind} is "
        "owned by the process and thread that acquired it, until its lease, if any, runs out)"
    )


def not_reentrant(name: str) -> ProxyShareError:
    """A thread acquiring, with no timeout, a lock it already holds."""
    return ProxyShareError(
        f"lock {name!r} is already held by this thread; acquiring it again would wait "
        "forever (proxyshare locks are not re-entrant)"
    )


def wrong_kind(name: str, found: str, wanted: str) -> ResourceKindError:
    """``name`` is a ``found`` and was opened or used as a ``wanted``."""
    return ResourceKindError(
        f"{name!r} is already {_a(found)}; it cannot also be {_a(wanted)}: use another "
        f"name, or mgr.delete({name!r}) first"
    )


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def deleted_while_waiting(kind: str, name: str) -> ResourceNotFoundError:
    return ResourceNotFoundError(f"{kind} {name!r} was deleted while this call was waiting on it")


def cannot_increment(name: str, key: object) -> TypeError:
    """``dict.increment(key)`` on a value that is not an int."""
    return TypeError(f"dict {name!r}: cannot increment key {key!r}: its value is not an int")


def queue_closed(name: str) -> ProxyShareError:
    return ProxyShareError(f"queue {name!r} is closed: it accepts no more items")


def queue_closed_and_empty(name: str) -> ProxyShareError:
    return ProxyShareError(f"queue {name!r} is closed and empty: no more items will come")
