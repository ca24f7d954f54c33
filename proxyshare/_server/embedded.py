"""The embedded server process: what ``ShareManager.start()`` runs, and ``get_server()``.

Both build a ``ShareServer`` (the stdlib's ``BaseManager`` would build a
plain ``Server``).  An embedded server stops when the process that started
it dies, which the stdlib's does not.

``BaseManager.start()`` passes the server process nothing but the stdlib's
arguments, so ``ShareManager`` sends its own server options (the state dir)
and the server's environment variables in the initializer's place: an object
with ``proxyshare_server_options`` and ``proxyshare_environ`` dicts (see
``ShareManager.start``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from proxyshare._errors import ProxyShareError
from proxyshare._server.server import ShareServer
from proxyshare._server.state import StateError

__all__ = ["make_server", "run_embedded"]

logger = logging.getLogger("proxyshare")


def make_server(
    registry: Any,
    address: Any,
    authkey: bytes,
    serializer: str,
    *,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
    tls_client_ca: str | os.PathLike[str] | None = None,
    **options: Any,
) -> ShareServer:
    """A server to run in this process (``proxyshare serve``, tests).

    With ``tls_cert`` (and ``tls_key``, unless the certificate file holds
    it) every connection is wrapped in TLS; ``tls_client_ca`` requires client
    certificates signed by that CA (mutual TLS).  ``options``: the other
    ``ShareServer`` options (``max_connections``, ``max_handshakes``,
    ``state_dir``, ``fsync``).
    """
    context = None
    if tls_cert is not None:
        from proxyshare._tls import server_context

        context = server_context(tls_cert, tls_key, tls_client_ca)
    elif tls_key is not None or tls_client_ca is not None:
        raise ProxyShareError(
            "--tls-key and --tls-client-ca need --tls-cert (the server's certificate)"
        )
    return ShareServer(registry, address, authkey, serializer, tls=context, **options)


def run_embedded(
    registry: Any,
    address: Any,
    authkey: bytes,
    serializer: str,
    writer: Any,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> None:
    """Serve until stopped; send the parent our address, or why we could not start."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the parent
    options = dict(getattr(initializer, "proxyshare_server_options", None) or {})
    _take_environ(getattr(initializer, "proxyshare_environ", None) or {})
    try:
        if initializer is not None:
            initializer(*initargs)
        server = ShareServer(registry, address, authkey, serializer, **options)
    except StateError as exc:  # the message names the file and what to do
        writer.send(ProxyShareError(f"the proxyshare server could not start: {exc}"))
        writer.close()
        return
    except Exception as exc:  # e.g. the address is in use: tell the parent why
        writer.send(
            ProxyShareError(
                f"the proxyshare server could not start: {type(exc).__name__}: {exc}; "
                "choose another address (or none, for a private unix socket)"
            )
        )
        writer.close()
        return
    writer.send(server.address)
    writer.close()
    _watch_parent(server)
    server.serve_forever()


def _watch_parent(server: ShareServer) -> None:
    """Stop the embedded server when the process that started it dies.

    The stdlib's manager process outlives a killed parent; ours waits on the
    parent's sentinel (works for fork, spawn and forkserver) and stops.  The
    sentinel is a pipe, and children the parent forks later (pool workers)
    inherit its write end and keep it open after the parent dies, so on Linux
    the server also waits on a pidfd of the parent, which the kernel marks
    readable when that process exits.
    """
    from multiprocessing import connection, parent_process

    parent = parent_process()
    if parent is None:
        return
    waitables: list[Any] = [parent.sentinel]
    if parent.pid is not None:
        with contextlib.suppress(AttributeError, OSError):  # not Linux >= 5.3, or gone already
            waitables.append(os.pidfd_open(parent.pid))

    def watch() -> None:
        connection.wait(waitables)
        if not server.stop_event.is_set():
            logger.warning("the process that started this server exited; stopping")
            server.stop()

    threading.Thread(target=watch, name="proxyshare-parent-watch", daemon=True).start()


def _take_environ(environ: dict[str, str | None]) -> None:
    """Make the server's variables what the starting process had (None: unset)."""
    for name, value in environ.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
