"""The Redis backend's operations, without a Redis server.

Each operation is a sans-IO generator: these tests drive it by hand (or not
at all, for arguments the rulebook refuses before anything is sent).  The
table of operations (``_protocol.OPS``) is the only list used.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest

from proxyshare import _protocol as P
from proxyshare import _rules
from proxyshare._backends.redis.leases import Owner, ThreadOwner, this_thread
from proxyshare._backends.redis.ops import IMPLEMENTATIONS, UNSUPPORTED
from proxyshare._backends.redis.ops.base import implements, unsupported
from proxyshare._backends.redis.sansio import Call, Eval, NextMessage, Run, Subscribe
from proxyshare._errors import ProxyShareError, ResourceNotFoundError, ServerUnavailableError
from proxyshare._protocol import OPS, Op

# -- one implementation per row of the table ----------------------------------------


@pytest.mark.parametrize("op", list(OPS.values()), ids=repr)
def test_every_operation_is_implemented_once_or_declared_unsupported_with_a_reason(
    op: Op[Any],
) -> None:
    implemented, declared = op.code in IMPLEMENTATIONS, op.code in UNSUPPORTED
    assert implemented != declared, f"{op!r}: implemented={implemented}, unsupported={declared}"
    if declared:
        assert "Redis" in UNSUPPORTED[op.code]


def test_nothing_is_registered_outside_the_table() -> None:
    assert set(IMPLEMENTATIONS) | set(UNSUPPORTED) == set(OPS)


@pytest.mark.parametrize("kind", P.KINDS)
def test_a_resource_kind_is_offered_whole_or_not_at_all(kind: str) -> None:
    offered = {op.code in IMPLEMENTATIONS for op in P.ops_of(kind)}
    assert len(offered) == 1, f"{kind}: some operations are implemented, some are not"


def test_only_barriers_are_missing_among_the_resource_kinds() -> None:
    missing = {OPS[code].kind for code in UNSUPPORTED} - {"manager"}
    assert missing == {"barrier"}


@pytest.mark.parametrize("code", sorted(IMPLEMENTATIONS), ids=lambda code: repr(OPS[code]))
def test_an_implementation_is_a_generator_taking_the_operations_arguments(code: int) -> None:
    function = IMPLEMENTATIONS[code]
    assert inspect.isgeneratorfunction(function)
    parameters = list(inspect.signature(function).parameters)
    assert parameters[2:] == list(OPS[code].args)  # after (ctx, name)


def test_an_operation_cannot_be_implemented_twice() -> None:
    with pytest.raises(RuntimeError, match="two Redis implementations"):
        implements(P.COUNTER_ADD)(lambda ctx, name, n=1: iter(()))
    with pytest.raises(RuntimeError):
        unsupported(P.COUNTER_ADD, "no reason")


def _scripts_and_headers() -> list[tuple[str, str]]:
    """``(module:script, the comment lines just above it)`` for every script in ops/."""
    import re
    from pathlib import Path

    import proxyshare._backends.redis.ops as ops

    found = []
    for path in sorted(Path(ops.__file__).parent.glob("*.py")):
        lines = path.read_text().splitlines()
        for at, line in enumerate(lines):
            match = re.match(r"^(_[A-Z_]+) = (resource_script|Script)\(", line)
            if match:
                header = []
                for above in reversed(lines[:at]):
                    if not above.startswith("#"):
                        break
                    header.append(above)
                found.append((f"{path.stem}:{match[1]}", "\n".join(header)))
    return found


@pytest.mark.parametrize(("script", "header"), _scripts_and_headers())
def test_every_lua_script_has_a_header_naming_its_keys_and_argv(script: str, header: str) -> None:
    assert "KEYS" in header and "ARGV" in header, f"{script} has no KEYS/ARGV header"


# -- a hand-driven context ----------------------------------------------------------------


class FakeContext:
    """What an operation needs from its runner, with no I/O: commands are recorded."""

    prefix = "t:"
    registry = "t:registry"
    address = "redis://nowhere:1/0"

    def owner(self) -> Owner:
        return this_thread()

    def lease_runner(self) -> Any:
        return self  # the renewer never runs in these tests

    def where(self) -> str:
        return self.address


def first_command(op: Op[Any], *args: Any, name: str = "r") -> Any:
    """Start ``op``'s implementation; return the first command it yields."""
    steps = IMPLEMENTATIONS[op.code](FakeContext(), name, *args)
    return next(steps)


def drive(steps: Run[Any], replies: list[Any]) -> tuple[list[Any], Any]:
    """Run ``steps``, answering its commands with ``replies`` (an exception is thrown in)."""
    commands = []
    try:
        command = next(steps)
        for reply in replies:
            commands.append(command)
            command = steps.throw(reply) if isinstance(reply, BaseException) else steps.send(reply)
        raise AssertionError(f"the operation wants more replies; it sent {command!r}")
    except StopIteration as done:
        return commands, done.value


def outcome(call: Callable[[], Any]) -> tuple[type[BaseException], str]:
    with pytest.raises(Exception) as caught:
        call()
    return type(caught.value), str(caught.value)


# -- the rulebook: refused before anything is sent, worded as everywhere --------------

NAN, INF = math.nan, math.inf
B64 = 1 << 63

REFUSED: list[tuple[Op[Any], tuple[Any, ...], Callable[[], Any]]] = [
    (P.COUNTER_ADD, ("1",), lambda: _rules.check_int("1", "increment(n)", bits64=True)),
    (P.COUNTER_ADD, (True,), lambda: _rules.check_int(True, "increment(n)", bits64=True)),
    (P.COUNTER_ADD, (B64,), lambda: _rules.check_int(B64, "increment(n)", bits64=True)),
    (P.COUNTER_SUB, (1.5,), lambda: _rules.check_int(1.5, "decrement(n)", bits64=True)),
    (P.COUNTER_SET, (None,), lambda: _rules.check_int(None, "set(value)", bits64=True)),
    (P.COUNTER_SET, (-B64 - 1,), lambda: _rules.check_int(-B64 - 1, "set(value)", bits64=True)),
    (P.COUNTER_CAS, (0, "x"), lambda: _rules.check_int("x", "compare_and_set(new)", bits64=True)),
    (P.COUNTER_SWAP, (B64,), lambda: _rules.check_int(B64, "get_and_set(new)", bits64=True)),
    (P.LOCK_ACQUIRE, (False, 1), lambda: _rules.check_timeout(False, 1)),
    (P.LOCK_ACQUIRE, (True, NAN), lambda: _rules.check_timeout(True, NAN)),
    (P.LOCK_ACQUIRE, (True, INF), lambda: _rules.check_timeout(True, INF)),
    (P.LOCK_ACQUIRE, (True, -0.5), lambda: _rules.check_timeout(True, -0.5)),
    (P.LOCK_ACQUIRE, (True, "1"), lambda: _rules.check_timeout(True, "1")),
    (P.LOCK_ACQUIRE, ("yes", None), lambda: _rules.check_timeout("yes", None)),
    (P.SEM_ACQUIRE, (True, NAN), lambda: _rules.check_timeout(True, NAN)),
    (P.SEM_ACQUIRE, (False, 2), lambda: _rules.check_timeout(False, 2)),
    (P.QUEUE_PUT, (1, True, NAN), lambda: _rules.check_queue_timeout(True, NAN)),
    (P.QUEUE_PUT, (1, True, -1), lambda: _rules.check_queue_timeout(True, -1)),
    (P.QUEUE_GET, (True, "soon"), lambda: _rules.check_queue_timeout(True, "soon")),
    (P.QUEUE_PUT_MANY, ([1], True, INF), lambda: _rules.check_queue_timeout(True, INF)),
    (P.QUEUE_GET_MANY, (0, None), lambda: _rules.check_max_items(0)),
    (P.QUEUE_GET_MANY, ("2", None), lambda: _rules.check_max_items("2")),
    (P.QUEUE_GET_MANY, (2, NAN), lambda: _rules.check_queue_timeout(True, NAN)),
    (P.EVENT_WAIT, (NAN,), lambda: _rules.check_timeout(True, NAN)),
    (P.EVENT_WAIT, (-1.0,), lambda: _rules.check_timeout(True, -1.0)),
    (P.DICT_INCR, ("k", 1.5, 0), lambda: _rules.check_int(1.5, "increment(n)", bits64=True)),
    (P.OPEN, ("lock", {"lease": NAN}), lambda: _rules.check_lease(NAN)),
    (P.OPEN, ("lock", {"lease": 0}), lambda: _rules.check_lease(0)),
    (P.OPEN, ("lock", {"lease": -1}), lambda: _rules.check_lease(-1)),
    (P.OPEN, ("lock", {"lease": "10"}), lambda: _rules.check_lease("10")),
    (P.OPEN, ("semaphore", {"value": 0}), lambda: _rules.check_semaphore_value(0)),
    (P.OPEN, ("semaphore", {"value": 1.0}), lambda: _rules.check_semaphore_value(1.0)),
    (P.OPEN, ("semaphore", {"value": 1, "lease": INF}), lambda: _rules.check_lease(INF)),
    (P.OPEN, ("queue", {"maxsize": "3"}), lambda: _rules.check_maxsize("3")),
    (P.OPEN, ("counter", {"initial": B64}), lambda: _rules.check_int(B64, "initial", bits64=True)),
]


@pytest.mark.parametrize(("op", "args", "rule"), REFUSED, ids=lambda v: repr(v)[:40])
def test_bad_arguments_are_refused_by_the_rulebook_before_anything_is_sent(
    op: Op[Any], args: tuple[Any, ...], rule: Callable[[], Any]
) -> None:
    assert outcome(lambda: first_command(op, *args)) == outcome(rule)


@pytest.mark.parametrize("name", ["", None, 3, b"bytes"])
@pytest.mark.parametrize("op", [P.OPEN, P.DELETE], ids=repr)
def test_bad_names_are_refused_by_the_rulebook(op: Op[Any], name: Any) -> None:
    args = ("counter", {}) if op is P.OPEN else ()
    assert outcome(lambda: first_command(op, *args, name=name)) == outcome(
        lambda: _rules.check_name(name)
    )


def test_an_unknown_kind_is_refused_as_when_served() -> None:
    with pytest.raises(ValueError, match="unknown resource kind 'teapot'"):
        first_command(P.OPEN, "teapot", {})


def test_opening_a_name_of_another_kind_is_worded_by_the_rulebook() -> None:
    steps = IMPLEMENTATIONS[P.OPEN.code](FakeContext(), "r", "lock", {})
    with pytest.raises(type(_rules.wrong_kind("r", "counter", "lock"))) as caught:
        drive(steps, [[0, b"counter"]])
    assert str(caught.value) == str(_rules.wrong_kind("r", "counter", "lock"))


# -- what the operations send, and what they make of the replies ---------------------


def test_counter_increment_is_one_script_with_the_registry_check() -> None:
    commands, value = drive(IMPLEMENTATIONS[P.COUNTER_ADD.code](FakeContext(), "hits", 5), [b"42"])
    (command,) = commands
    assert isinstance(command, Eval)
    assert list(command.keys) == ["t:registry", "t:v:hits"]
    assert list(command.args) == ["hits", "counter", 5]
    assert (command.name, command.kind) == ("hits", "counter")
    assert value == 42


def test_dict_increment_of_a_non_int_value_is_worded_as_when_served() -> None:
    from proxyshare._backends.redis.codec import dumps

    steps = IMPLEMENTATIONS[P.DICT_INCR.code](FakeContext(), "d", "k", 1, 0)
    with pytest.raises(TypeError) as caught:
        drive(steps, [[0, dumps("text")]])
    assert str(caught.value) == str(_rules.cannot_increment("d", "k"))


def test_event_wait_subscribes_before_it_looks_again() -> None:
    steps = IMPLEMENTATIONS[P.EVENT_WAIT.code](FakeContext(), "e", 30)
    commands, value = drive(steps, [0, None, 0, b"1"])
    assert [type(c) for c in commands] == [Eval, Subscribe, Eval, NextMessage]
    assert commands[1].channel == "t:ch:e" and value is True


def test_event_deleted_while_waiting_is_worded_by_the_rulebook() -> None:
    steps = IMPLEMENTATIONS[P.EVENT_WAIT.code](FakeContext(), "e", 30)
    gone = ResourceNotFoundError("no event named 'e'")
    expected = _rules.deleted_while_waiting("event", "e")
    with pytest.raises(ResourceNotFoundError) as caught:
        drive(steps, [0, None, 0, b"0", gone])
    assert str(caught.value) == str(expected)


def test_status_lists_no_clients_where_client_list_is_refused() -> None:
    steps = IMPLEMENTATIONS[P.STATUS.code](FakeContext(), None)
    replies = [b"redis_version:7\r\nuptime_in_seconds:5", b"", b"", ProxyShareError("no"), []]
    commands, status = drive(steps, replies)
    assert [c.args for c in commands if isinstance(c, Call)][-2:] == [
        ("CLIENT", "LIST"),
        ("HGETALL", "t:registry"),
    ]
    assert status["clients"] == [] and status["server"]["version"] == "7"


def test_status_still_fails_when_redis_is_gone() -> None:
    steps = IMPLEMENTATIONS[P.STATUS.code](FakeContext(), None)
    with pytest.raises(ServerUnavailableError):
        drive(steps, [b"", b"", b"", ServerUnavailableError("gone")])


def test_a_thread_owner_is_one_object_per_thread_and_alive_while_it_runs() -> None:
    owner = this_thread()
    assert owner is this_thread() and isinstance(owner, ThreadOwner) and owner.alive()


# -- error replies, worded by the rulebook --------------------------------------------


@pytest.mark.parametrize(
    ("reply", "kind", "expected"),
    [
        ("PSNOTOWNER", "lock", lambda: _rules.not_owner("lock", "r")),
        ("PSNOTOWNER", "semaphore", lambda: _rules.not_owner("semaphore", "r")),
        ("PSKIND dict", "counter", lambda: _rules.wrong_kind("r", "dict", "counter")),
        ("PSCLOSED", "queue", lambda: _rules.queue_closed("r")),
    ],
)
def test_script_refusals_are_worded_by_the_rulebook(
    reply: str, kind: str, expected: Callable[[], BaseException]
) -> None:
    redis = pytest.importorskip("redis")
    from proxyshare._backends.redis.transport import translate

    error = translate(redis.exceptions.ResponseError(reply), "redis://h:1/0", "p:", "r", kind)
    want = expected()
    assert (type(error), str(error)) == (type(want), str(want))
