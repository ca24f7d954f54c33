"""proxyshare: named counters, locks and dicts shared by any process pool.

    import proxyshare

    with proxyshare.ShareManager() as mgr:            # server in its own process
        hits = mgr.counter("hits")                    # get-or-create by name
        with proxyshare.ProcessPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(work, hits)               # proxies are plain arguments

For asyncio code, ``from proxyshare import aio``: the same resources, every
method a coroutine (see ``proxyshare.aio``).

``import proxyshare`` stays cheap: the manager, pool, asyncio and benchmark
modules load on first use, and unpickling a proxy in a worker imports only
the small client modules (no pydantic, no rich).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from proxyshare._errors import (
    AuthenticationError,
    NotOwnerError,
    PipelineError,
    ProxyShareError,
    RemoteTraceback,
    ResourceKindError,
    ResourceNotFoundError,
    ServerUnavailableError,
    UnshareableArgumentError,
)

__version__ = "0.1.0"

__all__ = [
    "Adder",
    "AuthenticationError",
    "Barrier",
    "Counter",
    "Dict",
    "Event",
    "Lock",
    "NotOwnerError",
    "Pipeline",
    "PipelineError",
    "ProcessPoolExecutor",
    "ProxyShareError",
    "Queue",
    "RemoteTraceback",
    "ResourceKindError",
    "ResourceNotFoundError",
    "Semaphore",
    "ServerUnavailableError",
    "ShareManager",
    "UnshareableArgumentError",
    "__version__",
    "aio",
    "connect",
]

# Public name -> private module that defines it, imported on first access.
_LAZY = {
    "ShareManager": "proxyshare._manager",
    "connect": "proxyshare._manager",
    "Pipeline": "proxyshare._pipeline",
    "ProcessPoolExecutor": "proxyshare._pool",
    "Counter": "proxyshare._proxies",
    "Lock": "proxyshare._proxies",
    "Dict": "proxyshare._proxies",
    "Queue": "proxyshare._proxies",
    "Semaphore": "proxyshare._proxies",
    "Event": "proxyshare._proxies",
    "Barrier": "proxyshare._proxies",
    "Adder": "proxyshare._backends.shm.adder",
}

if TYPE_CHECKING:
    from proxyshare import aio
    from proxyshare._backends.shm.adder import Adder
    from proxyshare._manager import ShareManager, connect
    from proxyshare._pipeline import Pipeline
    from proxyshare._pool import ProcessPoolExecutor
    from proxyshare._proxies import Barrier, Counter, Dict, Event, Lock, Queue, Semaphore


def __getattr__(name: str) -> Any:
    if name == "aio":  # the asyncio client, a subpackage: loaded on first use
        return importlib.import_module("proxyshare.aio")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'proxyshare' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
