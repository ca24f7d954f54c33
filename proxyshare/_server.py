"""The server: connection tracking, the lean session loop, stats.

``ShareServer`` is a ``multiprocessing.managers.Server``, so types registered
with ``ShareManager.register()`` keep working through the stdlib's generic
path.  A connection whose first message (after the HMAC handshake) is a
proxyshare ``HELLO`` becomes a :class:`Session` instead, served by the
reactor (see ``_reactor``): one thread reads lean requests from every ready
session, dispatches them straight to the named resource and answers; calls
that must wait finish on worker threads.  When a connection drops (the client
exited or was killed) the server releases everything its session held —
locks, semaphore permits, barrier places, queue items in flight.
"""

from __future__ import annotations

import contextlib
import itertools
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
from typing import Any

from proxyshare import _protocol as P
from proxyshare import _wire
from proxyshare._client import keepalive
from proxyshare._errors import (
    PipelineFailure,
    ProxyShareError,
    ResourceKindError,
    ResourceNotFoundError,
)
from proxyshare._reactor import Reactor, Timer, Workers
from proxyshare._resources import (
    RESOURCE_TYPES,
    WAIT_SLICE,
    BarrierResource,
    CounterResource,
    DictResource,
    EventResource,
    LockResource,
    MustWait,
    Parked,
    QueueResource,
    ReplySent,
    Resource,
    SemaphoreResource,
    SessionGone,
)
from proxyshare._shm import SHM_RESOURCE_TYPES
from proxyshare._wire import FramedSocket

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

# opcode -> (resource class, method name)
_RESOURCE_OPS: dict[int, tuple[type[Resource], str]] = {
    P.COUNTER_GET: (CounterResource, "get"),
    P.COUNTER_ADD: (CounterResource, "add"),
    P.COUNTER_SUB: (CounterResource, "sub"),
    P.COUNTER_SET: (CounterResource, "set"),
    P.COUNTER_CAS: (CounterResource, "compare_and_set"),
    P.COUNTER_SWAP: (CounterResource, "get_and_set"),
    P.LOCK_ACQUIRE: (LockResource, "acquire"),
    P.LOCK_RELEASE: (LockResource, "release"),
    P.LOCK_LOCKED: (LockResource, "locked"),
    P.LOCK_OWNER: (LockResource, "owner"),
    P.DICT_GET: (DictResource, "get"),
    P.DICT_GET_DEFAULT: (DictResource, "get_default"),
    P.DICT_SET: (DictResource, "set"),
    P.DICT_DEL: (DictResource, "delete"),
    P.DICT_LEN: (DictResource, "len"),
    P.DICT_CONTAINS: (DictResource, "contains"),
    P.DICT_SNAPSHOT: (DictResource, "snapshot"),
    P.DICT_KEYS: (DictResource, "keys"),
    P.DICT_POP: (DictResource, "pop"),
    P.DICT_SETDEFAULT: (DictResource, "setdefault"),
    P.DICT_UPDATE: (DictResource, "update"),
    P.DICT_CLEAR: (DictResource, "clear"),
    P.DICT_INCR: (DictResource, "increment"),
    P.DICT_CAS: (DictResource, "compare_and_set"),
    P.QUEUE_PUT: (QueueResource, "put"),
    P.QUEUE_GET: (QueueResource, "get"),
    P.QUEUE_PUT_MANY: (QueueResource, "put_many"),
    P.QUEUE_GET_MANY: (QueueResource, "get_many"),
    P.QUEUE_SIZE: (QueueResource, "qsize"),
    P.QUEUE_CLOSE: (QueueResource, "close_queue"),
    P.QUEUE_INFO: (QueueResource, "info"),
    P.SEM_ACQUIRE: (SemaphoreResource, "acquire"),
    P.SEM_RELEASE: (SemaphoreResource, "release"),
    P.SEM_VALUE: (SemaphoreResource, "value"),
    P.EVENT_SET: (EventResource, "set"),
    P.EVENT_CLEAR: (EventResource, "clear"),
    P.EVENT_IS_SET: (EventResource, "is_set"),
    P.EVENT_WAIT: (EventResource, "wait"),
    P.BARRIER_WAIT: (BarrierResource, "wait"),
    P.BARRIER_ABORT: (BarrierResource, "abort"),
    P.BARRIER_N_WAITING: (BarrierResource, "n_waiting"),
    P.BARRIER_RESET: (BarrierResource, "reset"),
    P.BARRIER_INFO: (BarrierResource, "info"),
}

# Operations that may wait; refused inside a pipeline, which holds mutexes.
_BLOCKING_OPS = frozenset(
    {P.LOCK_ACQUIRE, P.QUEUE_PUT, P.QUEUE_GET, P.QUEUE_GET_MANY, P.SEM_ACQUIRE,
     P.EVENT_WAIT, P.BARRIER_WAIT}
)  # fmt: skip

# Where the ``block`` flag sits in the requests that may skip waiting.
_BLOCK_FLAG_AT = {P.LOCK_ACQUIRE: 2, P.SEM_ACQUIRE: 2, P.QUEUE_GET: 2, P.QUEUE_PUT: 3}


def _never_waits(request: tuple[Any, ...]) -> bool:
    """A would-be blocking request made with ``block=False`` (e.g. ``put_nowait``)."""
    at = _BLOCK_FLAG_AT.get(request[0])
    return at is not None and len(request) > at and request[at] is False


# Every kind a name can be opened as: served ones and the shared-memory fast path.
_KINDS: dict[str, type[Resource]] = {**RESOURCE_TYPES, **SHM_RESOURCE_TYPES}

_ids = itertools.count(1)


class Session:
    """One client connection (one thread of one client process)."""

    __slots__ = (
        "attached",
        "ended",
        "held",
        "host",
        "id",
        "ops",
        "parked",
        "pid",
        "resume",
        "since",
        "stopping",
        "thread",
        "wire",
    )

    def __init__(
        self,
        wire: FramedSocket,
        pid: int,
        host: str,
        thread: str,
        resume: Callable[[Session], None],
        stopping: threading.Event,
    ) -> None:
        self.id = next(_ids)
        self.wire = wire
        self.pid = pid
        self.host = host
        self.thread = thread
        self.since = time.time()
        self.ops = 0
        self.held: set[Resource] = set()
        self.attached = False  # watched by the reactor (else a worker owns it)
        self.ended = False  # being dropped: detached, but no worker's to hand back
        # (resource, waiter, its timeout's timer or None) while parked in the reactor
        self.parked: tuple[Any, Any, Timer | None] | None = None
        self.resume = resume  # hands the session back to the reactor
        self.stopping = stopping  # the server's stop_event

    def alive(self) -> bool:
        """False once the client has gone: its socket reads as EOF.

        While a request is being served the client sends nothing more, so a
        readable socket can only mean the peer closed it.
        """
        return not self.wire.peer_closed()

    def describe(self) -> dict[str, Any]:
        return {"client": self.id, "pid": self.pid, "host": self.host, "thread": self.thread}

    def hold(self, resource: Resource) -> None:
        self.held.add(resource)

    def unpark(self) -> tuple[Any, Any, Timer | None] | None:
        """No longer parked (answered, or gone); cancels the timeout.  Returns what it was."""
        parked, self.parked = self.parked, None
        if parked is not None and parked[2] is not None:
            parked[2].cancel()
        return parked

    def answer(self, reply: tuple[int, Any]) -> bool:
        """Send a small reply from whatever thread decided it; False if the client is gone."""
        try:
            self.wire.send_bytes(pickle.dumps(reply, P.PICKLE_PROTOCOL))
        except OSError:
            return False
        self.ops += 1
        return True

    def reply_early(self, result: Any) -> bool:
        """Answer the acquire this session waits in, from the granting thread.

        A session parked in the reactor stays watched there; one whose wait
        runs on a worker goes back to the reactor now, so its client's next
        request is served without waiting for that worker to wake.
        """
        self.unpark()  # before the reply: the client's next request may follow at once
        # A stopping server grants nothing (see ShareServer._end_session): a lock
        # freed now, by a release or a lease running out, must not tell a waiter
        # True from a server that is going away.  Sent no reply, the waiter sees
        # its connection end at close() (ServerUnavailableError).
        if not self.stopping.is_set() and not self.answer((P.OK, result)):
            return False  # the client is gone: its EOF ends the session
        # A worker's wait (see _server): hand the session back.  Read ``attached``
        # first: ``_drop`` sets ``ended`` before it detaches a session.
        if not self.attached and not self.ended:
            self.resume(self)
        return True


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
        self.reactor = Reactor(self._on_ready, self._drop)
        self.workers = Workers()
        self._manager_ops: dict[int, Callable[..., Any]] = {
            P.OPEN: self._op_open,
            P.DELETE: self._op_delete,
            P.STATUS: self._op_status,
            P.NAMES: self._op_names,
            P.PIPELINE: self._op_pipeline,
            P.PING: self._op_ping,
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
                resource.close()
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
            if isinstance(request, tuple) and request[:1] == (P.HELLO,) and len(request) == 5:
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
        session = Session(wire, int(pid), str(host), str(thread), self._attach, self.stop_event)
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
        if not self.reactor.attach(session.wire.fileno(), session):
            session.attached = False  # the server has stopped
            self._drop(session)

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
        """Reactor thread: serve the request that has arrived on ``session``."""
        try:
            data = session.wire.recv_ready(MAX_MESSAGE)
        except EOFError:
            self._drop(session)
            return
        except OSError as exc:  # a reset, or a frame that breaks the protocol
            logger.info("dropping client %s: %s", session.id, exc)
            self._drop(session)
            return
        if isinstance(data, int) and not data:  # nothing had arrived after all
            return
        if session.parked is not None:  # a waiting client sends nothing: it is broken
            logger.info("dropping client %s: it sent a request while waiting", session.id)
            self._drop(session)
            return
        if isinstance(data, int):  # more than one read's worth: a worker reads the rest
            self._detach(session)
            self.workers.submit(self._on_worker, self._serve_on_worker, session, data)
            return
        request: Any = None
        try:
            request = pickle.loads(data)
            reply = self._outcome(session, request, self.dispatch, session, request)
        except Parked as parked:
            self._park(session, parked)
            return
        except MustWait:
            self._detach(session)
            self.workers.submit(self._on_worker, self._finish_on_worker, session, request)
            return
        except BaseException as exc:  # from unpickling, even SystemExit: answer, go on
            reply = (P.ERROR, self._error_reply(exc, request))
        if reply is None:
            return
        session.ops += 1
        payload = self._dump_reply(reply, request)
        try:
            sent = session.wire.send_ready(payload)
        except OSError:
            self._undeliverable(request, reply)
            self._drop(session)
            return
        if sent == len(payload) + 4:
            if not session.attached:
                self._attach(session)
            return
        if session.attached:
            self._detach(session)
        self.workers.submit(
            self._on_worker, self._send_on_worker, session, request, reply, payload, sent
        )

    def _outcome(
        self, session: Session, request: Any, call: Callable[..., Any], *args: Any
    ) -> tuple[int, Any] | None:
        """The reply to ``request``, or None if none is due (the session is then dealt with)."""
        try:
            return (P.OK, call(*args))
        except (MustWait, Parked):
            raise
        except SessionGone:
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

    def _serve_on_worker(self, session: Session, have: int) -> None:
        try:
            data = session.wire.recv_view(MAX_MESSAGE, None, have)
        except (EOFError, OSError) as exc:
            logger.info("dropping client %s: %s", session.id, exc)
            self._drop(session)
            return
        request: Any = None
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
                session.parked = (resource, waiter, timer)
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

        Reads ``parked`` once: a grant on another thread may clear it meanwhile.
        """
        parked = session.parked
        return parked[0] if parked is not None and parked[1] is waiter else None

    def _parked_tick(self, session: Session, waiter: Any) -> None:
        """A leased lock: take it back from a holder whose lease ran out."""
        resource = self._parked_in(session, waiter)
        if resource is not None:
            resource.tick()
            if self._parked_in(session, waiter) is not None:
                self._schedule_tick(session, waiter)

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
        if reply is not None:
            session.ops += 1
            self._send_on_worker(session, request, reply, self._dump_reply(reply, request), 0)

    def _send_on_worker(
        self, session: Session, request: Any, reply: tuple[int, Any], payload: bytes, sent: int
    ) -> None:
        try:
            session.wire.send_rest(payload, sent)
        except OSError:
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
            if request[0] == P.QUEUE_GET:
                resource.unget([reply[1]])
            elif request[0] == P.QUEUE_GET_MANY:
                resource.unget(reply[1])

    def _end_session(self, session: Session) -> None:
        # A stopping server releases nothing: a lock freed while it winds down
        # would be granted to a waiter whose acquire() then returns True from
        # a server that is gone.  Its clients get ServerUnavailableError instead.
        if not self.stop_event.is_set():
            # Whoever ends a session owns it: it waits in no list but the
            # FIFO it may be parked in (in the reactor).
            parked = session.unpark()
            if parked is not None:
                parked[0].session_closed(session)  # leave the FIFO
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
            cls, method = entry
            name = request[1]
            resource = self.resources.get(name)
            if type(resource) is not cls:
                raise self._wrong_resource(name, cls.kind, resource)
            return getattr(resource, method)(session, *request[2:])
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
        cls = _KINDS.get(kind)
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
        resource.close()
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
            if request[0] in _BLOCKING_OPS and not _never_waits(request):
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
                cls, method = _RESOURCE_OPS[request[0]]
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
