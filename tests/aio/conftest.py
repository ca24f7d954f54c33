"""Fixtures for the asyncio client: each backend, with its sync twin for cross-checks."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import running_manager


@dataclass
class Target:
    """A backend as the asyncio client reaches it, and the sync manager of the same data."""

    name: str  # "served" or "redis"
    connect: Callable[[], Any]  # -> what aio.connect() returns (await it, or async with)
    sync: Any  # ShareManager or RedisManager


@contextlib.contextmanager
def _served() -> Iterator[Target]:
    from tests.aio.helpers import connect

    with running_manager() as mgr:
        yield Target("served", lambda: connect(mgr), mgr)


@contextlib.contextmanager
def _redis(request: pytest.FixtureRequest) -> Iterator[Target]:
    from proxyshare._backends.redis import RedisManager
    from tests.aio.helpers import connect_redis
    from tests.integration.redis_workers import flush_prefix

    server: Any = request.getfixturevalue("redis_server")
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    try:
        yield Target(
            "redis", lambda: connect_redis(server.url, prefix), RedisManager(server.url, prefix)
        )
    finally:
        flush_prefix(server.url, prefix)


@pytest.fixture(params=["served", pytest.param("redis", marks=pytest.mark.redis)])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each backend in turn: a fresh embedded server, or Redis under a fresh key prefix."""
    with _served() if request.param == "served" else _redis(request) as chosen:
        yield chosen


@pytest.fixture
def redis_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Redis under a fresh key prefix (skipped without redis-server)."""
    with _redis(request) as chosen:
        yield chosen
