"""The checking ``ProcessPoolExecutor``: the stdlib one, minus its silent failures.

    pool.submit(fn, *args, **kwargs)
      ├─ check_call(): can every argument reach a worker?
      │     no  ─▶ UnshareableArgumentError here, naming the argument and what to use
      ├─ the stdlib submit(): call queue ─▶ worker ─▶ result queue ─▶ future
      └─ the future is watched:
            failed, and nobody called result()/exception()
                ─▶ logged (logger "proxyshare", ERROR, remote traceback included)
                   at executor shutdown or when the future is collected, once
            a worker died (BrokenProcessPool)
                ─▶ the error names this future's task

Everything else — constructor, ``map``, ``shutdown``, context manager — is the
stdlib's, so adopting it is one import line.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import logging
import multiprocessing
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import process as _stdlib_process
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from proxyshare._check import (
    check_call,
    check_initializer,
    check_map_function,
    check_map_item,
    short_repr,
)

__all__ = ["ProcessPoolExecutor"]

logger = logging.getLogger("proxyshare")

T = TypeVar("T")

# The stdlib's map() sends chunks as partial(_process_chunk, fn): those submits
# carry elements that map() below has already checked one by one.
_PROCESS_CHUNK: Any = getattr(_stdlib_process, "_process_chunk", None)
_TASK_REPR_LIMIT = 300
# Reentrant: a collection inside the locked block may run another future's __del__.
_report_lock = threading.RLock()


class _Group:
    """The futures of one map() call: one failure seen or reported stands for all."""

    __slots__ = ("reported", "seen")

    def __init__(self) -> None:
        self.seen = False
        self.reported = False


class _WatchedFuture(cf.Future):  # type: ignore[type-arg]
    """A stdlib future that knows whether its exception was looked at.

    ``submit`` switches the future the stdlib made to this class (it adds no
    state of its own to the layout) rather than re-implementing ``submit``.
    Defaults live on the class so that a submit sets as little as possible.
    """

    _ps_log = True  # False when the executor was made with log_unretrieved=False
    _ps_group: _Group | None = None  # the map() call this future belongs to
    _ps_call: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None  # until done
    _ps_failure: BaseException | None = None  # the task's exception, once done
    _ps_task = ""  # "module.fn(args...)", once failed
    _ps_seen = False
    _ps_reported = False
    _ps_broken: BaseException | None = None

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        except BaseException as exc:
            if not self.done() or self.cancelled() or exc is not cf.Future.exception(self, 0):
                raise  # a timeout, a cancellation, an interrupt: the outcome was not seen
            self._ps_mark_seen()
            delivered = self._ps_deliver(exc)
            if delivered is exc:
                raise
            raise delivered from exc

    def exception(self, timeout: float | None = None) -> BaseException | None:
        exc = super().exception(timeout)
        self._ps_mark_seen()
        return None if exc is None else self._ps_deliver(exc)

    def _ps_mark_seen(self) -> None:
        self._ps_seen = True
        if self._ps_group is not None:
            self._ps_group.seen = True

    def _ps_deliver(self, exc: BaseException) -> BaseException:
        """``exc``, or for a dead worker a ``BrokenProcessPool`` naming this task."""
        if not isinstance(exc, BrokenProcessPool):
            return exc
        if self._ps_broken is None:
            # The waiter may wake before _on_done ran: describe from the call then.
            call = self._ps_call
            task = self._ps_task or (_describe(*call) if call is not None else self._ps_task)
            broken = BrokenProcessPool(
                f"{exc} This future's task: {task or '<unknown>'}. (Every task pending when "
                "a worker dies fails with this error; the pool cannot tell whose worker died.)"
            )
            broken.__cause__ = exc
            self._ps_broken = broken
        return self._ps_broken

    def __del__(self) -> None:
        if self._ps_failure is not None:
            _report(self, "before its future was garbage-collected")


class _FailedFutures:
    """The failed futures of one executor, weakly held, for the report at shutdown."""

    __slots__ = ("_futures", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: weakref.WeakSet[_WatchedFuture] = weakref.WeakSet()

    def add(self, future: _WatchedFuture) -> None:
        with self._lock:
            self._futures.add(future)

    def drain(self) -> list[_WatchedFuture]:
        with self._lock:
            futures = list(self._futures)
            self._futures.clear()
        return futures


def _on_done(failed: _FailedFutures, future: _WatchedFuture) -> None:
    """Runs once the task finishes: describe it if it failed, drop its arguments."""
    try:
        exc = cf.Future.exception(future, 0)
        if exc is None:
            return
        call = future._ps_call
        if call is not None:
            future._ps_task = _describe(*call)
        future._ps_failure = exc
        if future._ps_log:
            failed.add(future)
    except cf.CancelledError:
        return
    finally:
        future._ps_call = None  # after _ps_task is set: see _ps_deliver


def _report(future: _WatchedFuture, when: str) -> None:
    """Log the failure unless somebody saw it; once per future, once per map() call."""
    exc = future._ps_failure
    if exc is None or not future._ps_log:
        return
    group = future._ps_group
    with _report_lock:
        if future._ps_seen or future._ps_reported:
            return
        if group is not None:
            if group.seen or group.reported:
                return
            group.reported = True
        future._ps_reported = True
    logger.error(
        "task %s raised %s: %s, and nobody retrieved it (no result() or exception() call %s)%s. "
        "Call result() on every future, or pass log_unretrieved=False to silence this.",
        future._ps_task or "<unknown>",
        type(exc).__name__,
        exc,
        when,
        "; later failures of the same map() call are not logged" if group is not None else "",
        exc_info=exc,
    )


def _function_name(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        return short_repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if isinstance(module, str) and module != "builtins" else name


def _describe(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``module.fn(arg, ..., key=value)``, each repr and the whole bounded."""
    if isinstance(fn, functools.partial) and fn.func is _PROCESS_CHUNK and fn.args and args:
        chunk = args[0]
        first = _describe(fn.args[0], tuple(chunk[0]), {}) if chunk else "(empty)"
        return f"map() chunk of {len(chunk)} element(s), the first: {first}"
    parts = [short_repr(value) for value in args]
    parts += [f"{key}={short_repr(value)}" for key, value in kwargs.items()]
    text = f"{_function_name(fn)}({', '.join(parts)})"
    if len(text) > _TASK_REPR_LIMIT:
        text = text[: _TASK_REPR_LIMIT - 4] + "...)"
    return text


def _default_start_method(mp_context: BaseContext | None, kwargs: dict[str, Any]) -> str:
    if mp_context is not None:
        return str(mp_context.get_start_method())
    if kwargs.get("max_tasks_per_child") is not None:
        return "spawn"  # what the stdlib picks when workers are replaced
    return str(multiprocessing.get_context().get_start_method())


class ProcessPoolExecutor(cf.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor`` that refuses what cannot be shared.

    >>> with proxyshare.ProcessPoolExecutor(4) as pool:      # doctest: +SKIP
    ...     pool.submit(work, multiprocessing.Value("i"))
    UnshareableArgumentError: args[0] is a multiprocessing.Value (...) ... use mgr.counter(name)

    Same arguments as the stdlib class, plus two switches:

    - ``log_unretrieved`` (default true): the exception of a future nobody
      looked at is logged to the ``proxyshare`` logger when the executor
      shuts down or the future is collected.
    - ``check_arguments`` (default true): the check before sending.  It costs
      about a microsecond for numbers, strings and proxies; arguments it cannot
      vouch for by type (objects, containers over a thousand items) are
      pickled once more, so turn it off for hot paths with huge arguments.

    ``initargs`` may hold ``multiprocessing`` primitives (they reach the
    workers by inheritance) and proxies; thread-level objects are refused
    there too.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        log_unretrieved: bool = True,
        check_arguments: bool = True,
        **kwargs: Any,
    ) -> None:
        if check_arguments:
            check_initializer(
                initializer,
                tuple(initargs) if isinstance(initargs, (tuple, list)) else (initargs,),
                _default_start_method(mp_context, kwargs),
            )
        super().__init__(max_workers, mp_context, initializer, initargs, **kwargs)
        self._ps_log = log_unretrieved
        self._ps_check = check_arguments
        self._ps_failed = _FailedFutures()
        self._ps_on_done = functools.partial(_on_done, self._ps_failed)
        self._ps_map_groups: weakref.WeakKeyDictionary[Any, _Group] = weakref.WeakKeyDictionary()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> cf.Future[T]:
        """Check the arguments, then submit as the stdlib does."""
        group = None
        if type(fn) is functools.partial and fn.func is _PROCESS_CHUNK:
            group = self._ps_map_groups.get(fn)
            if group is None:
                group = self._ps_map_groups.setdefault(fn, _Group())
        elif self._ps_check:
            check_call(fn, args, kwargs)
        future = super().submit(fn, *args, **kwargs)
        future.__class__ = _WatchedFuture
        watched: _WatchedFuture = future  # type: ignore[assignment]
        watched._ps_call = (fn, args, kwargs)
        if group is not None:
            watched._ps_group = group
        if not self._ps_log:
            watched._ps_log = False
        future.add_done_callback(self._ps_on_done)
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> Iterator[T]:
        """The stdlib ``map``, with each element checked as it is taken."""
        if self._ps_check:
            check_map_function(fn)
            iterables = tuple(_checked(iterable, index) for index, iterable in enumerate(iterables))
        return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut down as the stdlib does, then log failures nobody retrieved."""
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        for future in self._ps_failed.drain():
            _report(future, "before the executor shut down")


def _checked(iterable: Iterable[Any], index: int) -> Iterator[Any]:
    for position, value in enumerate(iterable):
        check_map_item(value, index, position)
        yield value
