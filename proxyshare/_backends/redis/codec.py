"""How values and dict keys are stored in Redis.

* **Values** (dict values, compare-and-set operands): an ``int`` that fits in
  64 bits is decimal text, so ``HINCRBY`` works on it; anything else is
  pickled.  The two never collide: a pickle starts with ``0x80``, which no
  decimal text does.
* **Dict keys** (hash fields): a ``str`` is its UTF-8 (readable in
  redis-cli), anything else is pickled without the memo, so equal keys have
  equal bytes however they were built.  A UTF-8 string never starts with
  ``0x80`` (a continuation byte) either.
* **Queue items**: always pickled.

Keys compare by their encoding: ``1``, ``1.0`` and ``True`` are three keys
here (one in a Python dict), and compare-and-set compares encodings.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from proxyshare._errors import UnshareableArgumentError
from proxyshare._rules import INT64_MAX, INT64_MIN

__all__ = ["dump_key", "dump_value", "dumps", "load_key", "load_value", "loads"]

_PICKLE = 5  # fixed, so every Python version encodes dict keys the same way
_PICKLED = b"\x80"


def dumps(value: Any) -> bytes:
    """``value`` pickled, or ``UnshareableArgumentError`` saying what to send instead."""
    try:
        return pickle.dumps(value, _PICKLE)
    except Exception as exc:
        raise UnshareableArgumentError(
            f"cannot send this value to Redis: it cannot be pickled "
            f"({type(exc).__name__}: {exc}). Send plain data (numbers, strings, lists, dicts, ...)."
        ) from exc


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def dump_value(value: Any) -> bytes:
    """Ints as decimal text (so ``HINCRBY`` works on them), anything else pickled."""
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return str(value).encode()
    return dumps(value)


def load_value(data: bytes) -> Any:
    if data[:1] == _PICKLED:
        return pickle.loads(data)
    return int(data)


def dump_key(key: Any) -> bytes:
    """``str`` keys as UTF-8, others pickled without the memo (see the module docstring)."""
    hash(key)  # unhashable keys fail here, as in a dict
    if type(key) is str:
        try:
            return key.encode()
        except UnicodeEncodeError:
            pass  # lone surrogates: pickled below
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, _PICKLE)
    # Without the memo, equal keys pickle to equal bytes (the memo would record
    # whether two parts of the key were the same object).
    pickler.fast = True
    try:
        pickler.dump(key)
    except Exception as exc:
        raise UnshareableArgumentError(
            f"cannot use this key on Redis: it cannot be pickled ({type(exc).__name__}: {exc})"
        ) from exc
    return buffer.getvalue()


def load_key(data: bytes) -> Any:
    if data[:1] == _PICKLED:
        return pickle.loads(data)
    return data.decode()
