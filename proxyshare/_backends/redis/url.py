"""Redis URLs: what redis-py is given, what users are shown, and where the password comes from.

Accepted forms (the schemes are ``proxyshare._address.REDIS_SCHEMES``)::

    redis://[[user]:password@]host[:port][/db]
    rediss://...                                  (TLS)
    unix+redis:///path/to/redis.sock[?db=N]       (redis-py calls it unix://)

The password may sit in the URL (as userinfo or ``?password=``) or in
``PROXYSHARE_REDIS_PASSWORD``, which is read by each process itself and so
never travels inside a pickled proxy.  Whatever is shown (reprs, ``where()``,
``status()``, error messages) goes through :func:`redacted_url`.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from proxyshare._address import is_redis_url

__all__ = ["PASSWORD_ENV", "env_password", "redacted_url", "split_url"]

PASSWORD_ENV = "PROXYSHARE_REDIS_PASSWORD"
_UNIX = "unix+redis://"


def split_url(url: str) -> tuple[str, str]:
    """``(url for redis-py, url safe to show)``; the shown one never has the password.

    ``ValueError`` (naming the accepted forms, not the URL) if ``url`` is not a Redis URL.
    """
    if not is_redis_url(url):
        raise ValueError(
            f"not a Redis URL: use redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) "
            f"or unix+redis:///path/to/redis.sock[?db=N]; got a {type(url).__name__}"
        )
    for_redis = "unix://" + url[len(_UNIX) :] if url.startswith(_UNIX) else url
    parts = urlsplit(url)
    query = "&".join(
        "password=***" if item.startswith("password=") else item for item in parts.query.split("&")
    )
    if "@" not in parts.netloc and query == parts.query:
        return for_redis, url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if not netloc:  # urlunsplit drops the empty authority of unix+redis:///path
        shown = shown.replace(":", "://", 1)
    return for_redis, shown


def redacted_url(url: str) -> str:
    """``url`` as it may be shown: the password, wherever it was, is ``***``."""
    return split_url(url)[1]


def _has_password(url: str) -> bool:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    in_query = any(item.startswith("password=") for item in parts.query.split("&"))
    return in_query or (":" in userinfo and bool(userinfo.partition(":")[2]))


def env_password(url: str) -> str | None:
    """The password from ``PROXYSHARE_REDIS_PASSWORD``, used only when ``url`` has none."""
    password = os.environ.get(PASSWORD_ENV)
    if password and not _has_password(url):
        return password
    return None
