"""The public surface: ``__all__`` is exact and importing stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import proxyshare

pytestmark = pytest.mark.matrix


def test_all_names_resolve() -> None:
    for name in proxyshare.__all__:
        assert getattr(proxyshare, name) is not None, name


def test_all_lists_every_public_name() -> None:
    public = {n for n in dir(proxyshare) if not n.startswith("_")} - {"annotations", "importlib"}
    public -= {"TYPE_CHECKING", "Any"}
    assert public == set(proxyshare.__all__) - {"__version__"}


def test_errors_are_picklable_and_built_from_a_message() -> None:
    import pickle

    for name in proxyshare.__all__:
        obj = getattr(proxyshare, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            error = obj("message")
            again = pickle.loads(pickle.dumps(error))
            assert type(again) is obj and "message" in str(again)


def test_unshareable_argument_error_is_a_type_error() -> None:
    assert issubclass(proxyshare.UnshareableArgumentError, TypeError)
    assert issubclass(proxyshare.UnshareableArgumentError, proxyshare.ProxyShareError)


def test_import_and_proxy_unpickling_load_no_heavy_modules() -> None:
    code = (
        "import pickle, sys\n"
        "from proxyshare._client import ServerRef\n"
        "from proxyshare._proxies import Counter\n"
        "data = pickle.dumps(Counter(ServerRef('127.0.0.1:1', b'k'), 'x'))\n"
        "[sys.modules.pop(m) for m in list(sys.modules) if m.startswith('proxyshare')]\n"
        "import proxyshare; pickle.loads(data)\n"
        "heavy = [m for m in ('pydantic', 'rich', 'matplotlib', 'redis') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
