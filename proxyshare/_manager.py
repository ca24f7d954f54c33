"""``ShareManager``: a ``BaseManager`` that serves named resources.

How one call travels (here ``hits.increment()`` inside a pool worker)::

    worker process  (client path: _proxies, _client)  server process (_server)
    ────────────────────────────────────────────────  ───────────────────────────────
    hits.increment()            a Counter proxy       accepter thread: HMAC handshake
      └─ Transport.call(COUNTER_ADD, "hits", 1)       reactor thread (every session):
           one row of _protocol's table                 epoll: request ready
           └─ ServerRef: this thread's Channel          dispatch by the table →
              (opened on first use: HMAC + HELLO)       resources["hits"]: CounterResource
              ── pickled (11, "hits", 1) ───────────▶   .add(session, 1), checked by _rules
              ◀── pickled (OK, 42) or (ERROR, (exc, server traceback)) ──┘
      └─ returns 42, or raises exc with the server traceback as __cause__

The same proxy over another transport runs elsewhere: ``shared_memory=True``
in this process (``_backends.shm``), ``connect("redis://...")`` on Redis
(``_backends.redis``), ``mgr.pipeline()`` in a batch (``_pipeline``).

A proxy pickles as (transport, name); a ``ServerRef`` is the server's address
and authkey, so the worker needs nothing from its parent to reach the server,
whatever the start method.  When a connection drops, its session's locks and
permits are released at once; a call interrupted by the caller's own
exception cancels only itself (see ``_client``).  This module loads the
server only to run one (``_run_server``, ``get_server``).
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Iterable
from multiprocessing import managers, util
from multiprocessing.context import BaseContext
from types import TracebackType
from typing import TYPE_CHECKING, Any

from proxyshare import _protocol as P
from proxyshare import _rules as rules
from proxyshare._address import (
    Address,
    TlsAddress,
    check_tls_files,
    format_address,
    is_redis_url,
    parse_address,
)
from proxyshare._client import ServerRef
from proxyshare._errors import ProxyShareError
from proxyshare._keys import address_or_env, require_authkey
from proxyshare._proxies import Barrier, Counter, Dict, Event, Lock, Queue, Semaphore

if TYPE_CHECKING:
    from proxyshare._api import Manager
    from proxyshare._backends.shm.adder import Adder
    from proxyshare._pipeline import Pipeline
    from proxyshare._server import ShareServer
    from proxyshare._tls import TLSFiles

__all__ = ["ShareManager", "connect"]

_State: Any = getattr(managers, "State")  # noqa: B009  (not in the type stubs)

# The variables the embedded server reads in its own process. A forkserver
# child gets the environment the forkserver started with, maybe long ago, so
# start() sends today's values along (a test keeps this list in step).
SERVER_ENV = ("PROXYSHARE_REACTOR", "PROXYSHARE_SHM_DIR", "PROXYSHARE_SPIN_US")

logger = logging.getLogger("proxyshare")


class ShareManager(managers.BaseManager):
    """A manager whose server holds named counters, locks, dicts and more.

    >>> with ShareManager() as mgr:                      # doctest: +SKIP
    ...     hits = mgr.counter("hits")
    ...     hits.increment()
    1

    ``ShareManager(address=..., authkey=...)`` with ``start()``/``shutdown()``
    works as for any ``BaseManager``; the default address is a unix socket
    in a private temporary directory and the default key is random.
    ``tls_ca``/``tls_cert``/``tls_key`` are how ``connect()`` reaches a
    ``tls://`` server (see :func:`connect`).

    ``state_dir`` keeps the resources on disk (every change is recorded before
    its reply) and restores them when a server starts on it again; ``fsync``
    (``"always"``, ``"everysec"``, ``"no"``) decides what a power loss may take.
    """

    # Set by ``BaseManager.__init__``; the type stubs do not declare them.
    _address: Any
    _authkey: Any
    _registry: builtins.dict[str, Any]
    _serializer: str
    _state: Any

    def __init__(
        self,
        address: object = None,
        authkey: bytes | str | None = None,
        serializer: str = "pickle",
        ctx: BaseContext | None = None,
        *,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        fsync: str = "everysec",
    ) -> None:
        if serializer != "pickle":
            raise ValueError(
                f"serializer={serializer!r} is not supported: proxyshare speaks pickle "
                "(see the security model in the README)"
            )
        parsed = None if address is None else parse_address(address)
        if isinstance(authkey, str):  # a key pasted from a file or variable
            authkey = authkey.encode()
        if authkey is not None and not isinstance(authkey, (bytes, bytearray)):
            raise TypeError(f"authkey must be bytes (or str), not {type(authkey).__name__}")
        super().__init__(parsed, None if authkey is None else bytes(authkey), serializer, ctx)
        self._ref: ServerRef | None = None
        check_tls_files(parsed, tls_ca, tls_cert, tls_key)
        self._tls_given = (tls_ca, tls_cert, tls_key)
        self._tls: TLSFiles | None = None  # resolved when connecting (set by _reconnect)
        self._server_options: builtins.dict[str, Any] = {}
        fsync = rules.check_fsync(fsync)
        if state_dir is not None:
            self._server_options = {"state_dir": os.path.abspath(state_dir), "fsync": fsync}
        elif fsync != "everysec":
            raise ValueError(f"fsync={fsync!r} applies to a state dir: pass state_dir=... too")

    # -- server lifecycle ------------------------------------------------------------

    def get_server(
        self,
        *,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_client_ca: str | os.PathLike[str] | None = None,
        max_connections: int | None = None,
        max_handshakes: int | None = None,
    ) -> ShareServer:
        """A server to run in this process (``proxyshare serve`` uses this).

        The stdlib's version builds a plain ``Server``; this one builds a
        ``ShareServer`` so every way of serving has the same features.
        ``tls_cert``/``tls_key`` serve TLS (``tls_client_ca``: mutual TLS);
        ``max_connections``/``max_handshakes`` cap open connections and those
        not yet authenticated (see ``ShareServer``).
        """
        if self._state.value != _State.INITIAL:
            raise ProxyShareError(
                "get_server() needs a manager that is neither started nor connected"
            )
        from proxyshare._server.embedded import make_server

        return make_server(
            self._registry,
            self._address,
            self._authkey,
            self._serializer,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            max_connections=max_connections,
            max_handshakes=max_handshakes,
            **self._server_options,
        )

    @classmethod
    def _run_server(
        cls,
        registry: Any,
        address: Any,
        authkey: bytes,
        serializer: str,
        writer: Any,
        initializer: Any = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        """Body of the embedded server process started by ``start()``.

        The only way from here into the server package: a process that only
        connects, or only unpickles proxies, never loads it.
        """
        from proxyshare._server.embedded import run_embedded

        run_embedded(registry, address, authkey, serializer, writer, initializer, initargs)

    def start(self, initializer: Any = None, initargs: Iterable[Any] = ()) -> None:
        """Start the embedded server process (it exits if this process dies)."""
        if isinstance(self._address, TlsAddress):
            raise ProxyShareError(
                f"ShareManager.start() does not serve TLS ({format_address(self._address)}): "
                "run `proxyshare serve --tls-cert FILE --tls-key FILE` (or serve "
                "get_server(tls_cert=..., tls_key=...)) and connect to it"
            )
        if initializer is not None and not callable(initializer):  # before it is wrapped
            raise TypeError(f"initializer must be a callable, not {initializer!r}")
        environ = {name: os.environ.get(name) for name in SERVER_ENV}
        initializer = _ServerStart(self._server_options, environ, initializer)
        super().start(initializer, initargs)
        if isinstance(self._address, ProxyShareError):  # sent instead of an address
            failure = self._address
            self.shutdown()  # reaps the server process, which has already exited
            raise failure
        ref = self._ref = ServerRef(self._address, bytes(self._authkey))
        # Before the server stops, this thread acknowledges the queue items it took
        # (they are done with, not in flight): in shutdown(), and at exit, where
        # priority 1 runs before the stdlib's shutdown finalizer (priority 0).
        # Nothing is released: a stopping server grants no lock to a waiter.
        acknowledge = util.Finalize(self, ref.acknowledge, exitpriority=1)
        stop = self.shutdown

        def shutdown() -> None:
            acknowledge()
            stop()

        self.shutdown = shutdown  # type: ignore[assignment]  # the stdlib's is a Finalize

    def connect(self) -> None:
        """Connect to a server started elsewhere; raise at once if it is not there."""
        if self._tls is None and isinstance(self._address, TlsAddress):
            from proxyshare._tls import client_files

            self._tls = client_files(*self._tls_given)  # the environment fills the gaps
        ref = ServerRef(self._address, bytes(self._authkey), self._tls)
        ref.channel()  # handshake now, so a wrong key or address fails here
        self._ref = ref
        self._state.value = _State.STARTED

    def __enter__(self) -> ShareManager:
        if self._state.value == _State.INITIAL:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if hasattr(self, "shutdown"):  # only a started manager owns a server
            self.shutdown()

    def __reduce__(self) -> tuple[Any, ...]:
        # A manager passed to a worker arrives connected to the same server.
        ref = self.server_ref
        return (_reconnect, (ref.address, ref.authkey, ref.tls))

    # -- where and how ------------------------------------------------------------

    @property
    def server_ref(self) -> ServerRef:
        if self._ref is None:
            raise ProxyShareError(
                "this ShareManager is not running: use `with ShareManager() as mgr:`, "
                "mgr.start(), or proxyshare.connect(address, authkey=...)"
            )
        return self._ref

    @property
    def address(self) -> Address | None:
        """Where the server listens (None before ``start()``)."""
        return None if self._address is None else parse_address(self._address)

    def __repr__(self) -> str:
        where = format_address(self._address) if self._address else "not started"
        return f"<ShareManager {where}>"

    # -- resources ---------------------------------------------------------------

    def _open(self, name: str, kind: str, options: builtins.dict[str, Any]) -> ServerRef:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a resource name must be a non-empty str, not {name!r}")
        ref = self.server_ref
        ref.call(P.OPEN, name, kind, options)
        return ref

    def counter(self, name: str, initial: int = 0, *, shared_memory: bool = False) -> Counter:
        """The counter called ``name``, created with ``initial`` if new.

        ``shared_memory=True`` gives the same-host fast path: operations run in
        the calling process on a shared-memory file (see ``_backends.shm``).
        """
        if shared_memory:
            from proxyshare._backends.shm.client import open_shm_counter

            return open_shm_counter(self.server_ref, name, initial)
        return Counter(self._open(name, "counter", {"initial": initial}), name)

    def lock(self, name: str, *, lease: float | None = None, shared_memory: bool = False) -> Lock:
        """The lock called ``name``: FIFO, released at once if its holder dies.

        ``lease`` (seconds) also releases it when held for longer than that.
        """
        if shared_memory:
            from proxyshare._backends.shm.client import open_shm_lock

            return open_shm_lock(self.server_ref, name, lease=lease)
        return Lock(self._open(name, "lock", {"lease": lease}), name)

    def dict(self, name: str) -> Dict:
        """The dict called ``name``: a full ``MutableMapping`` usable in any worker."""
        return Dict(self._open(name, "dict", {}), name)

    def queue(self, name: str, maxsize: int = 0) -> Queue:
        """The FIFO queue called ``name`` (``maxsize`` applies when it is created)."""
        return Queue(self._open(name, "queue", {"maxsize": maxsize}), name)

    def semaphore(self, name: str, value: int = 1) -> Semaphore:
        """The semaphore called ``name``; a dead holder's permits come back."""
        return Semaphore(self._open(name, "semaphore", {"value": value}), name)

    def event(self, name: str) -> Event:
        """The event called ``name``."""
        return Event(self._open(name, "event", {}), name)

    def barrier(self, name: str, parties: int) -> Barrier:
        """The barrier called ``name`` for ``parties`` waiters; a dead party breaks it."""
        return Barrier(self._open(name, "barrier", {"parties": parties}), name)

    def adder(self, name: str) -> Adder:
        """The adder called ``name``: each process and thread adds to its own slot in
        shared memory, with no lock and no round trip (same host only).

        ``add()`` returns nothing; use a counter when the caller needs the new value.
        """
        from proxyshare._backends.shm.adder import open_adder

        return open_adder(self.server_ref, name)

    def delete(self, name: str) -> bool:
        """Delete the resource ``name``; True if it existed.  Its proxies stop working."""
        return bool(self.server_ref.call(P.DELETE, name))

    def names(self) -> builtins.dict[str, str]:
        """Every resource on the server: ``{name: kind}``."""
        result: builtins.dict[str, str] = self.server_ref.call(P.NAMES, None)
        return result

    def status(self) -> builtins.dict[str, Any]:
        """What the server holds and who is connected, as plain data."""
        result: builtins.dict[str, Any] = self.server_ref.call(P.STATUS, None)
        return result

    def pipeline(self) -> Pipeline:
        """A batch of operations sent in one round trip; see ``proxyshare.Pipeline``."""
        from proxyshare._pipeline import Pipeline

        return Pipeline(self.server_ref)


class _ServerStart:
    """The initializer ``start()`` hands the server process: the user's, plus ours.

    ``BaseManager.start()`` passes nothing else through; ``run_embedded`` reads
    ``proxyshare_server_options`` and applies ``proxyshare_environ`` (``SERVER_ENV``
    as this process has them, None for unset) before the user's initializer runs.
    """

    def __init__(
        self,
        options: builtins.dict[str, Any],
        environ: builtins.dict[str, str | None],
        initializer: Any,
    ) -> None:
        self.proxyshare_server_options = options
        self.proxyshare_environ = environ
        self.initializer = initializer

    def __call__(self, *args: Any) -> None:
        if self.initializer is not None:
            self.initializer(*args)


def _reconnect(address: Address, authkey: bytes, tls: TLSFiles | None = None) -> ShareManager:
    manager = ShareManager(address, authkey=authkey)
    manager._tls = tls  # the paths the parent resolved, not this process's environment
    manager.connect()
    return manager


def connect(
    address: object = None,
    authkey: bytes | str | None = None,
    *,
    tls_ca: str | os.PathLike[str] | None = None,
    tls_cert: str | os.PathLike[str] | None = None,
    tls_key: str | os.PathLike[str] | None = None,
) -> Manager:
    """Connect to a running server and return a connected manager.

    ``address`` is ``"host:port"``, ``("host", port)``, ``"tls://host:port"``,
    ``"unix:/path"`` or a ``redis://`` URL; without it ``PROXYSHARE_ADDRESS``
    is used.  Without ``authkey``, ``PROXYSHARE_AUTHKEY`` or the file named by
    ``PROXYSHARE_AUTHKEY_FILE`` is used.

    For ``tls://``: ``tls_ca`` is the CA file that signed the server's
    certificate (default: the system's CAs), ``tls_cert``/``tls_key`` the
    client certificate and key for mutual TLS; each defaults to
    ``PROXYSHARE_TLS_CA``/``_CERT``/``_KEY``.  The server's hostname is
    verified.  Proxies pickled into workers carry these paths, not the files.

    >>> client = connect("127.0.0.1:50000", authkey=b"secret")   # doctest: +SKIP
    >>> client.counter("hits").increment()                       # doctest: +SKIP
    """
    address = address_or_env(address)
    if is_redis_url(address):
        if tls_ca or tls_cert or tls_key:
            raise ProxyShareError(
                "tls_ca/tls_cert/tls_key are for tls:// addresses; Redis takes its TLS "
                "settings in a rediss:// URL"
            )
        from proxyshare._backends.redis.manager import RedisManager

        return RedisManager(address)
    manager = ShareManager(
        address,
        authkey=require_authkey(authkey),
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    manager.connect()
    util.debug("proxyshare connected to %s", format_address(manager.server_ref.address))
    return manager
