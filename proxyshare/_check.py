"""Find task arguments that cannot reach a worker process, before anything is sent.

Why: the stdlib executor pickles a task in a background thread, so a
``multiprocessing.Value`` or a ``threading.Lock`` fails *inside the future* —
which nobody may ever look at.  Checking at the call site raises at once, with
the argument's path (``args[0]['k'][2]``) and the proxyshare resource to use.

Cost model (the check runs on every ``submit``)::

    walk the argument tree ──▶ numbers, strings, proxies, small containers: done,
        │                      nothing pickled (the common case, ~1 µs)
        │                      a known unshareable type: raise (no pickling)
        ▼
    other values (objects, functions not yet seen, huge or deep containers)
        └─▶ pickled together, once, into a sink that keeps nothing
            (protocol 5, out-of-band buffers dropped: a big array is not copied)
                └─▶ only if that fails: re-try piece by piece to find the
                    culprit and its path, then raise

Two modes: ``check_call`` for what ``submit``/``map`` send through the call
queue (pickled outside process start-up, so ``multiprocessing`` primitives
fail); ``check_initializer`` for ``initargs``, which reach the workers *by
inheritance* (fork) or while they start (spawn/forkserver), where those
primitives are exactly right and only thread-level objects are wrong.
"""

from __future__ import annotations

import copyreg
import functools
import io
import pickle
import queue
import socket
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from multiprocessing import managers
from multiprocessing.heap import BufferWrapper
from multiprocessing.reduction import ForkingPickler
from typing import Any, NamedTuple

from proxyshare._errors import UnshareableArgumentError
from proxyshare._proxies import _Proxy

__all__ = [
    "check_call",
    "check_initializer",
    "check_map_function",
    "check_map_item",
    "format_path",
    "short_repr",
]

# How far the cheap walk goes before it hands a subtree to pickle (C speed).
MAX_DEPTH = 8
NODE_BUDGET = 1_000
# How far the search for a culprit goes once pickling has failed.
LOCATE_DEPTH = 32

_ATOMS: frozenset[type] = frozenset(
    {int, float, complex, bool, str, bytes, type(None), range, slice, type(Ellipsis)}
)
_CONTAINERS: frozenset[type] = frozenset({list, tuple, dict, set, frozenset})
# Shareable by construction: they pickle as an address (plus key) and a name.
_PASSES: tuple[type, ...] = (_Proxy, managers.BaseProxy)

_RESOURCE_HINT = " (mgr = proxyshare.ShareManager(); its proxies are plain submit() arguments)"


class Verdict(NamedTuple):
    """What a known type is and what to use instead."""

    label: str
    advice: str
    # "process": a multiprocessing primitive, fine in initargs (inheritance), not in submit();
    # "thread": never shared between processes (each would get a copy);
    # "local": bound to this process (a file, a socket): fails to pickle, a fork copies it.
    scope: str


def _mp_verdicts() -> dict[type, Verdict]:
    import multiprocessing.queues as mpq
    import multiprocessing.sharedctypes as mps

    table: dict[type, Verdict] = {}

    def mp(label: str, use: str) -> Verdict:
        return Verdict(
            label,
            f"use {use} instead{_RESOURCE_HINT}, or give it to every worker once "
            "through ProcessPoolExecutor(initializer=..., initargs=(...))",
            "process",
        )

    value = mp("multiprocessing.Value", "mgr.counter(name) (or a key of mgr.dict(name))")
    array = mp("multiprocessing.Array", "mgr.dict(name) (one key per element)")
    table[mps.Synchronized] = value
    table[mps.SynchronizedArray] = array
    table[mps.SynchronizedString] = array
    for cls in (mpq.Queue, mpq.JoinableQueue, mpq.SimpleQueue):
        table[cls] = mp(f"multiprocessing.{cls.__name__}", "mgr.queue(name)")
    try:  # absent where the platform has no working sem_open
        import multiprocessing.synchronize as mpsync
    except ImportError:
        return table
    table[mpsync.Lock] = mp("multiprocessing.Lock", "mgr.lock(name)")
    table[mpsync.RLock] = mp("multiprocessing.RLock", "mgr.lock(name)")
    table[mpsync.Semaphore] = mp("multiprocessing.Semaphore", "mgr.semaphore(name, value=n)")
    table[mpsync.BoundedSemaphore] = mp(
        "multiprocessing.BoundedSemaphore", "mgr.semaphore(name, value=n)"
    )
    table[mpsync.Condition] = mp(
        "multiprocessing.Condition", "mgr.lock(name) to guard and mgr.event(name) to signal"
    )
    table[mpsync.Event] = mp("multiprocessing.Event", "mgr.event(name)")
    table[mpsync.Barrier] = mp("multiprocessing.Barrier", "mgr.barrier(name, parties)")
    return table


def _thread_verdicts() -> dict[type, Verdict]:
    def th(label: str, use: str) -> Verdict:
        return Verdict(
            label,
            f"it only works between threads of one process; use {use} instead{_RESOURCE_HINT}",
            "thread",
        )

    lock = th("threading.Lock", "mgr.lock(name)")
    return {
        type(threading.Lock()): lock,
        type(threading.RLock()): th("threading.RLock", "mgr.lock(name)"),
        threading._RLock: th("threading.RLock", "mgr.lock(name)"),  # pure-Python fallback
        threading.Condition: th(
            "threading.Condition", "mgr.lock(name) to guard and mgr.event(name) to signal"
        ),
        threading.Semaphore: th("threading.Semaphore", "mgr.semaphore(name, value=n)"),
        threading.BoundedSemaphore: th(
            "threading.BoundedSemaphore", "mgr.semaphore(name, value=n)"
        ),
        threading.Event: th("threading.Event", "mgr.event(name)"),
        threading.Barrier: th("threading.Barrier", "mgr.barrier(name, parties)"),
        queue.Queue: th("queue.Queue", "mgr.queue(name)"),
        queue.SimpleQueue: th("queue.SimpleQueue", "mgr.queue(name)"),
    }


def _other_verdicts() -> dict[type, Verdict]:
    gen = Verdict(
        "generator",
        "pass list(...) of its items, or what the task needs to create it itself",
        "local",
    )
    return {
        socket.socket: Verdict("socket", "pass the address and connect inside the task", "local"),
        types.GeneratorType: gen,
        types.AsyncGeneratorType: Verdict("async generator", gen.advice, "local"),
        types.CoroutineType: Verdict(
            "coroutine", "pass the coroutine function and its arguments instead", "local"
        ),
    }


_VERDICTS: dict[type, Verdict] = {**_mp_verdicts(), **_thread_verdicts(), **_other_verdicts()}
_OPEN_FILE = Verdict("open file", "pass the path and open the file inside the task", "local")
_SHARED_CTYPES = Verdict(
    "multiprocessing.RawValue/RawArray",
    f"use mgr.counter(name) or mgr.dict(name) instead{_RESOURCE_HINT}, or give it to every "
    "worker once through ProcessPoolExecutor(initializer=..., initargs=(...))",
    "process",
)
_CTYPES_MODULES = frozenset({"ctypes", "multiprocessing.sharedctypes"})
_LOCAL_FUNCTION = (
    "workers import functions by name: define it at module level (`def name(...):` "
    "in an importable module)"
)


def _verdict(obj: Any) -> Verdict | None:
    """The known verdict for ``obj``'s type (or a base of it), if any."""
    for klass in type(obj).__mro__:
        verdict = _VERDICTS.get(klass)
        if verdict is not None:
            return verdict
    if isinstance(obj, io.IOBase):
        return _OPEN_FILE
    # ctypes objects living in multiprocessing's shared heap (RawValue, RawArray)
    if type(obj).__module__ in _CTYPES_MODULES and isinstance(
        getattr(obj, "_wrapper", None), BufferWrapper
    ):
        return _SHARED_CTYPES
    return None


# -- paths ----------------------------------------------------------------------------
# A path is a linked tuple (parent, kind, key), built cheaply during the walk and
# formatted only when there is an error to report.

Path = tuple[Any, str, Any]


def _root(name: str) -> Path:
    return (None, "root", name)


def format_path(path: Path) -> str:
    """``args[0]['k'][2].attr`` for the linked path ``path``."""
    parts: list[str] = []
    node: Path | None = path
    while node is not None:
        parent, kind, key = node
        if kind == "root":
            parts.append(key)
        elif kind == "item":
            parts.append(f"[{short_repr(key)}]")
        elif kind == "attr":
            parts.append(f".{key}")
        elif kind == "key":
            parts.append(f" (the key {short_repr(key)})")
        else:  # "member": an element of a set
            parts.append(f" (a member of the set: {short_repr(key)})")
        node = parent
    return "".join(reversed(parts))


def short_repr(value: Any, limit: int = 40) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__} object (repr failed: {type(exc).__name__})>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the probe: "would pickling this succeed?" without keeping the bytes -------------


class _Sink:
    """A file that forgets everything written to it."""

    __slots__ = ()

    def write(self, data: Any) -> int:
        return len(data)


_SINK = _Sink()


def _drop_buffer(buffer: pickle.PickleBuffer) -> bool:
    return False  # out of band: never copied into the stream


def _refuse(obj: Any) -> Any:
    raise TypeError(f"cannot pickle {type(obj).__name__!r} object")


def _stand_in(obj: Any) -> tuple[Any, ...]:
    """Reduce ``obj`` to nothing: it is known to be fine, and pickling it for real
    would have side effects (e.g. sharing a file descriptor)."""
    return (type(None), ())


def _connection_type() -> type | None:
    try:
        from multiprocessing.connection import Connection
    except ImportError:
        return None
    return Connection


# What the real send would do with a socket or a Connection is to register its
# file descriptor with a background sharing thread: never do that for a probe.
_SEND_OVERRIDES: dict[type, Callable[[Any], Any]] = {socket.socket: _refuse}
_INHERIT_OVERRIDES: dict[type, Callable[[Any], Any]] = {socket.socket: _stand_in}
_connection = _connection_type()
if _connection is not None:
    _SEND_OVERRIDES[_connection] = _stand_in
    _INHERIT_OVERRIDES[_connection] = _stand_in
# While a worker starts, multiprocessing primitives pickle fine: stand in for them.
for _klass, _v in _VERDICTS.items():
    if _v.scope == "process":
        _INHERIT_OVERRIDES[_klass] = _stand_in


_tables: dict[bool, tuple[tuple[int, int], dict[Any, Any]]] = {}


def _dispatch_table(inherit: bool) -> dict[Any, Any]:
    """copyreg's reducers, multiprocessing's, and our overrides; rebuilt on registration."""
    extra: dict[Any, Any] = getattr(ForkingPickler, "_extra_reducers", {})
    stamp = (len(copyreg.dispatch_table), len(extra))
    cached = _tables.get(inherit)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    overrides = _INHERIT_OVERRIDES if inherit else _SEND_OVERRIDES
    table = {**copyreg.dispatch_table, **extra, **overrides}
    _tables[inherit] = (stamp, table)
    return table


_local = threading.local()


def _probe(obj: Any, inherit: bool) -> Exception | None:
    """None if ``obj`` pickles as the executor would pickle it, else the error raised."""
    # One pickler per thread and mode, reused: making one costs more than a small dump.
    picklers: dict[bool, pickle.Pickler] | None = getattr(_local, "picklers", None)
    if picklers is None:
        picklers = _local.picklers = {}
    pickler = picklers.get(inherit)
    if pickler is None:
        pickler = picklers[inherit] = pickle.Pickler(_SINK, 5, buffer_callback=_drop_buffer)
    pickler.dispatch_table = _dispatch_table(inherit)
    try:
        pickler.dump(obj)
    except Exception as exc:  # the caller turns it into UnshareableArgumentError
        return exc
    finally:
        pickler.clear_memo()  # the memo would keep every probed object alive
    return None


# -- the walk -------------------------------------------------------------------------

# Functions already pickled successfully: by reference, so they are module-level
# and live as long as their module anyway.  Bounded in case functions are made
# on the fly.
_good_functions: set[Any] = set()  # functions and classes
_GOOD_FUNCTIONS_MAX = 4096
# Pickled by reference (module + name): once one pickles, it always will.
_FUNCTION_TYPES = (types.FunctionType, types.BuiltinFunctionType, type)


class _Walk:
    """One check of one call: the cheap walk, then one probe of the leftovers."""

    __slots__ = ("budget", "inherit", "pending", "seen")

    def __init__(self, inherit: bool = False) -> None:
        self.budget = NODE_BUDGET
        self.inherit = inherit
        self.pending: list[tuple[Path, Any]] = []
        self.seen: set[int] = set()  # containers already walked (shared or cyclic)

    def visit(self, obj: Any, path: Path, depth: int = 0) -> None:
        kind = type(obj)
        if kind in _ATOMS:
            return
        if kind in _CONTAINERS:
            if id(obj) in self.seen:
                return
            self.seen.add(id(obj))
            size = len(obj)
            if depth >= MAX_DEPTH or size > self.budget:
                self.pending.append((path, obj))  # let pickle walk it, at C speed
                return
            self.budget -= size
            if kind is dict:
                for key, value in obj.items():
                    if type(key) not in _ATOMS:
                        self.visit(key, (path, "key", key), depth + 1)
                    if type(value) not in _ATOMS:
                        self.visit(value, (path, "item", key), depth + 1)
            elif kind is list or kind is tuple:
                for index, value in enumerate(obj):
                    if type(value) not in _ATOMS:
                        self.visit(value, (path, "item", index), depth + 1)
            else:
                for value in obj:
                    if type(value) not in _ATOMS:
                        self.visit(value, (path, "member", value), depth + 1)
            return
        if isinstance(obj, _PASSES):
            if isinstance(obj, managers.BaseProxy) and _loses_its_authkey(obj):
                raise _stdlib_proxy_error(path, obj)
            return
        verdict = _verdict(obj)
        if verdict is not None:
            if not self.inherit or verdict.scope == "thread":
                raise _known_error(path, obj, verdict)
            if verdict.scope == "process":
                return  # what initargs are for
        if kind in _FUNCTION_TYPES and obj in _good_functions:
            return
        self.pending.append((path, obj))

    def finish(self) -> None:
        """Probe everything the walk could not vouch for; raise for the first culprit."""
        if not self.pending:
            return
        inherit = self.inherit
        if _probe([obj for _path, obj in self.pending], inherit) is None:
            for _path, obj in self.pending:
                # Only what pickles by reference alone may be remembered: a bound
                # builtin method (``box.append``) pickles its object too.
                if type(obj) in _FUNCTION_TYPES and _by_reference(obj):
                    if len(_good_functions) >= _GOOD_FUNCTIONS_MAX:
                        _good_functions.clear()
                    _good_functions.add(obj)
            return
        for path, obj in self.pending:
            error = _probe(obj, inherit)
            if error is not None:
                raise _locate(path, obj, error, inherit, set())
        # Each piece pickles alone but not together (e.g. one reducer with state):
        # report the first piece, with the combined error.
        path, obj = self.pending[0]
        raise _generic_error(path, obj, _probe([o for _p, o in self.pending], inherit))


def _children(obj: Any) -> Iterator[tuple[str, Any, Any]]:
    """(kind, key, child) for the parts pickle would descend into."""
    if isinstance(obj, dict):
        for key, value in list(obj.items()):
            yield "key", key, key
            yield "item", key, value
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield "item", index, value
    elif isinstance(obj, (set, frozenset)):
        for value in list(obj):
            yield "member", value, value
    elif isinstance(obj, types.MethodType):
        yield "attr", "__self__", obj.__self__
    elif isinstance(obj, functools.partial):
        yield "attr", "func", obj.func
        yield "attr", "args", obj.args
        yield "attr", "keywords", obj.keywords
    elif isinstance(obj, (type, types.FunctionType, types.ModuleType)):
        return  # pickled by reference
    else:
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            for name, value in list(attributes.items()):
                yield "attr", name, value
        for klass in type(obj).__mro__:
            slots = klass.__dict__.get("__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name in ("__dict__", "__weakref__"):
                    continue
                try:
                    value = getattr(obj, name)
                except AttributeError:
                    continue  # an empty slot pickles as absent
                yield "attr", name, value


def _locate(
    path: Path,
    obj: Any,
    error: Exception,
    inherit: bool,
    seen: set[int],
    depth: int = 0,
) -> UnshareableArgumentError:
    """The error for the deepest part of ``obj`` that fails to pickle on its own."""
    verdict = _verdict(obj)
    if verdict is not None and not (inherit and verdict.scope == "process"):
        return _known_error(path, obj, verdict)
    seen.add(id(obj))
    if depth < LOCATE_DEPTH:
        for kind, key, child in _children(obj):
            if type(child) in _ATOMS or isinstance(child, _PASSES) or id(child) in seen:
                continue
            child_error = _probe(child, inherit)
            if child_error is not None:
                child_path = (path, kind, key)
                return _locate(child_path, child, child_error, inherit, seen, depth + 1)
    return _generic_error(path, obj, error)


def _type_name(obj: Any) -> str:
    kind = type(obj)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _loses_its_authkey(proxy: managers.BaseProxy) -> bool:
    """The stdlib drops a proxy's authkey when it is pickled (unless spawning), so
    a worker answers the manager's challenge with its own process key: one that
    differs means the worker dies with "digest sent was rejected"."""
    import multiprocessing

    key = getattr(proxy, "_authkey", None)
    return key is not None and bytes(key) != bytes(multiprocessing.current_process().authkey)


def _stdlib_proxy_error(path: Path, obj: Any) -> UnshareableArgumentError:
    return UnshareableArgumentError(
        f"{format_path(path)} is a stdlib manager proxy ({_type_name(obj)}) whose manager uses "
        "a custom authkey: pickled into a worker it loses that key and the worker fails with "
        "'digest sent was rejected'. Use a proxyshare resource (mgr.counter/lock/dict/...), "
        "whose proxies carry their key, or a manager with the default authkey."
    )


def _known_error(path: Path, obj: Any, verdict: Verdict) -> UnshareableArgumentError:
    return UnshareableArgumentError(
        f"{format_path(path)} is {_article(verdict.label)} {verdict.label} ({_type_name(obj)}), "
        "which cannot be sent "
        f"to a worker process: {verdict.advice}."
    )


def _generic_error(path: Path, obj: Any, error: Exception | None) -> UnshareableArgumentError:
    cause = f"{type(error).__name__}: {error}" if error is not None else "unknown error"
    if isinstance(obj, types.FunctionType) and "<" in obj.__qualname__:
        what = "a lambda" if obj.__name__ == "<lambda>" else "a function defined inside another"
        exc = UnshareableArgumentError(
            f"{format_path(path)} is {what} ({obj.__qualname__}), which cannot be sent to a "
            f"worker process: {_LOCAL_FUNCTION}."
        )
    else:
        exc = UnshareableArgumentError(
            f"{format_path(path)} ({_type_name(obj)}) cannot be sent to a worker process: "
            f"pickling it failed ({cause}). Pass plain data (numbers, strings, lists, dicts), "
            "proxyshare proxies, or make the object picklable."
        )
    exc.__cause__ = error
    return exc


# -- entry points ---------------------------------------------------------------------


def check_call(fn: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Raise ``UnshareableArgumentError`` if ``fn(*args, **kwargs)`` cannot be sent."""
    walk = _Walk()
    if type(fn) not in _FUNCTION_TYPES or fn not in _good_functions:
        walk.visit(fn, _root("fn"))
    for index, value in enumerate(args):
        if type(value) not in _ATOMS:
            walk.visit(value, _root(f"args[{index}]"))
    for name, value in kwargs.items():
        if type(value) not in _ATOMS:
            walk.visit(value, _root(f"kwargs[{name!r}]"))
    if walk.pending:
        walk.finish()


def check_map_function(fn: Any) -> None:
    """Check the function of a ``map()`` call, once."""
    walk = _Walk()
    walk.visit(fn, _root("fn"))
    walk.finish()


def check_map_item(value: Any, iterable: int, position: int) -> None:
    """Check element ``position`` of the ``iterable``-th iterable of a ``map()`` call."""
    if type(value) in _ATOMS:
        return
    walk = _Walk()
    walk.visit(value, _root(f"iterables[{iterable}][{position}]"))
    walk.finish()


def check_initializer(initializer: Any, initargs: tuple[Any, ...], start_method: str) -> None:
    """Raise if ``initializer(*initargs)`` cannot reach workers started by ``start_method``.

    ``multiprocessing`` primitives are fine here (that is what initargs are for);
    thread-level objects never are (each worker would get its own copy).  Under
    fork nothing is pickled, so only the walk runs.
    """
    walk = _Walk(inherit=True)
    if initializer is not None:
        walk.visit(initializer, _root("initializer"))
    for index, value in enumerate(initargs):
        walk.visit(value, _root(f"initargs[{index}]"))
    if start_method == "fork":
        for path, obj in walk.pending:
            _search_thread_objects(path, obj, set(), 0)
        return
    walk.finish()


def _search_thread_objects(path: Path, obj: Any, seen: set[int], depth: int) -> None:
    """Under fork: find thread-level objects that inheritance would silently copy."""
    verdict = _verdict(obj)
    if verdict is not None and verdict.scope == "thread":
        raise _known_error(path, obj, verdict)
    if depth >= MAX_DEPTH or id(obj) in seen or isinstance(obj, _PASSES):
        return
    seen.add(id(obj))
    for kind, key, child in _children(obj):
        if type(child) not in _ATOMS:
            _search_thread_objects((path, kind, key), child, seen, depth + 1)


def _by_reference(obj: Any) -> bool:
    owner = getattr(obj, "__self__", None)
    return owner is None or isinstance(owner, types.ModuleType)
