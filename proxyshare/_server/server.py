"""The server: connection tracking, the lean session loop, stats.

``ShareServer`` is a ``multiprocessing.managers.Server``, so types registered
with ``ShareManager.register()`` keep working through the stdlib's generic
path.  A connection whose first message (after the HMAC handshake) is a
proxyshare ``HELLO`` becomes a :class:`Session` instead, served by the
reactor (see ``reactor``): one thread reads lean requests from every ready
session, dispatches them straight to the named resource and answers; calls
that must wait finish on worker threads.  When a connection drops (the client
exited or was killed) the server releases everything its session held —
locks, semaphore permits, barrier places, queue items in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing import connection as mpc
from multiprocessing import managers, process
from typing import Any, cast

from proxyshare import _protocol as P
from proxyshare import _wire
from proxyshare._errors import (
    PipelineFailure,
    ProxyShareError,
    ResourceKindError,
    ResourceNotFoundError,
)
from proxyshare._server.reactor import Reactor, Workers
from proxyshare._server.resources import KINDS, QueueResource, Resource
from proxyshare._server.resources.base import (
    WAIT_SLICE,
    MustWait,
    ReplySent,
    SessionGone,
    forbid_waiting,
)
from proxyshare._server.resources.permits import Parked
from proxyshare._server.session import Session, Waiting
from proxyshare._wire import INCOMPLETE, FramedSocket, keepalive

__all__ = ["HANDSHAKE_TIMEOUT", "MAX_MESSAGE", "Session", "ShareServer"]

logger = logging.getLogger("proxyshare.server")

HANDSHAKE_TIMEOUT = 10.0  # an idle, unauthenticated connection is dropped after this
MAX_MESSAGE = 1 << 30  # requests larger than 1 GiB are refused by the client
_HOST = socket.gethostname()

# Errors that answer a bad request; logged at INFO.  Anything else is a server
# bug and is logged at ERROR.  Both reach the client with the traceback.
_EXPECTED = (
    ProxyShareError,
    LookupError,
    TypeError,
    ValueError,
    queue.Empty,
    queue.Full,
    threading.BrokenBarrierError,
    pickle.UnpicklingError,
)

# opcode -> (resource class, method name), from the one table of operations
# opcode -> (resource class, method name, whether a CANCEL can undo it)
_RESOURCE_OPS: dict[int, tuple[type[Resource], str, bool]] = {
    op.code: (KINDS[op.kind], op.method, op.undoable) for op in P.OPS.values() if op.kind in KINDS
}
_CANCEL = P.CANCEL.code


def _cancelled() -> tuple[int, Any]:
    """The answer to a request its client cancelled (the client drops it unread)."""
    return (P.ERROR, _error_value(ProxyShareError("cancelled by the client")))


def _set_socket_options(conn: mpc.Connection, recv_timeout: float | None) -> None:
    # A dup whose family is detected from the descriptor (socket.fromfd would
    # take the family we pass on trust); options set on it apply to the socket.
    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keepalive(sock)  # a client whose host vanished releases its locks in ~25 s
        seconds = recv_timeout or 0.0
        whole = int(seconds)
        sock.setsockopt(
            socket.SOL_SOCKET,
            socket.SO_RCVTIMEO,
            struct.pack("ll", whole, int((seconds - whole) * 1e6)),
        )
    finally:
        sock.close()


class ShareServer(managers.Server):
    """A manager server that also speaks proxyshare's lean session protocol."""

    # Set by ``managers.Server.__init__``; the type stubs do not declare them.
    listener: Any
    authkey: bytes

    def __init__(self, registry: Any, address: Any, authkey: bytes, serializer: str) -> None:
        super().__init__(registry, address, authkey, serializer)
        self.stop_event = threading.Event()
        self.started = time.time()
        self.resources: dict[str, Resource] = {}
        self.registry_lock = threading.Lock()
        self.sessions: dict[int, Session] = {}
        self.sessions_lock = threading.Lock()
        self.generic_connections = 0
        self.ops_finished = 0  # ops of sessions that have ended
        self.reactor = Reactor(self._on_ready, self._drop, on_start=forbid_waiting)
        self.workers = Workers()
        self._manager_ops: dict[int, Callable[..., Any]] = {
            P.OPEN.code: self._op_open,
            P.DELETE.code: self._op_delete,
            P.STATUS.code: self._op_status,
            P.NAMES.code: self._op_names,
            P.PIPELINE.code: self._op_pipeline,
            P.PING.code: self._op_ping,
        }

    # -- lifecycle ---------------------------------------------------------------

    def serve_forever(self) -> None:
        """Serve until ``stop_event`` is set, then close; returns (unlike the stdlib's)."""
        process.current_process()._manager_server = self  # type: ignore[attr-defined]
        accepter = threading.Thread(target=self.accepter, name="proxyshare-accepter", daemon=True)
        accepter.start()
        try:
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self.close()

    def stop(self) -> None:
        """Ask ``serve_forever`` to return (thread- and signal-safe)."""
        self.stop_event.set()

    def close(self) -> None:
        self.stop_event.set()
        try:
            self.listener.close()  # also removes a unix socket file
        except OSError as exc:
            logger.warning("closing the listener failed: %s", exc)
        self.reactor.close()
        self.workers.close()
        # Clients see the connection end (ServerUnavailableError), not a hang;
        # a thread blocked on one of these sockets wakes up too.
        with self.sessions_lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            with contextlib.suppress(OSError):  # already closed by its client
                session.wire.sock.shutdown(socket.SHUT_RDWR)
        # The reactor has stopped, so nobody reads the EOF of the sessions it
        # watched: close them here (a session a worker holds is closed by it).
        for session in self.reactor.orphans():
            try:
                self._drop(session)
            except Exception:  # must not keep the resources below from closing
                logger.exception("closing client %s failed", session.id)
        with self.registry_lock:
            resources = list(self.resources.values())
            self.resources.clear()
        for resource in resources:
            try:
                resource.destroy()
            except Exception:  # one failure must not leak the others' files
                logger.exception("closing %s %r failed", resource.kind, resource.name)

    def accepter(self) -> None:
        self.reactor.start()  # here, so whoever runs the accepter is served
        while not self.stop_event.is_set():
            try:
                conn = self.listener.accept()
            except OSError as exc:
                if self.stop_event.is_set():
                    return
                logger.warning("accepting a connection failed: %s", exc)
                self.stop_event.wait(0.05)  # e.g. out of file descriptors: do not spin
                continue
            threading.Thread(target=self.handle_request, args=(conn,), daemon=True).start()

    # -- a new connection --------------------------------------------------------

    def handle_request(self, conn: mpc.Connection) -> None:
        """Authenticate, then serve a proxyshare session or one stdlib request."""
        try:
            try:
                _set_socket_options(conn, HANDSHAKE_TIMEOUT)
                mpc.deliver_challenge(conn, self.authkey)
                mpc.answer_challenge(conn, self.authkey)
                request = conn.recv()
            except Exception as exc:  # bad key, garbage, idle: drop just this connection
                logger.info("rejected a connection: %s: %s", type(exc).__name__, exc)
                return
            _set_socket_options(conn, None)
            if isinstance(request, tuple) and request[:1] == (P.HELLO.code,) and len(request) == 5:
                # From here on, frames are read straight off the socket (see _wire).
                wire = FramedSocket(socket.socket(fileno=os.dup(conn.fileno())))
                try:
                    self._start_session(wire, request)
                except BaseException:
                    wire.close()
                    raise
            else:
                with self.sessions_lock:
                    self.generic_connections += 1
                try:
                    self._serve_stdlib(conn, request)
                finally:
                    with self.sessions_lock:
                        self.generic_connections -= 1
        except Exception:  # e.g. a malformed HELLO: log it here, not on a thread's stderr
            logger.exception("serving a connection failed; it was closed")
        finally:
            conn.close()

    def _serve_stdlib(self, conn: mpc.Connection, request: Any) -> None:
        """The stdlib manager's request handling, for registered user types."""
        try:
            _ident, funcname, args, kwds = request
            if funcname not in self.public:
                raise ValueError(f"{funcname!r} is not a manager request")
            func = getattr(self, funcname)
        except Exception:
            msg: tuple[str, Any] = ("#TRACEBACK", traceback.format_exc())
        else:
            try:
                msg = ("#RETURN", func(conn, *args, **kwds))
            except SystemExit:  # serve_client() exits on EOF
                return
            except Exception:
                msg = ("#TRACEBACK", traceback.format_exc())
        try:
            conn.send(msg)
        except (OSError, EOFError):
            pass  # the client is gone; nothing to answer
        except Exception:
            conn.send(("#TRACEBACK", traceback.format_exc()))

    # -- lean sessions -------------------------------------------------------------

    def _start_session(self, wire: FramedSocket, hello: tuple[Any, ...]) -> None:
        _op, _name, pid, host, thread = hello
        session = Session(wire, int(pid), str(host), str(thread), self._attach, self._want_write)
        with self.sessions_lock:
            self.sessions[session.id] = session
        try:
            info = {
                "protocol": P.PROTOCOL_VERSION,
                "server_pid": os.getpid(),
                "server_host": _HOST,
                "client": session.id,
                "max_message": MAX_MESSAGE,
            }
            wire.send_bytes(pickle.dumps((P.OK, info), P.PICKLE_PROTOCOL))
        except OSError:
            self._end_session(session)
            wire.close()
            return
        self._attach(session)

    def _attach(self, session: Session) -> None:
        session.attached = True
        write = bool(session.outbox)  # a reply still to send comes before the next request
        if not self.reactor.attach(session.wire.fileno(), session, write=write):
            session.attached = False  # the server has stopped
            self._drop(session)
        elif session.wire.buffered():  # e.g. a CANCEL read with the request: no event will come
            self.reactor.call_soon(self._on_ready, session)

    def _want_write(self, session: Session) -> None:
        """Under the session's send lock: a reply waits; watch for writability, not requests."""
        self.reactor.watch(session.wire.fileno(), write=True)

    def _flush(self, session: Session) -> None:
        """Reactor thread: the socket of a session with queued replies is writable (or failed)."""
        try:
            done = session.flush()
        except OSError as exc:
            logger.info("dropping client %s: %s", session.id, exc)
            self._drop(session)
            return
        if done:
            self.reactor.watch(session.wire.fileno(), write=False)

    def _detach(self, session: Session) -> None:
        self.reactor.detach(session.wire.fileno())
        session.attached = False

    def _drop(self, session: Session) -> None:
        """The connection is over: release what it held, close it."""
        session.ended = True  # first: a grant racing this must not re-attach it
        if session.attached:
            with contextlib.suppress(OSError, ValueError):  # a closed fd or reactor
                self._detach(session)
        self._end_session(session)
        session.wire.close()

    def _on_ready(self, session: Session) -> None:
        """Reactor thread: serve what has arrived on ``session``.

        Usually one request; a CANCEL may have come right behind it in the
        same read, so serve what is buffered too while the reactor still owns
        the session.
        """
        while True:
            if session.outbox:
                self._flush(session)
                return
            try:
                data = session.wire.recv_ready(MAX_MESSAGE)
            except EOFError:
                self._drop(session)
                return
            except OSError as exc:  # a reset, or a frame that breaks the protocol
                logger.info("dropping client %s: %s", session.id, exc)
                self._drop(session)
                return
            if data is None:  # nothing had arrived after all
                return
            if data is INCOMPLETE:  # more than one read's worth: a worker reads the rest
                if session.waiting is not None:  # a waiting client sends only a small CANCEL
                    logger.info("dropping client %s: it sent a request while waiting", session.id)
                    self._drop(session)
                    return
                self._detach(session)
                self.workers.submit(self._on_worker, self._serve_on_worker, session)
                return
            if not self._serve(session, cast(memoryview, data)):
                return
            if not (session.attached and session.wire.buffered()):
                return

    def _serve(self, session: Session, data: memoryview) -> bool:
        """Reactor thread: serve one request; True if the reactor still owns the session."""
        request: Any = None
        try:
            request = pickle.loads(data)
            if type(request) is tuple and request[:1] == (_CANCEL,):
                self._cancel(session, request)
                return not session.ended
            if session.waiting is not None:  # a waiting client may only cancel
                logger.info("dropping client %s: it sent a request while waiting", session.id)
                self._drop(session)
                return False
            session.received += 1
            session.last = None
            reply = self._outcome(session, request, self.dispatch, session, request)
        except Parked as parked:
            self._park(session, parked)
            return True
        except MustWait:
            self._detach(session)
            self.workers.submit(self._on_worker, self._finish_on_worker, session, request)
            return False
        except BaseException as exc:  # from unpickling, even SystemExit: answer, go on
            reply = (P.ERROR, self._error_reply(exc, request))
        if reply is None:
            return not session.ended
        session.ops += 1
        if not session.send(self._dump_reply(reply, request)):
            self._undeliverable(request, reply)
            self._drop(session)
            return False
        return True

    def _outcome(
        self, session: Session, request: Any, call: Callable[..., Any], *args: Any
    ) -> tuple[int, Any] | None:
        """The reply to ``request``, or None if none is due (the session is then dealt with)."""
        try:
            return (P.OK, call(*args))
        except (MustWait, Parked):
            raise
        except SessionGone:
            if session.cancel_pending:  # the wait ended because its client cancelled it
                session.cancel_pending = False
                return _cancelled()
            self._drop(session)
        except ReplySent:
            pass  # and the session is back with the reactor
        except BaseException as exc:
            if not self.stop_event.is_set():
                return (P.ERROR, self._error_reply(exc, request))
            # Woken because the server is stopping (resources closed under a
            # blocked call): no reply, so the client sees ServerUnavailableError,
            # not "deleted".
            self._drop(session)
        return None

    def _dump_reply(self, reply: tuple[int, Any], request: Any) -> bytes:
        try:
            payload = pickle.dumps(reply, P.PICKLE_PROTOCOL)
            if len(payload) > _wire.MAX_FRAME:
                raise ProxyShareError(
                    f"the reply is {len(payload):,} bytes, too large for one message "
                    f"(at most {_wire.MAX_FRAME:,}): ask for less at a time"
                )
            return payload
        except BaseException as exc:  # a value's __reduce__ may raise anything, as unpickling may
            return pickle.dumps((P.ERROR, self._error_reply(exc, request)), P.PICKLE_PROTOCOL)

    # The worker side: each job owns its (detached) session until it attaches it again.

    def _on_worker(self, job: Callable[..., None], session: Session, *args: Any) -> None:
        """Run a worker job that owns ``session``; if it fails, the session ends.

        Otherwise its client would wait for ever: the session is detached
        from the reactor until the job attaches it again.
        """
        try:
            job(session, *args)
        except Exception:
            logger.exception("serving client %s failed; its connection is closed", session.id)
            self._drop(session)

    def _serve_on_worker(self, session: Session) -> None:
        try:
            data = session.wire.recv_view(MAX_MESSAGE)
        except (EOFError, OSError) as exc:
            logger.info("dropping client %s: %s", session.id, exc)
            self._drop(session)
            return
        request: Any = None
        session.received += 1
        session.last = None
        try:
            request = pickle.loads(data)
        except BaseException as exc:
            reply: tuple[int, Any] | None = (P.ERROR, self._error_reply(exc, request))
        else:
            reply = self._outcome(session, request, self.dispatch, session, request)
        self._reply_on_worker(session, request, reply)

    def _finish_on_worker(self, session: Session, request: Any) -> None:
        reply = self._outcome(session, request, self.dispatch, session, request)
        self._reply_on_worker(session, request, reply)

    # Lock and semaphore waiters parked in the reactor: no thread waits for them.

    def _park(self, session: Session, parked: Parked) -> None:
        resource, waiter = parked.resource, parked.waiter
        with resource.mutex:  # the same mutex a grant or a delete takes
            if waiter.granted:
                return  # already answered by reply_early
            if waiter.error is None:
                timer = None
                if parked.deadline is not None:
                    timer = self.reactor.call_at(
                        parked.deadline, self._parked_timeout, session, waiter
                    )
                session.waiting = Waiting(resource, waiter, timer)
                waiter.on_wake = self._parked_woken
                if resource.needs_ticks():
                    self._schedule_tick(session, waiter)
                return
        session.answer((P.ERROR, _error_value(waiter.error)))  # False: its EOF drops it

    def _schedule_tick(self, session: Session, waiter: Any) -> None:
        self.reactor.call_at(time.monotonic() + WAIT_SLICE, self._parked_tick, session, waiter)

    @staticmethod
    def _parked_in(session: Session, waiter: Any) -> Any:
        """The resource ``session`` is still parked in as ``waiter``, else None.

        Reads ``waiting`` once: a grant on another thread may clear it meanwhile.
        """
        waiting = session.waiting
        return waiting.resource if waiting is not None and waiting.waiter is waiter else None

    def _parked_tick(self, session: Session, waiter: Any) -> None:
        """A leased lock: take it back from a holder whose lease ran out."""
        resource = self._parked_in(session, waiter)
        if resource is not None:
            resource.tick()
            if self._parked_in(session, waiter) is not None:
                self._schedule_tick(session, waiter)

    def _cancel(self, session: Session, request: tuple[Any, ...]) -> None:
        """Reactor thread: a client cancels its request number ``seq`` (see ``_protocol``).

        Answers that request if it waits parked here, undoes what it did if it
        already completed, then acknowledges.  Any other sequence number means
        the client lost count: its connection is dropped.
        """
        seq = request[2] if len(request) == 3 else None
        if seq == session.received:
            waiting = session.waiting
            if waiting is not None and waiting.resource.cancel_wait(waiting.waiter):
                session.unpark()
                session.answer(_cancelled())
            elif session.last is not None:  # it completed (maybe just now): undo it
                resource, method, result = session.last
                resource.undo(session, method, result)
        elif seq != session.received + 1:  # (the cancelled request never arrived)
            logger.info("dropping client %s: it cancelled unknown request %r", session.id, seq)
            self._drop(session)
            return
        session.last = None
        session.cancel_pending = False
        session.send(P.ack_frame(seq))

    def _parked_timeout(self, session: Session, waiter: Any) -> None:
        resource = self._parked_in(session, waiter)
        if resource is not None and resource.cancel_wait(waiter):
            session.unpark()
            session.answer((P.OK, False))

    def _parked_woken(self, waiter: Any) -> None:
        """Under the resource mutex: a parked waiter's resource was deleted."""
        if waiter.granted or waiter.error is None:
            return  # granted: reply_early answered
        session = waiter.session
        session.unpark()
        if not self.stop_event.is_set():
            session.answer((P.ERROR, _error_value(waiter.error)))

    def _reply_on_worker(
        self, session: Session, request: Any, reply: tuple[int, Any] | None
    ) -> None:
        if reply is None:
            return  # the session was dropped, or is back with the reactor (ReplySent)
        session.ops += 1
        if not session.send(self._dump_reply(reply, request)):
            self._undeliverable(request, reply)
            self._drop(session)
            return
        self._attach(session)

    def _error_reply(self, exc: BaseException, request: Any) -> tuple[BaseException, str]:
        text = traceback.format_exc()
        level = logging.INFO if isinstance(exc, _EXPECTED) else logging.ERROR
        logger.log(level, "request %s failed", _describe_request(request), exc_info=exc)
        # The client must be able to rebuild the error, and must not get a
        # SystemExit/KeyboardInterrupt that would end *its* process.
        try:
            if not isinstance(exc, Exception):
                raise TypeError("not an Exception")
            pickle.loads(pickle.dumps(exc, P.PICKLE_PROTOCOL))
        except BaseException:  # e.g. SystemExit from pickling a value in its args
            exc = ProxyShareError(f"{type(exc).__name__}: {exc}")
        return (exc, text)

    def _undeliverable(self, request: Any, reply: tuple[int, Any]) -> None:
        """The client died before it got its items: put them back in the queue."""
        if reply[0] != P.OK or not isinstance(request, tuple):
            return
        resource = self.resources.get(request[1]) if len(request) > 1 else None
        if isinstance(resource, QueueResource):
            if request[0] == P.QUEUE_GET.code:
                resource.unget([reply[1]])
            elif request[0] == P.QUEUE_GET_MANY.code:
                resource.unget(reply[1])

    def _end_session(self, session: Session) -> None:
        # A stopping server releases nothing: a lock freed while it winds down
        # would be granted to a waiter whose acquire() then returns True from
        # a server that is gone.  Its clients get ServerUnavailableError instead.
        if not self.stop_event.is_set():
            # Whoever ends a session owns it: it waits in no list but the
            # FIFO it may be parked in (in the reactor).
            waiting = session.unpark()
            if waiting is not None:
                waiting.resource.session_closed(session)  # leave the FIFO
            for resource in list(session.held):
                resource.session_closed(session)
        with self.sessions_lock:
            self.sessions.pop(session.id, None)
            self.ops_finished += session.ops

    # -- dispatch -------------------------------------------------------------

    def dispatch(self, session: Session, request: tuple[Any, ...]) -> Any:
        """Run one lean request; return its result or raise its error."""
        entry = _RESOURCE_OPS.get(request[0])
        if entry is not None:
            cls, method, undoable = entry
            name = request[1]
            resource = self.resources.get(name)
            if type(resource) is not cls:
                raise self._wrong_resource(name, cls.kind, resource)
            result = getattr(resource, method)(session, *request[2:])
            if undoable:
                session.last = (resource, method, result)
            return result
        handler = self._manager_ops.get(request[0])
        if handler is None:
            raise ProxyShareError(
                f"unknown request {request[0]!r}: client and server versions differ?"
            )
        return handler(session, *request[1:])

    def _wrong_resource(self, name: Any, kind: str, found: Resource | None) -> ProxyShareError:
        if found is None:
            return ResourceNotFoundError(
                f"no {kind} named {name!r} on this server: it was deleted or the server "
                f"restarted; open it again with mgr.{kind}({name!r})"
            )
        return ResourceKindError(f"{name!r} is a {found.kind}, not a {kind}")

    def _op_open(
        self, session: Session, name: str, kind: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a resource name must be a non-empty str, not {name!r}")
        cls = KINDS.get(kind)
        if cls is None:
            raise ValueError(f"unknown resource kind {kind!r}")
        with self.registry_lock:
            resource = self.resources.get(name)
            if resource is None:
                resource = self.resources[name] = cls.create(name, options)
                logger.debug("created %s %r", kind, name)
            elif resource.kind != kind:
                raise ResourceKindError(
                    f"{name!r} is already a {resource.kind}; it cannot also be a {kind}: "
                    f"use another name, or mgr.delete({name!r}) first"
                )
            else:
                resource.check_options(options)
        return resource.options()

    def _op_delete(self, session: Session, name: str) -> bool:
        with self.registry_lock:
            resource = self.resources.pop(name, None)
        if resource is None:
            return False
        resource.destroy()
        return True

    def _op_names(self, session: Session, _name: None = None) -> dict[str, str]:
        return {name: r.kind for name, r in list(self.resources.items())}

    def _op_ping(self, session: Session, _name: None = None, payload: Any = None) -> Any:
        return payload

    def _op_status(self, session: Session, _name: None = None) -> dict[str, Any]:
        with self.sessions_lock:
            sessions = list(self.sessions.values())
            ops = self.ops_finished + sum(s.ops for s in sessions)
            generic = self.generic_connections
        return {
            "server": {
                "pid": os.getpid(),
                "host": _HOST,
                "started": self.started,
                "uptime": time.time() - self.started,
                "operations": ops,
                "threads": threading.active_count() - self.workers.idle,
                "generic_connections": generic,
            },
            "clients": [{**s.describe(), "since": s.since, "operations": s.ops} for s in sessions],
            "resources": [r.describe() for r in list(self.resources.values())],
        }

    def _op_pipeline(
        self, session: Session, _name: None, requests: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Apply ``requests`` in order, atomically: all their resources stay locked.

        Stops at the first failure; raises ``(index, results so far, error)``
        packed in a ``PipelineFailure`` that the client unpacks.  Each name is
        looked up once, and the operations run on exactly the objects whose
        mutexes are held (taken in one global order, so pipelines cannot deadlock).
        """
        if not isinstance(requests, list):
            raise TypeError("a pipeline is a list of requests")
        names = set()
        for index, request in enumerate(requests):
            valid = isinstance(request, tuple) and len(request) > 1
            if not valid or request[0] not in _RESOURCE_OPS:
                raise PipelineFailure(index, [], ProxyShareError("not a resource operation"))
            if not P.OPS[request[0]].allowed_in_pipeline(request):
                raise PipelineFailure(
                    index, [], ProxyShareError("blocking operations cannot run in a pipeline")
                )
            names.add(request[1])
        found = {name: self.resources.get(name) for name in names}
        order = sorted(found, key=lambda name: (type(name).__name__, repr(name)))
        mutexes = [r.mutex for name in order if (r := found[name]) is not None]
        for mutex in mutexes:
            mutex.acquire()
        results: list[Any] = []
        try:
            for index, request in enumerate(requests):
                cls, method, _undoable = _RESOURCE_OPS[request[0]]
                resource = found[request[1]]
                try:
                    if type(resource) is not cls:
                        raise self._wrong_resource(request[1], cls.kind, resource)
                    results.append(getattr(resource, method)(session, *request[2:]))
                except Exception as exc:
                    raise PipelineFailure(index, results, exc) from exc
        finally:
            for mutex in reversed(mutexes):
                mutex.release()
        return results


def _error_value(exc: Exception) -> tuple[Exception, str]:
    """An error reply's value for an error raised by nobody (no traceback to send)."""
    return (exc, f"{type(exc).__name__}: {exc}\n")


def _describe_request(request: Any) -> str:
    if isinstance(request, tuple) and len(request) >= 2:
        return f"op={request[0]!r} name={request[1]!r}"
    return "<unreadable>"
