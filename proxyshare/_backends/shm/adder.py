"""``mgr.adder(name)``: a counter that any number of processes add to without a lock.

The server creates and names the file once; everything after that runs in
the calling process (the file's format and why it is exact: ``adder_layout``)::

    any process on the same host                  the adder's file
    ────────────────────────────                  ─────────────────────────────────
    adder.add(n)                                  slot 0  value   ◀─ a thread of P1
      └─ this thread's slot, claimed once         slot 1  value   ◀─ a thread of P2
         (an F_OFD_SETLK lock on its bytes,       slot 2  value      (owner died: free,
          freed by the kernel when we die)                             its counts kept)
         value += n   one 8-byte store, no lock
    adder.get()    base + Σ values (no lock)
    adder.reset()  under the file's ADMIN lock: base = -Σ values read; returns the total

Against a served or shared-memory ``Counter``: ``add()`` returns nothing
(``increment()`` returns the new value, atomically, which needs a lock or a
round trip), and ``get()`` sums the slots, so it costs more than ``add()``.

The proxy is an ``Adder`` over the shared-memory backend's ``ShmTransport``:
it pickles as the file's path, token and host, so it is a plain ``submit()``
argument under every start method; another host, or a file that is gone,
raises ``ProxyShareError`` at the first operation.  ``add`` is the hot path:
it skips the transport's dispatch, which would make it 2.5 to 3 times as
slow (``_hot_path_note``); anything unusual (the first add of a thread,
another type, an overflow, a deleted adder) takes the same path as ``call``.

Each thread of each process owns a slot from its first add until it ends.
After ``fork`` a child claims its own (``client._after_fork`` forgets the
parent's descriptors and slots).  An add that would take the thread's slot
out of 64 bits raises ``OverflowError`` and changes nothing; slots are
reused with their values, so that limit is per slot, over its life.
"""

from __future__ import annotations

import os
from typing import Any, cast

from proxyshare import _protocol as P
from proxyshare import _rules as rules
from proxyshare._backends.shm import adder_layout as A
from proxyshare._backends.shm.client import ShmTransport, _Handle, _implements, _open
from proxyshare._backends.shm.layout import CLOSED, OFF_CLOSED, PID
from proxyshare._client import ServerRef
from proxyshare._errors import ProxyShareError
from proxyshare._proxies import _Proxy

__all__ = ["Adder", "AdderHandle", "open_adder"]

_hot_path_note = """
Per add(1) on the shared 2-core VM (thread CPU time, medians of 9 runs of 200,000 in a
loop, load average 12-15 at the time; 0.11 µs of each is the loop and an empty call):
    Adder.add(), the common case inline          0.52 µs
    _adder_add(handle, 1), no dispatch            0.82 µs
    ShmTransport.call(ADDER_ADD, name, 1)         1.34-1.52 µs
"""


class AdderHandle(_Handle):
    """This process's view of an adder file, plus each thread's slot (``tls.cell``).

    ``tls.cell`` is a 2-item int64 view of the thread's slot: ``[value, gone]``.
    """

    def reopen(self) -> str:
        return f"mgr.adder({self.name!r})"

    def served_hint(self) -> str:
        return (
            "use a served counter instead (under another name), whose increment(n) works "
            "across hosts: mgr.counter(name)"
        )

    def attach(self) -> Any:
        if not A.available():
            raise ProxyShareError(
                f"{self.what()} needs open-file-description locks (F_OFD_SETLK, Linux "
                f"3.15 or later), which this platform lacks; {self.served_hint()}"
            )
        mm = super().attach()
        if not A.is_adder(mm):
            self.mm = None
            mm.close()
            raise ProxyShareError(f"{self.path} is not a proxyshare adder file")
        return mm

    def closed(self) -> bool:
        return bool(CLOSED.unpack_from(self.mapped(), OFF_CLOSED)[0])

    def cell(self) -> memoryview:
        """This thread's slot, claimed on first use."""
        try:
            cell: memoryview = self.tls.cell
            return cell
        except AttributeError:
            return self.claim()

    def claim(self) -> memoryview:
        """Own a free slot (one that no live thread holds) for this thread, for its life."""
        fd = self.thread_fd()  # maps the file too
        mm = self.mapped()
        if self.closed():
            raise self.gone()
        index = self._take(fd, mm)
        at = A.slot_at(index)
        A.fence()  # our lock, then the deletion mark (the server: the mark, then the slots)
        if self.closed():
            A.unlock(fd, at, A.SLOT)
            raise self.gone()
        PID.pack_into(mm, at + A.SLOT_PID, os.getpid())
        cell = memoryview(mm)[at : at + 16].cast("q")
        self.tls.cell = cell
        return cell

    def _take(self, fd: int, mm: Any) -> int:
        for index in range(A.used(mm)):
            if A.try_lock(fd, A.slot_at(index)):
                return index
        A.lock(fd, A.ADMIN)  # every slot is held: add one, alone
        try:
            used = A.used(mm)
            for index in range(used):  # one may have been freed meanwhile
                if A.try_lock(fd, A.slot_at(index)):
                    return index
            if used >= A.capacity(mm):
                raise self.full(used)
            if not A.try_lock(fd, A.slot_at(used)):
                raise ProxyShareError(f"{self.path}: an unused slot is locked; the file is damaged")
            A.set_used(mm, used + 1)
            return used
        finally:
            A.unlock(fd, A.ADMIN)

    def full(self, slots: int) -> ProxyShareError:
        return ProxyShareError(
            f"{self.what()} has no free slot: all {slots} are held by live threads (each "
            "thread that adds holds one until it ends, and threads of ended processes free "
            "theirs); add from fewer threads at a time, or use a served counter"
        )

    def overflow(self, value: int, n: int) -> OverflowError:
        return OverflowError(
            f"{self.what()}: this thread's slot would overflow: {value} "
            f"{'+' if n >= 0 else '-'} {abs(n)} does not fit in 64 bits; the value is "
            "unchanged (a slot keeps the sum of everything ever added through it; use a "
            "served counter, mgr.counter(name), for unbounded sums)"
        )


# -- the operations (ShmTransport.call runs them; Adder.add inlines the common case) ----------


@_implements(P.ADDER_ADD)
def _adder_add(h: AdderHandle, n: int = 1) -> None:
    # The 64-bit rule applies to the slot's new value, whichever path an add takes.
    n = rules.check_int(n, "add(n)")
    cell = h.cell()
    if cell[1]:
        raise h.gone()
    value: int = cell[0]
    if not A.VALUE_MIN <= value + n <= A.VALUE_MAX:
        raise h.overflow(value, n)
    cell[0] = value + n


@_implements(P.ADDER_GET)
def _adder_get(h: AdderHandle) -> int:
    if h.closed():
        raise h.gone()
    return A.total(h.mapped())


@_implements(P.ADDER_RESET)
def _adder_reset(h: AdderHandle) -> int:
    fd = h.thread_fd()
    A.lock(fd, A.ADMIN)
    try:
        if h.closed():
            raise h.gone()
        return A.reset(h.mapped())
    finally:
        A.unlock(fd, A.ADMIN)


class Adder(_Proxy):
    """A sum that many processes and threads add to, each in its own slot, with no lock.

    >>> progress = mgr.adder("items")     # doctest: +SKIP
    >>> progress.add(10)                  # in any worker: returns nothing
    >>> progress.value                    # the total, from anywhere on this host
    10

    Same host only.  Use a ``Counter`` when the caller needs the new value
    back (``increment()`` returns it atomically); ``add()`` does not.
    """

    __slots__ = ("_h",)
    kind = "adder"
    _transport: ShmTransport

    def __init__(self, transport: ShmTransport, name: str) -> None:
        super().__init__(transport, name)
        self._h = cast(AdderHandle, transport.handle)

    @property
    def path(self) -> str:
        """The shared-memory file (on the server's host)."""
        return self._h.path

    def add(self, n: int = 1) -> None:
        """Add ``n`` (an int, negative allowed) to this thread's slot; returns nothing."""
        try:
            cell = self._h.tls.cell
        except AttributeError:  # this thread's first add: claim a slot
            return _adder_add(self._h, n)
        if type(n) is int and not cell[1]:
            try:
                cell[0] += n  # one store into our own slot; nobody else writes it
                return None
            except ValueError:  # out of 64 bits: nothing was stored, say so below
                pass
        return _adder_add(self._h, n)

    def get(self) -> int:
        """The total: every slot summed, less what ``reset()`` took."""
        return self._transport.call(P.ADDER_GET, self._name)

    @property
    def value(self) -> int:
        """The total (``get()``)."""
        return self.get()

    def reset(self) -> int:
        """Set the total to 0 and return what it was; no concurrent ``add`` is lost."""
        return self._transport.call(P.ADDER_RESET, self._name)


def open_adder(server: ServerRef, name: str, *, slots: int | None = None) -> Adder:
    """Get or create the adder ``name`` and map it here.

    ``slots`` (tests) sizes a new adder's file; the default is ``adder_layout.CAPACITY``.
    """
    if not A.available():
        raise ProxyShareError(
            "mgr.adder() needs open-file-description locks (F_OFD_SETLK, Linux 3.15 or "
            "later), which this platform lacks: use a served counter, mgr.counter(name)"
        )
    options: dict[str, Any] = {} if slots is None else {"slots": slots}
    return Adder(_open(server, name, "adder", options, "adder", AdderHandle), name)
