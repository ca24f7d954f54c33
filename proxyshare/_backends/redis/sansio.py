"""The Redis operations' side of the conversation, without I/O.

Every operation of the table (``ops/``) is a generator: it *yields* the
commands it needs, one at a time, and is *sent* each reply; its ``return``
value is the operation's result.  It never touches a socket, so the same
generator runs under the blocking driver of ``transport.py`` today and
under an asyncio driver (over ``redis.asyncio``) tomorrow::

    def add(ctx, name, n=1):                        # ops/counter.py
        n = check_int(n, "increment(n)", bits64=True)
        reply = yield Eval(ADD, keys, [name, "counter", n], name, "counter")
        return int(reply)

    steps = add(ctx, "hits", 1)                     # a driver
    command = steps.send(None)
    while True:
        try:
            reply = execute(command)                # blocking, or awaited
        except <redis-py or socket error> as exc:
            command = steps.throw(translate(exc))   # the op may catch it
        else:
            command = steps.send(reply)             # StopIteration(value) ends it

What a driver must do:

* run each command on the connection of the operation's owner (one per
  thread today, per task with asyncio), and never resend one: a reply that
  was lost does not mean the command did not run;
* turn redis-py and socket errors into proxyshare errors (one function,
  ``transport.translate``) and throw them into the generator;
* let a blocking command wait at least ``WAIT_SLICE`` seconds;
* close the subscription an operation opened (``Subscribe``) when it ends,
  however it ends.

Commands carry the resource's ``name`` and ``kind`` so that an error reply
is worded for the resource it concerns (``wrong_kind``, ``not_owner``, ...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from typing import Any, TypeAlias, TypeVar

__all__ = [
    "WAIT_SLICE",
    "BlockingPop",
    "Call",
    "Command",
    "Eval",
    "NextMessage",
    "Run",
    "Script",
    "Subscribe",
]

R = TypeVar("R")

#: The longest single blocking command an operation sends.  Drivers must not
#: take a silence this long for a dead server (their socket timeout is longer).
WAIT_SLICE = 5.0


class Script:
    """A Lua script, sent by its SHA1 (``EVALSHA``) once Redis has it cached."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"<Script {self.sha[:8]}>"


class _Command:
    """``name`` and ``kind``: the resource an error reply concerns (``name`` may be None)."""

    __slots__ = ("kind", "name")
    name: str | None
    kind: str


class Eval(_Command):
    """Run ``script`` with ``keys`` and ``args`` (``EVALSHA``, or ``EVAL`` if not cached).

    Reply: what the script returns (``bytes``, ``int``, a list, or ``None``).
    """

    __slots__ = ("args", "keys", "script")

    def __init__(
        self,
        script: Script,
        keys: Sequence[str],
        args: Sequence[Any],
        name: str | None = None,
        kind: str = "resource",
    ) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.name = name
        self.kind = kind


class Call(_Command):
    """One plain command, e.g. ``Call("HGETALL", key)``.  Reply: Redis's, undecoded."""

    __slots__ = ("args",)

    def __init__(self, *args: Any, name: str | None = None, kind: str = "resource") -> None:
        self.args = args
        self.name = name
        self.kind = kind


class BlockingPop(_Command):
    """``BLPOP keys timeout``: wait up to ``timeout`` s (at most ``WAIT_SLICE``).

    Reply: ``None`` if nothing came, else ``(key, value)`` as bytes.
    """

    __slots__ = ("keys", "timeout")

    def __init__(self, keys: Sequence[str], timeout: float, name: str, kind: str) -> None:
        self.keys = keys
        self.timeout = timeout
        self.name = name
        self.kind = kind


class Subscribe(_Command):
    """Subscribe to ``channel`` for the rest of this operation.

    Reply: ``None``, once Redis has confirmed the subscription (so a message
    published after the reply cannot be missed).
    """

    __slots__ = ("channel",)

    def __init__(self, channel: str, name: str, kind: str) -> None:
        self.channel = channel
        self.name = name
        self.kind = kind


class NextMessage(_Command):
    """Wait up to ``timeout`` s for a message on the subscribed channel.

    Reply: the message's data (``bytes``), or ``None`` if none came in time.
    """

    __slots__ = ("timeout",)

    def __init__(self, timeout: float, name: str, kind: str) -> None:
        self.timeout = timeout
        self.name = name
        self.kind = kind


Command: TypeAlias = Eval | Call | BlockingPop | Subscribe | NextMessage

#: An operation in progress: yields commands, is sent their replies, returns ``R``.
Run: TypeAlias = Generator[Command, Any, R]
