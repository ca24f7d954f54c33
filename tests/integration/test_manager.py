"""The core contract of ShareManager and its counter, lock and dict proxies."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from proxyshare._server import ShareServer
from tests.integration import workers
from tests.support import free_port, kill_hard, wait_until, write_pid

pytestmark = pytest.mark.matrix

# -- get-or-create by name -------------------------------------------------------


def test_same_name_same_kind_is_the_same_object(manager: proxyshare.ShareManager) -> None:
    manager.counter("hits").increment(5)
    assert manager.counter("hits", initial=100).get() == 5  # initial only applies on creation


def test_same_name_other_kind_raises_resource_kind_error_naming_both(
    manager: proxyshare.ShareManager,
) -> None:
    manager.counter("x")
    with pytest.raises(proxyshare.ResourceKindError, match=r"'x' is already a counter.*lock"):
        manager.lock("x")


def test_a_second_client_reaches_the_same_resources(manager: proxyshare.ShareManager) -> None:
    manager.dict("shared")["k"] = "v"
    other = proxyshare.connect(manager.address, authkey=bytes(manager._authkey))
    assert other.dict("shared")["k"] == "v"


def test_delete_removes_a_resource_and_its_proxies_say_so(manager: proxyshare.ShareManager) -> None:
    counter = manager.counter("gone")
    assert manager.delete("gone") is True
    assert manager.delete("gone") is False
    with pytest.raises(proxyshare.ResourceNotFoundError, match="deleted"):
        counter.increment()
    assert manager.counter("gone").get() == 0


def test_names_lists_every_resource_and_its_kind(manager: proxyshare.ShareManager) -> None:
    manager.counter("c"), manager.lock("l"), manager.dict("d")
    assert manager.names() == {"c": "counter", "l": "lock", "d": "dict"}


def test_a_resource_name_must_be_a_non_empty_string(manager: proxyshare.ShareManager) -> None:
    with pytest.raises(TypeError, match="non-empty str"):
        manager.counter("")


def test_a_manager_that_is_not_running_says_how_to_start_it() -> None:
    with pytest.raises(proxyshare.ProxyShareError, match="with ShareManager"):
        proxyshare.ShareManager().counter("x")


# -- counter ----------------------------------------------------------------------


def test_counter_methods(manager: proxyshare.ShareManager) -> None:
    c = manager.counter("c", initial=10)
    assert c.increment() == 11
    assert c.increment(4) == 15
    assert c.decrement(5) == 10
    c.set(3)
    assert c.value == 3
    c.value = 7
    assert c.get() == 7
    assert c.compare_and_set(7, 8) is True
    assert c.compare_and_set(7, 9) is False
    assert c.get_and_set(1) == 8
    assert c.get() == 1


@pytest.mark.parametrize("bad", ["1", 1.5, None, True])
def test_counter_rejects_a_non_integer_step_and_keeps_its_value(
    manager: proxyshare.ShareManager, bad: object
) -> None:
    c = manager.counter("c", initial=1)
    with pytest.raises(TypeError, match="must be an int"):
        c.increment(bad)  # type: ignore[arg-type]
    assert c.get() == 1


def test_server_traceback_arrives_as_cause(manager: proxyshare.ShareManager) -> None:
    c = manager.counter("c")
    with pytest.raises(TypeError) as info:
        c.increment("x")  # type: ignore[arg-type]
    assert isinstance(info.value.__cause__, proxyshare.RemoteTraceback)
    assert "resources/counter.py" in str(info.value.__cause__)


# -- lock -------------------------------------------------------------------------


def test_lock_acquire_release_owner_and_context_manager(manager: proxyshare.ShareManager) -> None:
    lock = manager.lock("l")
    assert lock.owner() is None and lock.locked() is False
    with lock:
        owner = lock.owner()
        assert owner is not None
        assert owner["pid"] == os.getpid() and "host" in owner and owner["since"] <= time.time()
        assert lock.locked()
        assert lock.acquire(blocking=False) is False
        assert lock.acquire(timeout=0.05) is False
    assert lock.locked() is False


def test_release_by_a_non_holder_raises_not_owner_error(manager: proxyshare.ShareManager) -> None:
    lock = manager.lock("l")
    with pytest.raises(proxyshare.NotOwnerError):
        lock.release()
    lock.acquire()
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            lock.release()
        except BaseException as exc:  # recorded for the assertion below
            errors.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], proxyshare.NotOwnerError)
    lock.release()


def test_threads_of_one_process_exclude_each_other(manager: proxyshare.ShareManager) -> None:
    lock, d = manager.lock("l"), manager.dict("d")
    d["n"] = 0

    def work() -> None:
        for _ in range(200):
            with lock:
                d["n"] = d["n"] + 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert d["n"] == 800


def test_reacquiring_a_held_lock_without_timeout_raises_instead_of_hanging(
    manager: proxyshare.ShareManager,
) -> None:
    lock = manager.lock("l")
    with lock, pytest.raises(proxyshare.ProxyShareError, match="not re-entrant"):
        lock.acquire()


def test_invalid_acquire_arguments_are_refused(manager: proxyshare.ShareManager) -> None:
    lock = manager.lock("l")
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="non-negative"):
        lock.acquire(timeout=-5)
    with pytest.raises(TypeError, match="timeout"):
        lock.acquire(timeout="soon")  # type: ignore[arg-type]
    assert lock.locked() is False


def test_waiters_are_granted_first_come_first_served(manager: proxyshare.ShareManager) -> None:
    lock, log, started = manager.lock("fifo"), manager.dict("log"), manager.counter("started")
    lock.acquire()
    ctx = multiprocessing.get_context("fork")
    procs = []
    try:
        for i in range(4):
            p = ctx.Process(
                target=workers.acquire_append_release, args=(lock, log, f"w{i}", started)
            )
            p.start()
            procs.append(p)
            # the next waiter queues only after this one is parked in the server
            wait_until(lambda i=i: len(lock_waiters(manager, "fifo")) == i + 1, timeout=10)
        lock.release()
        for p in procs:
            p.join(30)
        assert [log[i] for i in range(4)] == ["w0", "w1", "w2", "w3"]
    finally:
        for p in procs:
            kill_hard(p)


def lock_waiters(manager: proxyshare.ShareManager, name: str) -> list[dict[str, object]]:
    for resource in manager.status()["resources"]:
        if resource["name"] == name:
            return list(resource["waiters"])
    return []


def test_lock_is_released_within_1s_when_its_holder_is_killed(
    manager: proxyshare.ShareManager,
) -> None:
    lock, held = manager.lock("l"), manager.counter("held")
    proc = multiprocessing.get_context("spawn").Process(
        target=workers.hold_until_killed, args=(lock, held)
    )
    proc.start()
    try:
        wait_until(lambda: held.get() != 0, timeout=30)
        assert lock.owner()["pid"] == proc.pid  # type: ignore[index]
        kill_hard(proc)
        started = time.monotonic()
        assert lock.acquire(timeout=5)
        assert time.monotonic() - started < 1.0
        lock.release()
    finally:
        kill_hard(proc)


def test_a_leased_lock_is_released_when_the_lease_runs_out(
    manager: proxyshare.ShareManager,
) -> None:
    lock = manager.lock("leased", lease=0.2)
    lock.acquire()
    wait_until(lambda: not lock.locked(), timeout=5)
    with pytest.raises(proxyshare.NotOwnerError):
        lock.release()


# -- dict -------------------------------------------------------------------------


def test_dict_is_a_complete_mutable_mapping(manager: proxyshare.ShareManager) -> None:
    d = manager.dict("d")
    d["a"] = 1
    d.update({"b": 2}, c=3)
    assert len(d) == 3 and "a" in d and "z" not in d
    assert sorted(d) == ["a", "b", "c"]
    assert dict(d.items()) == {"a": 1, "b": 2, "c": 3}
    assert sorted(d.values()) == [1, 2, 3]
    assert d == {"a": 1, "b": 2, "c": 3}
    assert d.get("z") is None and d.get("z", 0) == 0
    assert d.pop("c") == 3 and d.pop("c", "none") == "none"
    with pytest.raises(KeyError):
        d.pop("c")
    assert d.setdefault("s", []) == [] and d["s"] == []
    del d["s"]
    with pytest.raises(KeyError):
        d["s"]
    assert d.popitem() in {("a", 1), ("b", 2)}
    d.clear()
    assert len(d) == 0 and d.snapshot() == {}


def test_dict_atomic_helpers(manager: proxyshare.ShareManager) -> None:
    d = manager.dict("d")
    assert d.increment("n") == 1
    assert d.increment("n", 5) == 6
    assert d.increment("m", default=10) == 11
    assert d.compare_and_set("n", 6, 7) is True
    assert d.compare_and_set("n", 6, 8) is False
    assert d.compare_and_set("missing", None, 1) is False
    assert d.snapshot() == {"n": 7, "m": 11}
    d["s"] = "text"
    with pytest.raises(TypeError, match="cannot increment key 's'"):
        d.increment("s")


def test_an_unpicklable_value_is_refused_and_the_dict_is_unchanged(
    manager: proxyshare.ShareManager,
) -> None:
    d = manager.dict("d")
    d["k"] = 1
    with pytest.raises(proxyshare.UnshareableArgumentError, match="cannot be pickled"):
        d["k"] = threading.Lock()
    assert d.snapshot() == {"k": 1}


def test_dict_views_and_iteration_work_inside_pool_workers(
    manager: proxyshare.ShareManager, mp_context: multiprocessing.context.BaseContext
) -> None:
    d = manager.dict("d")
    d.update(a=1, b=2)
    with cf.ProcessPoolExecutor(1, mp_context=mp_context) as pool:
        got = pool.submit(workers.dict_views_in_worker, d).result(timeout=60)
    assert got == {
        "keys": ["a", "b"],
        "items": [("a", 1), ("b", 2)],
        "values": [1, 2],
        "iter": ["a", "b"],
        "len": 2,
        "contains": True,
        "get": "dflt",
    }


# -- connections, addresses and servers ----------------------------------------------


def test_many_proxies_in_one_worker_share_one_connection(manager: proxyshare.ShareManager) -> None:
    counters = [manager.counter(f"c{i}") for i in range(20)]
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(workers.many_proxies_one_connection, counters).result(timeout=60)
        worker_pid = pool.submit(os.getpid).result(timeout=60)
        clients = [c for c in manager.status()["clients"] if c["pid"] == worker_pid]
    assert len(clients) == 1


def test_a_proxy_pickles_without_the_process_authkey_machinery(
    custom_key_manager: proxyshare.ShareManager,
) -> None:
    counter = custom_key_manager.counter("c")
    again = pickle.loads(pickle.dumps(counter))
    assert again == counter and again.increment() == 1
    assert b"custom key" not in repr(again).encode()


@pytest.fixture
def tcp_server() -> Iterator[tuple[tuple[str, int], bytes]]:
    """A server started the way `proxyshare serve` starts one: get_server() in a process."""
    address, key = ("127.0.0.1", free_port()), b"tcp server key"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=workers.server_process, args=(address, key, ready), daemon=True)
    proc.start()
    try:
        assert ready.wait(30)
        wait_until(lambda: _can_connect(address, key), timeout=10)
        yield address, key
    finally:
        close_all_channels()
        kill_hard(proc)


def _can_connect(address: tuple[str, int], key: bytes) -> bool:
    try:
        proxyshare.connect(address, authkey=key)
    except proxyshare.ServerUnavailableError:
        return False
    return True


@pytest.mark.parametrize("form", ["string", "tuple"])
def test_connect_to_a_tcp_server_and_use_it_from_pool_workers(
    tcp_server: tuple[tuple[str, int], bytes], form: str
) -> None:
    (host, port), key = tcp_server
    client = proxyshare.connect(f"{host}:{port}" if form == "string" else (host, port), authkey=key)
    counter = client.counter("remote")
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [
            pool.submit(workers.many_proxies_one_connection, [counter] * 500) for _ in range(2)
        ]
        assert [f.result(timeout=60) for f in futures] == [500, 500]
    assert counter.get() == 1000


def test_connect_to_a_unix_socket_address(manager: proxyshare.ShareManager) -> None:
    client = proxyshare.connect(f"unix:{manager.address}", authkey=bytes(manager._authkey))
    assert client.counter("u").increment() == 1


def test_get_server_builds_a_proxyshare_server() -> None:
    server = proxyshare.ShareManager(address=("127.0.0.1", 0), authkey=b"k").get_server()
    try:
        assert isinstance(server, ShareServer)
    finally:
        server.listener.close()


def test_start_uses_the_proxyshare_server_class(manager: proxyshare.ShareManager) -> None:
    assert "operations" in manager.status()["server"]  # only ShareServer answers STATUS


def test_wrong_authkey_raises_authentication_error(manager: proxyshare.ShareManager) -> None:
    with pytest.raises(proxyshare.AuthenticationError, match="rejected the authkey"):
        proxyshare.connect(manager.address, authkey=b"wrong")


def test_nothing_listening_raises_server_unavailable_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(proxyshare.ServerUnavailableError, match="no proxyshare server"):
        proxyshare.connect(("127.0.0.1", free_port()), authkey=b"k")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("address", ["nonsense", "host:port", ("h",), "unix:"])
def test_a_bad_address_says_which_forms_are_accepted(address: object) -> None:
    with pytest.raises(ValueError, match="host:port"):
        proxyshare.connect(address, authkey=b"k")


def test_registered_user_types_still_work_through_the_generic_path() -> None:
    with workers.BoxManager() as mgr:
        box = mgr.Box()  # type: ignore[attr-defined]
        box.append(1)
        assert box._getvalue() == [1]
        assert mgr.counter("c").increment() == 1


def test_start_runs_the_initializer_in_the_server_process(tmp_path: Path) -> None:
    """As BaseManager.start(initializer, initargs), with our options sent beside it."""
    ran = tmp_path / "pid"
    mgr = proxyshare.ShareManager()
    mgr.start(write_pid, (str(ran),))
    try:
        assert ran.read_text() == str(mgr._process.pid)
        assert mgr.counter("c").increment() == 1
    finally:
        mgr.shutdown()


def test_start_refuses_an_initializer_that_is_not_callable() -> None:
    mgr = proxyshare.ShareManager()
    with pytest.raises(TypeError, match="initializer must be a callable, not 5"):
        mgr.start(initializer=5)
