"""The state dir's files, byte by byte: frames, the torn-tail rule, snapshots, permissions.

No server here: each test writes files with the same writer the server uses
(or by hand), damages them the way a crash or a disk would, and reads them
back with the recovery code.
"""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from proxyshare._server.state import StateDamaged, StateDirRefused, StateInUse
from proxyshare._server.state import log as L
from proxyshare._server.state.files import open_state_dir
from proxyshare._server.state.snapshot import read_snapshot, write_snapshot

pytestmark = [pytest.mark.timeout(30), pytest.mark.matrix]  # differs by Python: see noxfile.py

RECORDS = [(1, 11, "hits", n) for n in range(1, 6)]


def _write_log(path: Path, records: list[tuple[object, ...]] = RECORDS) -> list[int]:
    """A log with ``records``; returns the offset of each frame (and the end)."""
    writer = L.LogWriter(path, 1)
    offsets = [writer.pos]
    for record in records:
        offsets.append(writer.append(pickle.dumps(record)))
    writer.close()
    return offsets


def _read(path: Path, last: bool = True) -> L.LogContents:
    return L.read_log(path, path.read_bytes(), 1, last)


def _patch(path: Path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(data)] = data
    path.write_bytes(bytes(raw))


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, list[int]]:
    path = tmp_path / "log.000000001"
    return path, _write_log(path)


def test_a_log_reads_back_every_record_in_order(log: tuple[Path, list[int]]) -> None:
    path, offsets = log
    contents = _read(path)
    assert [record for _, record in contents.records] == RECORDS
    assert [offset for offset, _ in contents.records] == offsets[:-1]
    assert contents.torn is None and contents.end == offsets[-1]


def test_a_new_log_is_preallocated_and_private(log: tuple[Path, list[int]]) -> None:
    path, _ = log
    info = path.stat()
    assert info.st_size == L.CHUNK and stat.S_IMODE(info.st_mode) == 0o600


def test_the_log_grows_when_a_record_does_not_fit(tmp_path: Path) -> None:
    big = [(1, 31, "d", "k", "x" * (L.CHUNK + 10)), (1, 11, "hits", 1)]
    path = tmp_path / "log.000000001"
    _write_log(path, big)
    assert path.stat().st_size > L.CHUNK
    assert [record for _, record in _read(path).records] == big


@pytest.mark.parametrize(
    "cut",
    [1, 3, 4, 7, 8, 9, -1],
    ids=lambda cut: f"{cut}-bytes-written" if cut > 0 else "all-but-the-last-byte",
)
def test_a_last_frame_cut_short_is_dropped_as_torn(log: tuple[Path, list[int]], cut: int) -> None:
    path, offsets = log
    start, end = offsets[-2], offsets[-1]
    written = cut if cut > 0 else end - start - 1
    _patch(path, start + written, bytes(end - start - written))  # the rest was never written
    contents = _read(path)
    assert [record for _, record in contents.records] == RECORDS[:-1]
    assert contents.torn is not None and contents.torn[0] == start
    assert contents.torn[1] <= written


def test_a_torn_frame_in_a_log_that_is_not_the_last_is_damage(
    log: tuple[Path, list[int]],
) -> None:
    path, offsets = log
    _patch(path, offsets[-2] + 10, bytes(offsets[-1] - offsets[-2] - 10))
    with pytest.raises(StateDamaged, match=f"at offset {offsets[-2]}: a record fails its checksum"):
        _read(path, last=False)


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        ("flip a payload byte", "fails its checksum"),
        ("flip a checksum byte", "fails its checksum"),
        ("zero a whole frame", "zeros where a record is"),
        ("length past the end", "runs past the file's end"),
    ],
)
def test_damage_before_the_last_frame_refuses_naming_the_file_and_offset(
    log: tuple[Path, list[int]], damage: str, what: str
) -> None:
    path, offsets = log
    at = offsets[1]  # the second frame: good frames follow it
    raw = path.read_bytes()
    if damage == "flip a payload byte":
        _patch(path, at + 12, bytes([raw[at + 12] ^ 0x01]))
    elif damage == "flip a checksum byte":
        _patch(path, at + 5, bytes([raw[at + 5] ^ 0x80]))
    elif damage == "zero a whole frame":
        _patch(path, at, bytes(offsets[2] - at))
    else:
        _patch(path, at, (1 << 31).to_bytes(4, "little"))
    with pytest.raises(StateDamaged) as raised:
        _read(path)
    message = str(raised.value)
    assert f"{path} at offset {at}: a record {what}" in message or what in message
    assert f"truncate -s {at} {path}" in message and "\n" not in message


def test_a_frame_whose_checksum_matches_but_does_not_unpickle_is_damage(tmp_path: Path) -> None:
    path = tmp_path / "log.000000001"
    writer = L.LogWriter(path, 1)
    writer.append(b"not a pickle")  # checksummed as written: no crash could make this
    writer.close()
    with pytest.raises(StateDamaged, match="a record cannot be read"):
        _read(path)


@pytest.mark.parametrize(
    ("header", "what"),
    [
        (b"NOTALOG!", "wrong magic number"),
        (L.HEADER.pack(L.LOG_MAGIC, L.FORMAT_VERSION + 1, 1), "format version 2"),
        (L.HEADER.pack(L.LOG_MAGIC, L.FORMAT_VERSION, 7), "says generation 7"),
    ],
)
def test_a_log_with_a_foreign_header_is_refused(
    log: tuple[Path, list[int]], header: bytes, what: str
) -> None:
    path, _ = log
    _patch(path, 0, header)
    with pytest.raises(StateDamaged, match=what):
        _read(path)


def test_a_snapshot_round_trips_and_is_written_privately(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.000000003"
    entries = [("hits", "counter", {}, 41), ("jobs", "queue", {"maxsize": 0}, {"items": [1]})]
    size = write_snapshot(path, 3, entries)  # type: ignore[arg-type]
    assert path.stat().st_size == size and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_snapshot(path, path.read_bytes(), 3) == entries
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("where", ["header", "payload", "cut short", "trailing bytes"])
def test_a_damaged_snapshot_is_refused(tmp_path: Path, where: str) -> None:
    path = tmp_path / "snapshot.000000001"
    write_snapshot(path, 1, [("hits", "counter", {}, 41)])
    raw = bytearray(path.read_bytes())
    if where == "header":
        raw[0] ^= 0xFF
    elif where == "payload":
        raw[-3] ^= 0xFF
    elif where == "cut short":
        raw = raw[:-5]
    else:
        raw += b"\0"
    path.write_bytes(bytes(raw))
    with pytest.raises(StateDamaged, match=str(path)):
        read_snapshot(path, path.read_bytes(), 1)


# -- the directory ---------------------------------------------------------------------


def test_a_missing_state_dir_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "state"
    state = open_state_dir(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert stat.S_IMODE((path / "lock").stat().st_mode) == 0o600
    finally:
        state.close()


def test_a_state_dir_others_can_read_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    with pytest.raises(StateDirRefused, match=f"mode 0750.*chmod 700 {tmp_path}"):
        open_state_dir(tmp_path)


def test_a_state_dir_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path.chmod(0o700)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)
    with pytest.raises(StateDirRefused, match=f"belongs to another user \\(uid {uid}\\)"):
        open_state_dir(tmp_path)


@pytest.mark.parametrize("problem", ["mode 0644", "another user", "a symlink"])
def test_a_state_file_that_is_not_private_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    tmp_path.chmod(0o700)
    _write_log(tmp_path / "log.000000001")
    target = tmp_path / "log.000000001"
    if problem == "mode 0644":
        target.chmod(0o644)
    elif problem == "a symlink":
        target.rename(tmp_path / "elsewhere")
        target.symlink_to(tmp_path / "elsewhere")
    state = open_state_dir(tmp_path)
    try:
        if problem == "another user":
            uid = os.getuid()
            monkeypatch.setattr(os, "getuid", lambda: uid + 1)
        with pytest.raises(StateDirRefused, match=str(target)):
            state.listing()
    finally:
        state.close()


def test_a_second_server_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    first = open_state_dir(tmp_path)
    try:
        first.claim()
        with pytest.raises(StateInUse, match=f"pid {os.getpid()}"):
            open_state_dir(tmp_path)
    finally:
        first.close()
    open_state_dir(tmp_path).close()  # free again once the first lets go


# -- the records' meaning is part of the format ------------------------------------------

# What a log record's code means in format version 1.  A log written by one version
# is replayed by a later one: renumbering a logged operation (or changing its
# arguments) silently changes what old logs mean.  If this test fails, bump
# FORMAT_VERSION and teach recovery to read the old one.
LOGGED_IN_FORMAT_1 = {
    1: ("manager", "open", ("kind", "options")),
    2: ("manager", "delete", ()),
    5: ("manager", "pipeline", ("requests",)),
    11: ("counter", "add", ("n",)),
    12: ("counter", "sub", ("n",)),
    13: ("counter", "set", ("value",)),
    14: ("counter", "compare_and_set", ("expected", "new")),
    15: ("counter", "get_and_set", ("new",)),
    31: ("dict", "set", ("key", "value")),
    32: ("dict", "delete", ("key",)),
    36: ("dict", "pop", ("key", "has_default", "default")),
    37: ("dict", "setdefault", ("key", "default")),
    38: ("dict", "update", ("items",)),
    39: ("dict", "clear", ()),
    40: ("dict", "increment", ("key", "n", "default")),
    41: ("dict", "compare_and_set", ("key", "expected", "new")),
    50: ("queue", "put", ("item", "block", "timeout")),
    51: ("queue", "get", ("block", "timeout")),
    52: ("queue", "put_many", ("items", "block", "timeout")),
    53: ("queue", "get_many", ("max_items", "timeout")),
    55: ("queue", "close", ()),
    70: ("event", "set", ()),
    71: ("event", "clear", ()),
}


def test_the_logged_operations_are_those_format_1_knows() -> None:
    from proxyshare import _protocol as P
    from proxyshare._server.state.replay import SERVER_METHODS

    logged = {op.code: (op.kind, op.method, op.args) for op in P.OPS.values() if op.mutates}
    logged[P.PIPELINE.code] = (P.PIPELINE.kind, P.PIPELINE.method, P.PIPELINE.args)
    assert L.FORMAT_VERSION == 1
    assert logged == LOGGED_IN_FORMAT_1
    assert sorted(SERVER_METHODS) == ["ack", "requeue"]
