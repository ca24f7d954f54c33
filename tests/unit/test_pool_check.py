"""The argument walker behind ``proxyshare.ProcessPoolExecutor``: verdicts, paths, cost."""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from proxyshare import UnshareableArgumentError, _check
from proxyshare._check import check_call, check_initializer
from proxyshare._client import ServerRef
from proxyshare._proxies import Counter, Dict, Lock

pytestmark = pytest.mark.matrix


def work(*args: Any, **kwargs: Any) -> None:
    return None


@dataclasses.dataclass
class Box:
    content: Any


class Slotted:
    __slots__ = ("inner", "unset")

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def method(self) -> None:
        return None


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


@pytest.fixture
def no_pickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the check pickles anything (``work`` itself is checked once first)."""
    check_call(work, (), {})

    def forbidden(obj: Any, inherit: bool) -> None:
        raise AssertionError(f"pickled {obj!r} on the fast path")

    monkeypatch.setattr(_check, "_probe", forbidden)


def proxies() -> list[Any]:
    ref = ServerRef("127.0.0.1:1", b"key")  # never contacted: building a proxy is local
    return [Counter(ref, "c"), Lock(ref, "l"), Dict(ref, "d")]


def test_numbers_strings_and_proxies_are_accepted_without_pickling(no_pickling: None) -> None:
    check_call(work, (1, 2.5, "s", b"b", None, True, *proxies()), {"k": proxies()[0]})
    check_call(work, ([1, 2, (3, "x")], {"a": [1, {"b": proxies()[1]}]}, {1, 2}), {})


def test_a_checked_function_is_not_pickled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    check_call(work, (), {})
    monkeypatch.setattr(_check, "_probe", lambda obj, inherit: pytest.fail("pickled again"))
    check_call(work, (1,), {})


@pytest.mark.parametrize(
    ("args", "kwargs", "path"),
    [
        ((1, threading.Lock()), {}, "args[1] is"),
        ((), {"guard": threading.Lock()}, "kwargs['guard'] is"),
        (([1, {"k": [0, 1, threading.Lock()]}],), {}, "args[0][1]['k'][2] is"),
        ((Box(Box(threading.Lock())),), {}, "args[0].content.content is"),
        ((Slotted((1, threading.Lock())),), {}, "args[0].inner[1] is"),
        (({"x": Box([threading.Lock()])},), {}, "args[0]['x'].content[0] is"),
        (({threading.Lock()},), {}, "args[0] (a member of the set"),
        ((functools.partial(work, threading.Lock()),), {}, "args[0].args[0] is"),
    ],
    ids=["position", "keyword", "nested", "dataclass", "slots", "mixed", "set", "partial"],
)
def test_the_error_names_the_path_to_the_culprit(
    args: tuple[Any, ...], kwargs: dict[str, Any], path: str
) -> None:
    with pytest.raises(UnshareableArgumentError) as info:
        check_call(work, args, kwargs)
    message = str(info.value)
    assert message.startswith(path)
    assert "threading.Lock" in message and "mgr.lock(name)" in message


def test_a_bound_method_of_an_object_holding_a_lock_is_refused_as_fn() -> None:
    with pytest.raises(UnshareableArgumentError, match=r"^fn.__self__.unset is|^fn.__self__"):
        check_call(Slotted(threading.Lock()).method, (), {})


def test_the_error_is_also_a_type_error() -> None:
    with pytest.raises(TypeError):
        check_call(work, (threading.Lock(),), {})


def test_a_culprit_beyond_the_walk_budget_is_still_found_with_its_path() -> None:
    big = [*range(_check.NODE_BUDGET * 3), threading.Event()]
    with pytest.raises(UnshareableArgumentError, match=rf"^args\[0\]\[{len(big) - 1}\] is"):
        check_call(work, (big,), {})


def test_a_culprit_deeper_than_the_walk_is_still_found_with_its_path() -> None:
    deep: Any = threading.Lock()
    for _ in range(_check.MAX_DEPTH + 3):
        deep = [deep]
    with pytest.raises(UnshareableArgumentError) as info:
        check_call(work, (deep,), {})
    assert str(info.value).startswith("args[0]" + "[0]" * (_check.MAX_DEPTH + 3) + " is")


def test_cycles_end_the_walk() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    check_call(work, (loop,), {})
    loop.append(threading.Lock())
    with pytest.raises(UnshareableArgumentError, match=r"^args\[0\]\[2\] is"):
        check_call(work, (loop,), {})


def test_an_object_that_refuses_pickling_is_reported_with_the_pickle_error() -> None:
    with pytest.raises(UnshareableArgumentError) as info:
        check_call(work, (Box(Unpicklable()),), {})
    assert str(info.value).startswith("args[0].content (")
    assert "this object refuses to be pickled" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)


def test_a_lambda_as_the_function_is_refused() -> None:
    with pytest.raises(UnshareableArgumentError, match=r"^fn is a lambda .*module level"):
        check_call(lambda: None, (), {})


def test_a_large_buffer_passes() -> None:
    check_call(work, (bytearray(50_000_000), b"x" * 50_000_000), {})


def test_a_socket_inside_an_object_is_refused_without_sharing_its_descriptor() -> None:
    with (
        socket.socket() as sock,
        pytest.raises(UnshareableArgumentError, match=r"^args\[0\].content is a socket"),
    ):
        check_call(work, (Box(sock),), {})


def test_a_pipe_connection_passes() -> None:
    # The executor can send a Connection (it shares the descriptor); the probe must
    # not do that itself.
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        check_call(work, (Box(reader),), {})
    finally:
        reader.close()
        writer.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda: multiprocessing.RawValue("i"),
        lambda: multiprocessing.RawArray("i", 3),
        lambda: multiprocessing.Array("d", 3, lock=False),
    ],
    ids=["RawValue", "RawArray", "Array(lock=False)"],
)
def test_raw_shared_memory_ctypes_are_refused_with_advice(make: Any) -> None:
    with pytest.raises(UnshareableArgumentError, match=r"RawValue/RawArray .*mgr\.dict"):
        check_call(work, (make(),), {})


@pytest.fixture
def mp_value() -> Iterator[Any]:
    yield multiprocessing.get_context("spawn").Value("i", 0)


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_initargs_may_hold_multiprocessing_primitives_and_proxies(
    start_method: str, mp_value: Any
) -> None:
    lock = multiprocessing.get_context("spawn").Lock()
    check_initializer(work, (mp_value, Box(lock), *proxies()), start_method)


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_initargs_refuse_thread_level_objects(start_method: str) -> None:
    with pytest.raises(UnshareableArgumentError, match=r"^initargs\[1\].content is a threading"):
        check_initializer(work, (1, Box(threading.RLock())), start_method)


def test_initargs_need_pickling_only_when_workers_are_not_forked() -> None:
    check_initializer(lambda: None, ((i for i in range(3)),), "fork")
    with pytest.raises(UnshareableArgumentError, match=r"^initializer is a lambda"):
        check_initializer(lambda: None, (), "spawn")
    with pytest.raises(UnshareableArgumentError, match=r"^initargs\[0\] is a generator"):
        check_initializer(work, ((i for i in range(3)),), "forkserver")


def test_a_bound_builtin_method_is_checked_again_after_its_object_changes() -> None:
    box: list[Any] = []
    check_call(print, (box.append,), {})  # picklable now
    box.append(threading.Lock())
    with pytest.raises(UnshareableArgumentError):
        check_call(print, (box.append,), {})


def test_a_stdlib_proxy_whose_manager_has_a_custom_authkey_is_refused() -> None:
    from multiprocessing.managers import SyncManager

    with SyncManager(authkey=b"not the process key") as custom, SyncManager() as default:
        with pytest.raises(UnshareableArgumentError, match="digest sent was rejected"):
            check_call(print, ([custom.Value("i", 0)],), {})
        check_call(print, (default.Value("i", 0),), {})  # the default key travels fine
