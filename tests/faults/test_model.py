"""Model-based: random Counter/Dict operation sequences, from several processes, match a model."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import proxyshare
from tests.faults import workers
from tests.faults.conftest import Figures

KEYS = st.sampled_from(["a", "b", 1, (2, "t")])
VALUES = st.one_of(
    st.integers(-10, 10), st.text(max_size=3), st.none(), st.lists(st.integers(0, 9), max_size=2)
)
WHERE = st.sampled_from(["here", "worker"])
SMALL = st.integers(-5, 5)
_ids = itertools.count()


def _model(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except Exception as exc:
        return ("error", type(exc).__name__)


def _model_dict_increment(d: dict[Any, Any], key: Any, n: int) -> int:
    current = d.get(key, 0)
    if isinstance(current, bool) or not isinstance(current, int):
        raise TypeError(key)
    d[key] = current + n
    return int(d[key])


class CounterAndDict(RuleBasedStateMachine):
    """Every rule runs the operation here or in a pool worker and on the model."""

    manager: ClassVar[proxyshare.ShareManager]
    pool: ClassVar[cf.ProcessPoolExecutor]
    steps: ClassVar[list[int]] = []

    def __init__(self) -> None:
        super().__init__()
        n = next(_ids)
        self.counter = self.manager.counter(f"counter-{n}")
        self.dict = self.manager.dict(f"dict-{n}")
        self.count = 0
        self.model: dict[Any, Any] = {}
        self.steps.append(0)

    def _real(self, where: str, proxy: Any, method: str, *args: Any) -> tuple[str, Any]:
        self.steps[-1] += 1
        if where == "here":
            return workers.apply(proxy, method, args)
        return self.pool.submit(workers.apply, proxy, method, args).result(timeout=60)

    def _check(self, real: tuple[str, Any], expected: tuple[str, Any]) -> None:
        assert real == expected, f"server said {real!r}, the model {expected!r}"

    # -- counter -----------------------------------------------------------------

    @rule(n=SMALL, where=WHERE)
    def increment(self, n: int, where: str) -> None:
        self.count += n
        self._check(self._real(where, self.counter, "increment", n), ("ok", self.count))

    @rule(n=SMALL, where=WHERE)
    def decrement(self, n: int, where: str) -> None:
        self.count -= n
        self._check(self._real(where, self.counter, "decrement", n), ("ok", self.count))

    @rule(value=st.integers(-100, 100), where=WHERE)
    def set_counter(self, value: int, where: str) -> None:
        self.count = value
        self._check(self._real(where, self.counter, "set", value), ("ok", None))

    @rule(hit=st.booleans(), new=st.integers(-100, 100), where=WHERE)
    def counter_compare_and_set(self, hit: bool, new: int, where: str) -> None:
        expected = self.count if hit else self.count + 1
        real = self._real(where, self.counter, "compare_and_set", expected, new)
        if hit:
            self.count = new
        self._check(real, ("ok", hit))

    @rule(new=st.integers(-100, 100), where=WHERE)
    def get_and_set(self, new: int, where: str) -> None:
        old, self.count = self.count, new
        self._check(self._real(where, self.counter, "get_and_set", new), ("ok", old))

    # -- dict --------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, where=WHERE)
    def setitem(self, key: Any, value: Any, where: str) -> None:
        self.model[key] = value
        self._check(self._real(where, self.dict, "__setitem__", key, value), ("ok", None))

    @rule(key=KEYS, where=WHERE)
    def getitem(self, key: Any, where: str) -> None:
        expected = _model(lambda: self.model[key])
        self._check(self._real(where, self.dict, "__getitem__", key), expected)

    @rule(key=KEYS, where=WHERE)
    def delitem(self, key: Any, where: str) -> None:
        expected = _model(lambda: self.model.__delitem__(key))
        self._check(self._real(where, self.dict, "__delitem__", key), expected)

    @rule(key=KEYS, default=VALUES, where=WHERE)
    def pop_with_default(self, key: Any, default: Any, where: str) -> None:
        expected = _model(lambda: self.model.pop(key, default))
        self._check(self._real(where, self.dict, "pop", key, default), expected)

    @rule(key=KEYS, default=VALUES, where=WHERE)
    def setdefault(self, key: Any, default: Any, where: str) -> None:
        expected = _model(lambda: self.model.setdefault(key, default))
        self._check(self._real(where, self.dict, "setdefault", key, default), expected)

    @rule(key=KEYS, n=SMALL, where=WHERE)
    def dict_increment(self, key: Any, n: int, where: str) -> None:
        expected = _model(lambda: _model_dict_increment(self.model, key, n))
        self._check(self._real(where, self.dict, "increment", key, n), expected)

    @rule(key=KEYS, expected_value=VALUES, new=VALUES, where=WHERE)
    def dict_compare_and_set(self, key: Any, expected_value: Any, new: Any, where: str) -> None:
        hit = key in self.model and self.model[key] == expected_value
        if hit:
            self.model[key] = new
        real = self._real(where, self.dict, "compare_and_set", key, expected_value, new)
        self._check(real, ("ok", hit))

    @rule(items=st.dictionaries(KEYS, VALUES, max_size=3), where=WHERE)
    def update(self, items: dict[Any, Any], where: str) -> None:
        self.model.update(items)
        self._check(self._real(where, self.dict, "update", items), ("ok", None))

    @rule(where=WHERE)
    def clear(self, where: str) -> None:
        self.model.clear()
        self._check(self._real(where, self.dict, "clear"), ("ok", None))

    # -- several processes at once -------------------------------------------------

    @rule(n=st.integers(1, 3), key=KEYS)
    def concurrent_increments(self, n: int, key: Any) -> None:
        """Both workers and this process increment at the same time; sums are exact."""
        if not isinstance(self.model.get(key, 0), int) or isinstance(self.model.get(key), bool):
            self.model[key] = 0
            self.dict[key] = 0
        futures = [
            self.pool.submit(workers.apply, proxy, method, args)
            for _ in range(2)
            for proxy, method, args in ((self.counter, "increment", (n,)),
                                        (self.dict, "increment", (key, n)))
        ]  # fmt: skip
        self.counter.increment(n)
        self.dict.increment(key, n)
        assert all(f.result(timeout=60)[0] == "ok" for f in futures)
        self.count += 3 * n
        self.model[key] = self.model.get(key, 0) + 3 * n
        self.steps[-1] += 6

    @invariant()
    def same_as_model(self) -> None:
        assert self.counter.get() == self.count
        assert self.dict.snapshot() == self.model
        assert len(self.dict) == len(self.model)
        assert sorted(map(repr, self.dict)) == sorted(map(repr, self.model))

    def teardown(self) -> None:
        self.manager.delete(self.counter.name)
        self.manager.delete(self.dict.name)


@pytest.mark.timeout(120)
def test_random_counter_and_dict_operations_from_3_processes_never_diverge_from_a_model(
    manager: proxyshare.ShareManager, figures: Figures
) -> None:
    ctx = multiprocessing.get_context("fork")
    with cf.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        CounterAndDict.manager, CounterAndDict.pool = manager, pool
        CounterAndDict.steps = []
        run_state_machine_as_test(
            CounterAndDict,
            settings=settings(
                max_examples=80, stateful_step_count=30, deadline=None, database=None
            ),
        )
    ops = sum(CounterAndDict.steps)
    figures.record(
        "hypothesis state machine", f"{len(CounterAndDict.steps)} runs, {ops} ops: 0 diverged"
    )
    assert manager.names() == {}
