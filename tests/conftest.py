"""Fixtures: every server a test starts is stopped, whatever happens."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator

import pytest

import proxyshare
from proxyshare._client import close_all_channels
from tests.support import START_METHODS


@pytest.fixture
def manager() -> Iterator[proxyshare.ShareManager]:
    """An embedded server in its own process, shut down after the test."""
    mgr = proxyshare.ShareManager()
    mgr.start()
    try:
        yield mgr
    finally:
        close_all_channels()
        mgr.shutdown()


@pytest.fixture
def custom_key_manager() -> Iterator[proxyshare.ShareManager]:
    """A server with an explicit (non-default) authkey."""
    mgr = proxyshare.ShareManager(authkey=b"a custom key, not the process default")
    mgr.start()
    try:
        yield mgr
    finally:
        close_all_channels()
        mgr.shutdown()


@pytest.fixture(params=START_METHODS)
def mp_context(request: pytest.FixtureRequest) -> multiprocessing.context.BaseContext:
    """Each start method in turn."""
    return multiprocessing.get_context(request.param)
