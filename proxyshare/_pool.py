"""The checking ``ProcessPoolExecutor`` (work in progress: see issue 4)."""

from __future__ import annotations

import concurrent.futures

__all__ = ["ProcessPoolExecutor"]


class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """Drop-in for the stdlib executor."""
