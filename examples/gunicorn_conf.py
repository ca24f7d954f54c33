"""Gunicorn settings that start the proxyshare server in the master process.

    gunicorn examples.webapp:app -c examples/gunicorn_conf.py \\
        -k uvicorn_worker.UvicornWorker -w 4

``on_starting`` runs once, in the master, before any worker is forked: it
starts an embedded server (``ShareManager``, its own process, a unix socket in
a private directory, a random key) and puts its address and key in the
environment, which every worker inherits and ``aio.connect()`` reads.  The
server stops with the master (``on_exit``), and also if the master is killed:
an embedded server exits when its parent dies.

Set ``PROXYSHARE_ADDRESS`` yourself (and the key) to use a server started
elsewhere, e.g. by ``proxyshare serve``: this file then starts none.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import proxyshare

_manager: list[proxyshare.ShareManager] = []


def on_starting(server: Any) -> None:
    if os.environ.get("PROXYSHARE_ADDRESS"):
        return  # a server is already running somewhere
    key = secrets.token_hex(32)  # printable: it travels in the environment
    manager = proxyshare.ShareManager(authkey=key.encode())
    manager.start()
    _manager.append(manager)
    os.environ["PROXYSHARE_ADDRESS"] = f"unix:{manager.server_ref.address}"
    os.environ["PROXYSHARE_AUTHKEY"] = key  # never logged
    server.log.info("proxyshare server for the workers: %s", os.environ["PROXYSHARE_ADDRESS"])


def on_exit(server: Any) -> None:
    while _manager:
        _manager.pop().shutdown()
