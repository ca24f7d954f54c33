"""Pipelines: many operations, one round trip, applied atomically in order.

    with mgr.pipeline() as p:
        p.counter("hits").increment()
        p.dict("stats").increment("calls")
    p.results            # [1, 1]: one result per queued operation, in order

Semantics (documented in the README):

* Operations are queued on the client and sent together at the end of the
  ``with`` block (or by ``execute()``).  Inside the block the proxies return
  ``None``; results come from ``execute()``/``results``.
* The server locks every resource the batch names, then applies the
  operations in order: no other client sees a state in between.
* Operations that may wait (lock acquire, queue get, ...) are refused unless
  made with ``block=False`` (``put_nowait``, ``acquire(blocking=False)``); a
  batch holding one is refused whole, before anything runs.
* The first failing operation stops the batch: earlier ones stay applied,
  later ones are not run, and ``PipelineError`` is raised with ``index``,
  the earlier ``results`` and the original error as ``__cause__``.
* Resources must exist (open them with the manager first).
* If the ``with`` body raises, nothing is sent.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar, cast

from proxyshare import _protocol as P
from proxyshare._client import ServerRef
from proxyshare._errors import PipelineError, PipelineFailure, RemoteTraceback
from proxyshare._protocol import Op
from proxyshare._proxies import Counter, Dict, Queue

__all__ = ["Batch", "Pipeline"]

R = TypeVar("R")


class _Recorder:
    """A ``Transport`` that records requests instead of sending them."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests: list[tuple[Any, ...]] = []

    def call(self, op: Op[R], name: str, /, *args: Any) -> R:
        self.requests.append((op.code, name, *args))
        # Inside the block proxies return None; results come from execute().
        return cast(R, None)

    def where(self) -> str:
        return "a pipeline"


class Batch:
    """What a pipeline records, and how its failure reads: shared by the sync
    :class:`Pipeline` and the asyncio one (``proxyshare.aio``), which differ
    only in how the batch is sent."""

    def __init__(self) -> None:
        self._recorder = _Recorder()
        self.results: list[Any] = []

    def counter(self, name: str) -> Counter:
        """A counter proxy whose calls are queued in this pipeline."""
        return Counter(self._recorder, name)

    def dict(self, name: str) -> Dict:
        """A dict proxy whose calls are queued in this pipeline."""
        return Dict(self._recorder, name)

    def queue(self, name: str) -> Queue:
        """A queue proxy whose non-blocking calls are queued in this pipeline."""
        return Queue(self._recorder, name)

    def __len__(self) -> int:
        return len(self._recorder.requests)

    def _take(self) -> list[tuple[Any, ...]]:
        """The queued requests; the pipeline is empty again."""
        requests, self._recorder.requests = self._recorder.requests, []
        if not requests:
            self.results = []
        return requests

    def _failed(self, failure: PipelineFailure) -> PipelineError:
        """The error to raise (from ``failure.error``) for a batch the server stopped."""
        self.results = list(failure.results)
        cause = failure.error
        tb = failure.__cause__
        if isinstance(tb, RemoteTraceback) and cause.__cause__ is None:
            cause.__cause__ = tb
        return PipelineError(
            f"operation {failure.index} of the pipeline failed "
            f"({type(cause).__name__}: {cause}); {len(self.results)} operation(s) "
            "before it were applied, it and the ones after it were not",
            failure.index,
            self.results,
        )


class Pipeline(Batch):
    """A batch of counter/dict/queue operations sent in one round trip."""

    def __init__(self, ref: ServerRef) -> None:
        super().__init__()
        self._ref = ref

    def execute(self) -> list[Any]:
        """Send the queued operations; return their results in order."""
        requests = self._take()
        if not requests:
            return self.results
        try:
            self.results = self._ref.call(P.PIPELINE, None, requests)
        except PipelineFailure as failure:
            raise self._failed(failure) from failure.error
        return self.results

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.execute()
        else:
            self._recorder.requests = []
